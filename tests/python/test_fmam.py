# Tests of the Python module fmam (python/fmam_module.cpp), run by ctest as PythonModuleTest:
#   PYTHONPATH=build/python FMAM_SHARED=../shared /usr/bin/python3 -m pytest -q tests/python
# A tiny model (1 epoch, 8 images, 64 px) is trained once per session with build/apps/fmam.
# Scores are compared with what `fmam run` prints for the same files and model.
import csv
import io
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="python3-numpy is not installed")
fmam = pytest.importorskip("fmam", reason="the module is not built or not on PYTHONPATH (build/python)")

SOURCE = Path(os.environ.get("FMAM_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY = Path(os.environ.get("FMAM_BINARY_DIR", SOURCE / "build"))
SHARED = Path(os.environ.get("FMAM_SHARED", SOURCE.parent / "shared")).resolve()
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
CLI = BINARY / "apps" / "fmam"
GRAPH = str(SOURCE / "graphs" / "rkd.json")
TRAIN_GRAPH = str(SOURCE / "graphs" / "rkd_train.json")
TINY = {"stage1.epochs": 1, "stage2.epochs": 0, "train.image_size": 64}

needs_data = pytest.mark.skipif(not (BOTTLE / "test").is_dir(), reason=f"no shared data at {BOTTLE} (set FMAM_SHARED)")
needs_train = pytest.mark.skipif(not hasattr(fmam, "train"), reason="this libfmam has no Trainer (api/trainer.cpp)")
needs_evaluate = pytest.mark.skipif(not hasattr(fmam, "evaluate"), reason="this libfmam has no evaluate (api/evaluate.cpp)")


def sample_images(n):
    files = sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[: n // 2]
    files += sorted((BOTTLE / "test" / "good").glob("*.png"))[: n - len(files)]
    return [str(f) for f in files]


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    if not (BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"no shared data at {BOTTLE} (set FMAM_SHARED)")
    if not CLI.exists():
        pytest.skip(f"no {CLI}: build the fmam target")
    out = tmp_path_factory.mktemp("model") / "tiny.fmam"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    subprocess.run([str(CLI), "train", TRAIN_GRAPH, "--data", str(BOTTLE), "--out", str(out), "--max-images", "8", "-q",
                    *sets], check=True, cwd=SOURCE, stdout=subprocess.DEVNULL)
    return str(out)


@pytest.fixture(scope="session")
def detector(model):
    return fmam.Detector(GRAPH, model=model)


def cli_scores(model, files, tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(files) + "\n")
    r = subprocess.run([str(CLI), "run", GRAPH, "--model", model, "-q", "-i", str(listing)], check=True, cwd=SOURCE,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    return {row["source"]: float(row["score"]) for row in rows}


# (a) the same scores as fmam run; the map at the input's size; RGB and BGR agree.
@needs_data
def test_detect_matches_fmam_run(model, detector, tmp_path):
    files = sample_images(4)
    expected = cli_scores(model, files, tmp_path)
    assert len(expected) == len(files)
    for f in files:
        image = fmam.read_image(f)
        heatmap, score, verdict = detector.detect(image)
        assert score == pytest.approx(expected[f], rel=1e-4), f
        assert verdict is None  # the tiny model is not calibrated
        assert heatmap.dtype == np.float32
        assert heatmap.shape == image.shape[:2]
        assert np.isfinite(heatmap).all()


@needs_data
def test_read_image_is_rgb():
    f = sample_images(1)[0]
    rgb = fmam.read_image(f)
    bgr = fmam.read_image(f, bgr=True)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert np.array_equal(rgb, bgr[..., ::-1])
    assert fmam.read_image(f, gray=True).shape == rgb.shape[:2]
    try:
        from PIL import Image
    except ImportError:
        return
    assert np.array_equal(rgb, np.asarray(Image.open(f).convert("RGB")))


@needs_data
def test_bgr_flag_and_non_contiguous(detector):
    rgb = fmam.read_image(sample_images(1)[0])
    _, score, _ = detector.detect(rgb)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert detector.detect(bgr, bgr=True)[1] == pytest.approx(score, rel=1e-6)
    assert detector.detect(rgb[..., ::-1], bgr=True)[1] == pytest.approx(score, rel=1e-6)  # a strided view
    assert detector.detect(np.asfortranarray(rgb))[1] == pytest.approx(score, rel=1e-6)
    # Swapped channels read as RGB are a different image.
    assert detector.detect(bgr)[1] != pytest.approx(score, rel=1e-6)
    # A crop with strides, at its own size.
    crop = rgb[10:200:2, 5:300:3]
    heatmap, _, _ = detector.detect(crop)
    assert heatmap.shape == crop.shape[:2]


# (b) detect_batch equals detect one by one, in order.
@needs_data
def test_detect_batch_equals_detect(detector):
    images = [fmam.read_image(f) for f in sample_images(6)]
    images.append(images[0][::2, ::2])  # another size in the same batch
    batch = detector.detect_batch(images)
    assert len(batch) == len(images)
    for image, (heatmap, score, verdict) in zip(images, batch):
        one_map, one_score, one_verdict = detector.detect(image)
        assert score == pytest.approx(one_score, rel=1e-5)
        assert heatmap.shape == image.shape[:2]
        np.testing.assert_allclose(heatmap, one_map, rtol=1e-4, atol=1e-5)
        assert verdict == one_verdict
    assert detector.detect_batch([]) == []


def test_properties(model, detector):
    assert detector.graph_name == "rkd"
    assert detector.image_size == (64, 64)  # the model's, not the graph's 256
    assert detector.threshold is None
    d = fmam.Detector(GRAPH, model=model, threshold=0.5)
    assert d.threshold == 0.5
    if (BOTTLE / "test").is_dir():
        _, score, verdict = d.detect(fmam.read_image(sample_images(1)[0]))
        assert verdict == ("FAIL" if score >= 0.5 else "PASS")


# precision: what "auto" became is visible; fp32 and bf16 agree within bfloat16's rounding, int8
# (the model was calibrated for it when fmam train finished) within its own.
@needs_data
def test_precision(model):
    image = fmam.read_image(sample_images(1)[0])
    d32 = fmam.Detector(GRAPH, model=model, precision="fp32")
    d16 = fmam.Detector(GRAPH, model=model, precision="bf16")
    d8 = fmam.Detector(GRAPH, model=model, precision="int8")
    assert d32.precision == "fp32" and d16.precision == "bf16" and d8.precision == "int8"
    assert fmam.Detector(GRAPH, model=model).precision in ("fp32", "bf16", "int8")
    s32, s16, s8 = d32.detect(image)[1], d16.detect(image)[1], d8.detect(image)[1]
    assert s16 == pytest.approx(s32, rel=0.03) and s16 != s32
    assert s8 == pytest.approx(s32, rel=0.05) and s8 != s32
    with pytest.raises(ValueError, match='precision must be auto, fp32, bf16 or int8, got "half"'):
        fmam.Detector(GRAPH, model=model, precision="half")


# calibrate_int8: an uncalibrated model (training with train.int8_calibration_images=0) is refused
# with precision="int8" and runs bf16/fp32 under "auto"; calibrating a copy from Python makes
# "auto" pick int8 on CPUs with AVX2 or VNNI, and the copy then opens with precision="int8".
@needs_data
def test_calibrate_int8(model, tmp_path):
    plain = tmp_path / "plain.fmam"
    sets = [a for k, v in {**TINY, "train.int8_calibration_images": 0}.items() for a in ("--set", f"{k}={v}")]
    subprocess.run([str(CLI), "train", TRAIN_GRAPH, "--data", str(BOTTLE), "--out", str(plain), "--max-images", "4", "-q",
                    *sets], check=True, cwd=SOURCE, stdout=subprocess.DEVNULL)
    with pytest.raises(ValueError, match="not calibrated for int8; run fmam quantize"):
        fmam.Detector(GRAPH, model=str(plain), precision="int8")
    d = fmam.Detector(GRAPH, model=str(plain))
    assert d.precision in ("bf16", "fp32")
    copy = tmp_path / "int8.fmam"
    images = sorted(str(f) for f in (BOTTLE / "train" / "good").glob("*.png"))
    c = d.calibrate_int8(images, save_as=copy, max_images=3)
    assert c == {"images": 3, "skipped": 0, "nodes": ["teacher"], "points": 22, "saved_to": str(copy)}
    flags = Path("/proc/cpuinfo").read_text().split()
    fast_int8 = any(f in flags for f in ("avx2", "avx512_vnni", "avx_vnni"))  # framework/cpu_features.h
    assert d.precision == ("int8" if fast_int8 else d.precision)
    assert fmam.Detector(GRAPH, model=str(copy), precision="int8").precision == "int8"
    with pytest.raises(ValueError, match="max_images: must be >= 0"):
        d.calibrate_int8(images, max_images=-1)


# (c) gray input; what is refused and how.
def test_gray_input(detector):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (100, 120), dtype=np.uint8)
    heatmap, score, _ = detector.detect(gray)
    assert heatmap.shape == (100, 120) and heatmap.dtype == np.float32
    assert math.isfinite(score)
    # HxWx1 is gray too.
    assert detector.detect(gray[..., None])[1] == pytest.approx(score, rel=1e-6)


@pytest.mark.parametrize("bad, what", [
    (np.zeros((32, 32, 3), np.float32), "dtype float32"),
    (np.zeros((32, 32), np.uint16), "dtype uint16"),
    (np.zeros((1, 32, 32, 3), np.uint8), "shape (1, 32, 32, 3)"),
    (np.zeros((32, 32, 2), np.uint8), "shape (32, 32, 2)"),
    (np.zeros((0, 32, 3), np.uint8), "empty"),
    (np.zeros((32,), np.uint8), "shape (32,)"),
])
def test_bad_arrays_raise_value_error(detector, bad, what):
    with pytest.raises(ValueError, match="expected a numpy uint8 array") as e:
        detector.detect(bad)
    assert what in str(e.value)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        detector.detect_batch([np.zeros((32, 32), np.uint8), bad])


def test_missing_files_raise_file_not_found(model, tmp_path):
    missing = str(tmp_path / "no_such_model.fmam")
    with pytest.raises(FileNotFoundError) as e:
        fmam.Detector(GRAPH, model=missing)
    assert e.value.filename == missing and missing in str(e.value)
    with pytest.raises(FileNotFoundError, match="no_such_graph.json"):
        fmam.Detector(str(tmp_path / "no_such_graph.json"), model=model)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        fmam.read_image(str(tmp_path / "nope.png"))


def test_bad_config_raises_value_error(model, tmp_path):
    with pytest.raises(ValueError, match='unknown param "sigma_x"'):
        fmam.Detector(GRAPH, model=model, overrides={"blur.sigma_x": 2})
    with pytest.raises(ValueError, match='param "sigma": must be in'):
        fmam.Detector(GRAPH, model=model, overrides=["blur.sigma=-1"])
    with pytest.raises(ValueError, match='no node "nosuch"'):
        fmam.Detector(GRAPH, model=model, overrides={"nosuch.k": 1})
    with pytest.raises(ValueError, match="NODE_ID.PARAM=VALUE"):
        fmam.Detector(GRAPH, model=model, overrides=["blur"])
    bad_graph = tmp_path / "bad.json"
    bad_graph.write_text("{ not json")
    with pytest.raises(ValueError, match="bad.json"):
        fmam.Detector(str(bad_graph), model=model)
    bad_model = tmp_path / "bad.fmam"
    bad_model.write_text("not a model")
    with pytest.raises(ValueError, match="bad.fmam"):
        fmam.Detector(GRAPH, model=str(bad_model))
    with pytest.raises(ValueError, match="batch"):
        fmam.Detector(GRAPH, model=model, batch=0)
    # A valid override changes the result; a path-like graph works.
    d = fmam.Detector(Path(GRAPH), model=model, overrides={"blur.sigma": 1.5, "score.k": 10})
    assert d.detect(np.full((64, 64), 128, np.uint8))[0].shape == (64, 64)


# (d) the GIL is released while the graph runs: another Python thread makes progress meanwhile.
@needs_data
def test_gil_released_during_detect_batch(detector):
    images = [fmam.read_image(f) for f in sample_images(8)] * 6
    window = {}

    def work():
        window["start"] = time.monotonic()
        detector.detect_batch(images)
        window["end"] = time.monotonic()

    ticks = []
    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():
        ticks.append(time.monotonic())
        time.sleep(0.002)  # drops the GIL; it comes back only if the worker does not hold it
    t.join()
    start, end = window["start"], window["end"]
    if end - start < 0.15:
        pytest.skip(f"detect_batch took {end - start:.3f} s, too short to tell")
    inside = [x for x in ticks if start + 0.03 < x < end - 0.03]
    # Holding the GIL, the main thread would not run at all between start and end.
    assert len(inside) >= 10, f"{len(inside)} main-thread ticks during a {end - start:.2f} s detect_batch"


@needs_data
def test_concurrent_calls_on_one_detector(detector):
    images = [fmam.read_image(f) for f in sample_images(4)]
    expected = [detector.detect(im)[1] for im in images]
    results = {}

    def work(i):
        results[i] = [detector.detect(im)[1] for im in images]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert results[i] == pytest.approx(expected, rel=1e-6)


# (e) train and evaluate.
@needs_train
@needs_data
def test_train_reports_progress(tmp_path):
    out = tmp_path / "m.fmam"
    calls = []
    path = fmam.train(TRAIN_GRAPH, str(BOTTLE), str(out), overrides=TINY, progress=calls.append, max_images=8)
    assert Path(path) == out and out.exists()
    assert calls, "progress was never called"
    for p in calls:
        assert p["stage"] == "stage1"
        assert p["epochs"] == 1 and p["epoch"] == 0
        assert 0 <= p["batch"] <= p["batches"] and p["batches"] >= 1
        assert p["images_per_s"] >= 0
        assert isinstance(p["losses"], dict)
        assert bool(p["losses"]) == (p["batch"] > 0)  # a report at the epoch's start has none yet
        assert all(math.isfinite(v) for v in p["losses"].values())
    assert any(p["batch"] == p["batches"] for p in calls)
    assert calls[-1]["epoch_done"] is True
    assert calls[-1]["gflop"] > 0  # convolutions and products ran
    assert all(p["gflop"] >= 0 for p in calls)
    assert any(not p["epoch_done"] for p in calls)
    # The model works with a Detector, at the trained size.
    d = fmam.Detector(GRAPH, model=path)
    assert d.image_size == (64, 64)


@needs_train
@needs_data
def test_train_callback_raising_cancels_and_reraises(tmp_path):
    out = tmp_path / "m.fmam"

    class Stop(Exception):
        pass

    calls = []

    def progress(p):
        calls.append(p)
        raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        fmam.train(TRAIN_GRAPH, str(BOTTLE), str(out), overrides={**TINY, "stage1.epochs": 3}, progress=progress,
                   max_images=16)
    assert len(calls) == 1  # not called again once it raised
    assert out.exists(), "cancel saves a checkpoint"
    # The checkpoint resumes to the end.
    path = fmam.train(TRAIN_GRAPH, str(BOTTLE), str(out), overrides={**TINY, "stage1.epochs": 3}, resume=True,
                      max_images=16)
    assert fmam.Detector(GRAPH, model=path).image_size == (64, 64)


@needs_train
@needs_data
def test_train_keyboard_interrupt(tmp_path):
    out = tmp_path / "m.fmam"
    started = threading.Event()

    def ctrl_c():  # a real SIGINT while the main thread waits in C++
        started.wait(60)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=ctrl_c)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fmam.train(TRAIN_GRAPH, str(BOTTLE), str(out), overrides={**TINY, "stage1.epochs": 5},
                       progress=lambda p: started.set(), max_images=16)
    finally:
        started.set()
        t.join()
    assert out.exists(), "cancel saves a checkpoint"


@needs_train
def test_train_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_data"):
        fmam.train(TRAIN_GRAPH, str(tmp_path / "no_such_data"), str(tmp_path / "m.fmam"))
    if (BOTTLE / "train").is_dir():
        with pytest.raises(ValueError, match="nosuch"):
            fmam.train(TRAIN_GRAPH, str(BOTTLE), str(tmp_path / "m.fmam"), overrides={"nosuch.x": 1})


@needs_evaluate
@needs_data
def test_evaluate(model, tmp_path):
    calibrated = tmp_path / "calibrated.fmam"
    shutil.copy(model, calibrated)
    report = tmp_path / "report"
    r = fmam.evaluate(GRAPH, str(calibrated), str(BOTTLE), report_dir=str(report), calibrate=True)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
        assert 0 <= r[key] <= 1, (key, r[key])
    types = {p.name for p in (BOTTLE / "test").iterdir() if p.is_dir()}
    assert set(r["per_type"]) >= types - {"good"}
    for name, g in r["per_type"].items():
        assert 0 <= g["image_auroc"] <= 1 and g["images"] > 0, name
    assert r["images"] == sum(1 for p in (BOTTLE / "test").rglob("*.png"))
    assert r["skipped"] == 0 and r["seconds"] > 0
    assert (report / "report.html").exists()
    d = fmam.Detector(GRAPH, model=str(calibrated))
    assert d.threshold == pytest.approx(r["threshold"], rel=1e-5)
    _, score, verdict = d.detect(fmam.read_image(sample_images(1)[0]))
    assert verdict == ("FAIL" if score >= d.threshold else "PASS")
    with pytest.raises(FileNotFoundError, match="no_such_data"):
        fmam.evaluate(GRAPH, model, str(tmp_path / "no_such_data"))
