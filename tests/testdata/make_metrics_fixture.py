#!/usr/bin/python3
"""Generate tests/testdata/metrics_fixture.json, the reference values for tests/eval/metrics_test.cpp.

Run with Debian's interpreter (numpy, scipy 1.10, scikit-learn 1.2.1):
    /usr/bin/python3 tests/testdata/make_metrics_fixture.py

Image-level references come from scikit-learn (roc_auc_score, roc_curve, precision_recall_curve).
Pixel-level references: sklearn's roc_auc_score over all pixels, and AUPRO from a transcription of
the official MVTec AD evaluation code (mvtec_ad_evaluation: pro_curve_util.compute_pro and
generic_util.trapezoid, evaluate_experiment.py: au_pro = trapezoid(fprs, pros, x_max=0.3) / 0.3),
which labels the ground-truth regions with scipy.ndimage.label and a 3x3 ones structure
(8-connectivity). Everything is deterministic (fixed seeds); all scores are float32 values, written
exactly (repr of the float32 value as a double), so the C++ side sees the same numbers.
"""
import json
import os
from bisect import bisect

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve


# ---- transcription of the MVTec AD evaluation code ------------------------------------------------
def compute_pro(anomaly_maps, ground_truth_maps):
    """pro_curve_util.compute_pro (MVTec AD evaluation), unchanged in substance."""
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_change = np.zeros_like(gt_map, dtype=fp_changes.dtype)
        fp_change[ok_mask] = 1
        pro_change = np.zeros_like(gt_map, dtype=np.float64)
        for k in range(n_components):
            region_mask = labeled == (k + 1)
            pro_change[region_mask] = 1. / np.sum(region_mask)
        fp_changes[gt_ind, :, :] = fp_change
        pro_changes[gt_ind, :, :] = pro_change
    anomaly_scores_flat = np.array(anomaly_maps).ravel()
    fp_changes_flat = fp_changes.ravel()
    pro_changes_flat = pro_changes.ravel()
    sort_idxs = np.argsort(anomaly_scores_flat).astype(np.uint32)[::-1]
    np.take(anomaly_scores_flat, sort_idxs, out=anomaly_scores_flat)
    anomaly_scores_sorted = anomaly_scores_flat
    np.take(fp_changes_flat, sort_idxs, out=fp_changes_flat)
    fp_changes_sorted = fp_changes_flat
    np.take(pro_changes_flat, sort_idxs, out=pro_changes_flat)
    pro_changes_sorted = pro_changes_flat
    np.cumsum(fp_changes_sorted, out=fp_changes_sorted)
    fp_changes_sorted = fp_changes_sorted.astype(np.float32, copy=False)
    np.divide(fp_changes_sorted, num_ok_pixels, out=fp_changes_sorted)
    fprs = fp_changes_sorted
    np.cumsum(pro_changes_sorted, out=pro_changes_sorted)
    np.divide(pro_changes_sorted, num_gt_regions, out=pro_changes_sorted)
    pros = pro_changes_sorted
    keep_mask = np.append(np.diff(anomaly_scores_sorted) != 0, np.True_)
    fprs = fprs[keep_mask]
    pros = pros[keep_mask]
    np.clip(fprs, a_min=None, a_max=1., out=fprs)
    np.clip(pros, a_min=None, a_max=1., out=pros)
    zero = np.array([0.])
    one = np.array([1.])
    return np.concatenate((zero, fprs, one)), np.concatenate((zero, pros, one))


def trapezoid(x, y, x_max=None):
    """generic_util.trapezoid (MVTec AD evaluation)."""
    x = np.array(x)
    y = np.array(y)
    finite_mask = np.logical_and(np.isfinite(x), np.isfinite(y))
    x = x[finite_mask]
    y = y[finite_mask]
    correction = 0.
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x = x[mask]
        y = y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def aupro(maps, masks, limit):
    fprs, pros = compute_pro(maps, masks)
    return float(trapezoid(fprs, pros, x_max=limit) / limit)


# ---- image-level references -------------------------------------------------------------------------
def f1_max(labels, scores):
    """Best F1 over sklearn's precision_recall_curve; threshold = the first argmax (lowest threshold)."""
    p, r, t = precision_recall_curve(labels, scores)
    with np.errstate(divide='ignore', invalid='ignore'):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    i = int(np.argmax(f1[:-1]))  # the last point (P=1, R=0) has no threshold
    return float(f1[i]), float(t[i]), float(p[i]), float(r[i])


def fl(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def image_case(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.uint8)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    fpr_d, tpr_d, thr_d = roc_curve(labels, scores, drop_intermediate=True)
    f1, f1_thr, p, r = f1_max(labels, scores)
    return {
        "name": name,
        "scores": fl(scores),
        "labels": [int(v) for v in labels],
        "auroc": float(roc_auc_score(labels, scores)),
        "roc": {"fpr": fl(fpr), "tpr": fl(tpr), "thresholds": fl(thr)},
        "roc_drop_intermediate": {"fpr": fl(fpr_d), "tpr": fl(tpr_d), "thresholds": fl(thr_d)},
        "f1_max": f1, "f1_threshold": f1_thr, "f1_precision": p, "f1_recall": r,
    }


# ---- a tiny data set with pixel maps ----------------------------------------------------------------
def make_pixel_dataset(rng, h=20, w=24):
    """3 good images, 3 'scratch' and 2 'hole' images. Masks hold several components, among them two
    blobs that touch only diagonally (one region with 8-connectivity, two with 4)."""
    items = []
    def blob(mask, y0, x0, hh, ww):
        mask[y0:y0 + hh, x0:x0 + ww] = 255
    specs = [("good", []), ("good", []), ("good", []),
             ("scratch", [(2, 2, 3, 6), (10, 14, 2, 8)]),
             ("scratch", [(5, 5, 3, 3), (8, 8, 3, 3)]),          # diagonal touch: (7,7)-(8,8)
             ("scratch", [(15, 1, 4, 4)]),
             ("hole", [(1, 18, 5, 5), (12, 3, 6, 6), (17, 17, 2, 2)]),
             ("hole", [(6, 9, 7, 7)])]
    for i, (dtype, blobs) in enumerate(specs):
        mask = np.zeros((h, w), dtype=np.uint8)
        for b in blobs:
            blob(mask, *b)
        amap = rng.normal(0.0, 1.0, size=(h, w))
        amap[mask > 0] += rng.uniform(0.5, 2.5)  # separation differs per image
        if i == 1:
            amap[3:6, 3:6] += 2.0                 # a hot spot on a good image (false positives)
        amap = np.round(amap, 1).astype(np.float32)  # coarse rounding: many ties
        score = float(np.float32(amap.max()))
        items.append({"name": f"{dtype}_{i:03d}", "defect_type": dtype, "anomalous": int(dtype != "good"),
                      "score": score, "map": amap, "mask": mask})
    return items


def pixel_refs(items, limits=(0.3,)):
    maps = [it["map"] for it in items]
    masks = [it["mask"] for it in items]
    gt = np.concatenate([(m > 0).ravel() for m in masks]).astype(np.uint8)
    sc = np.concatenate([m.ravel() for m in maps])
    out = {"pixel_auroc": float(roc_auc_score(gt, sc))}
    for lim in limits:
        out[f"aupro_{lim}"] = aupro(maps, masks, lim)
    return out


def group_refs(items, subset):
    labels = [it["anomalous"] for it in subset]
    scores = np.asarray([it["score"] for it in subset], dtype=np.float32)
    f1, thr, _, _ = f1_max(labels, scores)
    ref = {"image_auroc": float(roc_auc_score(labels, scores)), "f1_max": f1, "f1_threshold": thr,
           "n_normal": int(sum(1 for v in labels if v == 0)), "n_anomalous": int(sum(labels))}
    ref.update(pixel_refs(subset))
    return ref


def main():
    rng = np.random.RandomState(20240607)
    cases = []
    # many ties: scores on a 0.1 grid
    n = 60
    cases.append(image_case("ties_grid", np.round(rng.uniform(0, 1, n), 1), rng.binomial(1, 0.4, n)))
    # continuous, no ties, labels correlated with scores
    n = 25
    lab = rng.binomial(1, 0.5, n)
    cases.append(image_case("continuous", rng.normal(0, 1, n) + 1.2 * lab, lab))
    # integer scores, heavy ties, imbalanced
    n = 40
    lab = np.zeros(n, dtype=np.uint8); lab[rng.choice(n, 3, replace=False)] = 1
    cases.append(image_case("imbalanced_int", rng.randint(0, 5, n) + 2 * lab, lab))
    # ties straddling the classes
    cases.append(image_case("hand_ties", [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.1], [0, 0, 1, 1, 1, 0, 1, 0]))

    items = make_pixel_dataset(rng)
    all_ref = group_refs(items, items)
    all_ref.update(pixel_refs(items, limits=(0.05, 0.3, 1.0)))
    fprs, pros = compute_pro([it["map"] for it in items], [it["mask"] for it in items])
    per_type = {"all": all_ref}
    for dtype in ("scratch", "hole"):
        subset = [it for it in items if it["defect_type"] in (dtype, "good")]
        per_type[dtype] = group_refs(items, subset)
    # 4-connectivity would count more regions: record both counts
    n8 = sum(label(it["mask"], np.ones((3, 3), dtype=int))[1] for it in items)
    n4 = sum(label(it["mask"])[1] for it in items)
    pixel = {
        "images": [{"name": it["name"], "defect_type": it["defect_type"], "anomalous": it["anomalous"],
                    "score": it["score"], "height": int(it["map"].shape[0]), "width": int(it["map"].shape[1]),
                    "map": fl(it["map"]), "mask": [int(v) for v in it["mask"].ravel()]} for it in items],
        "n_regions_8conn": int(n8), "n_regions_4conn": int(n4),
        "pro_curve": {"fpr": fl(fprs), "pro": fl(pros)},
        "expected": per_type,
    }
    out = {"generator": "tests/testdata/make_metrics_fixture.py", "image_cases": cases, "pixel_case": pixel}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics_fixture.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes); regions 8-conn {n8}, 4-conn {n4}")
    for k, v in per_type.items():
        print(k, {kk: (round(vv, 6) if isinstance(vv, float) else vv) for kk, vv in v.items()})


if __name__ == "__main__":
    main()
