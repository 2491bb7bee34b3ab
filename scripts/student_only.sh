#!/usr/bin/env bash
# An RKD+FMAM (or NKD+FMAM) model's student alone, as a model of graphs/rkd.json (or nkd.json):
# the feature mappings' tensors dropped, the graph renamed. Stage 2 trains the student exactly
# as the baseline's stage 2 does, so its student alone is the baseline of the same seed, and one
# training gives a paired comparison (docs/RESULTS.md, "Bottle at the paper's schedule").
#
#   bash scripts/student_only.sh FMAM_MODEL OUT_MODEL [BASELINE_GRAPH (default graphs/rkd.json)]
#
# Needs Debian's /usr/bin/python3 with torch (python3-torch), nothing else.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
BASE=${3:-$(dirname "$0")/../graphs/rkd.json}
/usr/bin/python3 - "$1" "$2" "$BASE" <<'EOF'
import os, pickle, sys, types, torch
src, dst, rkd = sys.argv[1:4]
m = torch.load(src, map_location='cpu')
m['tensors'] = {k: v for k, v in m['tensors'].items() if not k.startswith('fm/')}
m['fingerprints'] = {k: v for k, v in m['fingerprints'].items() if k != 'fm'}
m['graph_name'], m['graph_json'] = os.path.splitext(os.path.basename(rkd))[0], open(rkd).read()
m.pop('tensors_sha256', None)  # the checksum of the tensors dropped above
for k in ('threshold', 'map_lo', 'map_hi'):  # calibrated on the mapped map, another scale
    if k in m: m[k] = None
class P(pickle._Pickler):  # libtorch's unpickler reads SETITEMS only
    def _batch_setitems(self, items):
        items = list(items)
        if items:
            self.write(pickle.MARK)
            for k, v in items:
                self.save(k); self.save(v)
            self.write(pickle.SETITEMS)
torch.save(m, dst, pickle_module=types.SimpleNamespace(__name__='p', Pickler=P))
EOF
