#!/usr/bin/env python3
"""Lists the C++ functions longer than a limit (issue #17: "no function over 80 lines in
framework/ and training/"), so that the rule can be kept by a test (ctest FunctionLengthTest).

  python3 scripts/function_lengths.py [--max 80] PATH...

PATH: files or folders (searched recursively for .cpp/.cc/.cxx/.h/.hh/.hpp). Prints
`path:line name length` for each function body longer than --max lines (length: from the first
line of its definition, template<> included, to its closing brace) and exits 1 if there is any,
0 if none.

A heuristic, not a parser: comments, string and character literals (raw strings included) and
preprocessor lines are blanked first; then a `{` at namespace or class scope opens a function if
the text since the last `;`, `{` or `}` there has a parameter list and no `=` before it (so
`auto f = [] {...}` and `int a[] = {...}` are not functions); braces in a constructor's member
initializers belong to its head. Everything inside a function (lambdas, local classes, blocks)
counts as part of it.
"""
import argparse
import os
import re
import sys

EXTENSIONS = (".cpp", ".cc", ".cxx", ".h", ".hh", ".hpp")
RAW_PREFIXES = ("R", "u8R", "uR", "UR", "LR")


def blank(text):
    """The text with comments, literals' contents and preprocessor lines turned into spaces
    (newlines kept, so that offsets and line numbers stay those of the file)."""
    out = list(text)
    n = len(text)
    i = 0
    line_start = True  # only whitespace so far on this line
    word_start = -1  # where the identifier or number before i began, -1 if none

    def wipe(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if c == "\n":
            line_start, word_start = True, -1
            i += 1
            continue
        if c in " \t\r\f\v":
            word_start = -1
            i += 1
            continue
        if line_start and c == "#":  # a preprocessor line, with its continuations
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                if text.startswith("/*", j):
                    end = text.find("*/", j + 2)
                    j = n if end < 0 else end + 2
                    continue
                j += 1
            wipe(i, j)
            i = j
            continue
        line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            wipe(i, j)
            i = j
            continue
        if c == '"':
            word = text[word_start:i] if word_start >= 0 else ""
            if word in RAW_PREFIXES:  # R"delim( ... )delim"
                open_paren = text.find("(", i + 1)
                delim = text[i + 1:open_paren] if open_paren >= 0 else ""
                end = text.find(")" + delim + '"', open_paren + 1) if open_paren >= 0 else -1
                j = n if end < 0 else end + len(delim) + 1
                wipe(i + 1, j)
                i, word_start = j + 1, -1
                continue
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            wipe(i + 1, j)
            i, word_start = j + 1, -1
            continue
        if c == "'":
            if word_start >= 0 and text[word_start].isdigit():  # a digit separator: 1'000'000
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != "'" and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            wipe(i + 1, j)
            i, word_start = j + 1, -1
            continue
        if c.isalnum() or c == "_":
            if word_start < 0:
                word_start = i
        elif not (c == "." and word_start >= 0 and text[word_start].isdigit()):
            word_start = -1
        i += 1
    return "".join(out)


def top_level_paren(head):
    """Index of the first `(` in head (a function head's parameter list), or -1."""
    return head.find("(")


def matching(head, at, open_c="(", close_c=")"):
    depth = 0
    for k in range(at, len(head)):
        if head[k] == open_c:
            depth += 1
        elif head[k] == close_c:
            depth -= 1
            if depth == 0:
                return k
    return -1


def strip_prefixes(head):
    """head without access labels, attributes and a leading template<...>."""
    head = re.sub(r"^\s*(public|private|protected)\s*:(?!:)", "", head).strip()
    head = re.sub(r"\[\[.*?\]\]", " ", head).strip()
    while head.startswith("template"):
        lt = head.find("<")
        if lt < 0:
            break
        depth = 0
        for k in range(lt, len(head)):
            if head[k] == "<":
                depth += 1
            elif head[k] == ">":
                depth -= 1
                if depth == 0:
                    head = head[k + 1:].strip()
                    break
        else:
            break
    return head


QUALIFIERS = re.compile(r"^(\s*(const|volatile|noexcept|override|final|mutable|&&|&|throw\s*\(\s*\)|noexcept\s*\([^)]*\)))*\s*$")


def classify(head):
    """What a `{` at namespace or class scope opens, given the text since the last boundary:
    ('namespace'|'class'|'other'|'init', None) or ('function', name)."""
    h = strip_prefixes(head)
    if re.match(r"^(inline\s+)?namespace\b", h) or re.match(r'^extern\s*"', h):
        return "namespace", None
    if re.match(r"^(typedef\s+)?enum\b", h):
        return "other", None
    if h.count("(") > h.count(")"):  # inside an expression (a lambda in a member initializer)
        return "init", None
    paren = top_level_paren(h)
    if re.match(r"^(typedef\s+)?(class|struct|union)\b", h):
        last = h.rfind(")")
        if paren < 0 or not QUALIFIERS.match(h[last + 1:]):
            return "class", None
    if paren < 0 or "=" in re.sub(r"operator\s*[^\s(]*", "", h[:paren]):
        return "other", None
    close = matching(h, paren)
    if close < 0:
        return "other", None
    rest = h[close + 1:]
    # A constructor's initializer list: `{` after an identifier there is a member's initializer.
    if re.match(r"^[\w\s&]*:(?!:)", rest) and re.search(r"[\w>]\s*$", rest):
        return "init", None
    before = h[:paren].rstrip()
    m = re.search(r"(operator\s*(\(\s*\)|[^\s\w(]+|\s\w[\w\s:<>*&]*)|[\w:~]+(<[^()]*>)?)\s*$", before)
    name = re.sub(r"\s+", " ", m.group(1)).strip() if m else before.split()[-1] if before.split() else "?"
    if name.startswith("operator") and before.endswith("operator"):
        name = "operator()"  # `operator()(...)`: the first parenthesis pair is the name's
    if re.fullmatch(r"[A-Z][A-Z0-9_]+", name):  # a macro (TEST_F(Suite, Name)): its arguments name it
        name += re.sub(r"\s+", " ", h[paren:close + 1])
    return "function", name


def functions(text):
    """(line, name, length) of every function definition in text."""
    clean = blank(text)
    line_of = []
    line = 1
    for ch in clean:
        line_of.append(line)
        if ch == "\n":
            line += 1
    found = []
    stack = []  # ['namespace'|'class'|'function'|'other'|'init', start offset, name]
    head_start = None  # offset of the head's first character at namespace/class scope
    inner = 0  # depth of braces nested inside a function or other scope
    for i, ch in enumerate(clean):
        in_body = stack and stack[-1][0] in ("function", "other", "init")
        if in_body:
            if ch == "{":
                inner += 1
            elif ch == "}":
                if inner:
                    inner -= 1
                    continue
                kind, start, name = stack.pop()
                if kind == "function":
                    found.append((line_of[start], name, line_of[i] - line_of[start] + 1))
                if kind != "init":
                    head_start = None
            continue
        if ch == "{":
            head = clean[head_start:i] if head_start is not None else ""
            kind, name = classify(head)
            stack.append([kind, head_start if head_start is not None else i, name])
            inner = 0
            if kind != "init":
                head_start = None
        elif ch == "}":
            if stack:
                stack.pop()
            head_start = None
        elif ch == ";":
            head_start = None
        elif not ch.isspace() and head_start is None:
            head_start = i
    return found


def sources(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if f.endswith(EXTENSIONS):
                        yield os.path.join(root, f)
        else:
            raise SystemExit(f"function_lengths: {p}: no such file or folder")


def main():
    ap = argparse.ArgumentParser(description="C++ functions longer than --max lines.")
    ap.add_argument("--max", type=int, default=80, help="most lines a function may have (default 80)")
    ap.add_argument("--all", action="store_true", help="print every function found, not only the long ones")
    ap.add_argument("paths", nargs="+", help="files or folders")
    args = ap.parse_args()
    long_ones = 0
    for path in sources(args.paths):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for line, name, length in functions(text):
            if length > args.max:
                long_ones += 1
            if length > args.max or args.all:
                print(f"{path}:{line} {name} {length}")
    return 1 if long_ones else 0


if __name__ == "__main__":
    sys.exit(main())
