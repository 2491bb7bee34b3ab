#!/usr/bin/env bash
# Checks that every tracked C++ file is as clang-format (Debian 12: clang-format 14) writes it with
# the repo's .clang-format; lists the ones that are not and how to fix them. ctest FormatTest runs
# it; exit 77 (skipped) where clang-format or git is missing.
#   bash scripts/check_format.sh          check
#   bash scripts/check_format.sh --fix    rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
FORMAT=${CLANG_FORMAT:-$(command -v clang-format-14 || command -v clang-format || true)}
if [ -z "$FORMAT" ] || ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "check_format.sh: skipped: needs clang-format (apt install clang-format) and a git checkout"
  exit 77
fi
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cc' '*.hpp')
if [ "${1:-}" = "--fix" ]; then
  "$FORMAT" -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  "$FORMAT" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format.sh: ${#bad[@]} of ${#files[@]} files are not clang-formatted:"
  printf '  %s\n' "${bad[@]}"
  echo "fix: bash scripts/check_format.sh --fix (or git clang-format for staged changes);"
  echo "a table that reads better hand-aligned goes between // clang-format off and // clang-format on"
  exit 1
fi
echo "check_format.sh: all ${#files[@]} C++ files are clang-formatted"
