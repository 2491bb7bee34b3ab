#!/usr/bin/env python3
"""One Markdown table row from an `fmam eval` results.json: image AUROC / pixel AUROC / AUPRO over
all test images, then pixel AUROC / AUPRO per defect type (scripts/compare_maps.sh,
scripts/per_level_maps.sh).

    python3 scripts/results_row.py NAME REPORT_DIR/results.json
"""
import json
import sys

name, path = sys.argv[1:3]
with open(path) as f:
    r = json.load(f)
a = r['all']
types = ', '.join('%s %.4f / %.4f' % (t, v['pixel_auroc'], v['aupro']) for t, v in sorted(r['per_type'].items()))
print('| %s | %.4f / %.4f / %.4f | %s |' % (name, a['image_auroc'], a['pixel_auroc'], a['aupro'], types))
