"""`edgekit calibrate classifier` on waste-mini with a real exported ONNX model, run by the device's Predictor.

The model is MobileNetV2 (the trainer's module, Keras padding, the shared ImageNet weights) with a
linear head trained here on frozen features of one third of waste-mini at 160x120, exported to ONNX by
`edgekit export` (its accuracy gate runs on the second third). Thresholds are calibrated on the second
third and checked on the last third, the held-out photos, through the runtime's own `Classifier`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.edge.calibrate_classifier import class_thresholds, decide

TARGET = 0.85
SIZE = (160, 120)  # (H, W): waste-mini photos are 256x192 portrait


def edgekit(*args: object) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _link_split(files: dict[str, list[Path]], part: slice, out: Path) -> Path:
    for label, fs in files.items():
        (out / label).mkdir(parents=True)
        for f in fs[part]:
            (out / label / f.name).symlink_to(f.resolve())
    return out


def _train_and_export(files: dict[str, list[Path]], weights: Path, data_root: Path, root: Path):
    """A trainer-style waste bundle (checkpoint, arch, split.json) exported to ONNX by `edgekit export`.

    Training is the quick part of `edgekit train waste` only: MobileNetV2 with the shared ImageNet
    backbone frozen and a linear head on the first third of the photos.
    """
    torch = pytest.importorskip("torch")
    import io

    from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess
    from edgekit.edge.preprocess import preprocess_images
    from edgekit.trainer.mobilenet import build, load_backbone, read_state_dict

    torch.set_num_threads(1)
    torch.manual_seed(0)
    labels = sorted(files)
    pre = Preprocess(color="RGB", resize=SIZE, scale=1 / 127.5, offset=-1.0)
    arch = {"name": "mobilenet_v2", "kwargs": {"num_classes": len(labels), "padding": "keras"}}
    model = build(**arch["kwargs"]).eval()
    load_backbone(model, read_state_dict(weights))
    train = [(f, k) for k, label in enumerate(labels) for f in files[label][0::3]]
    x = torch.from_numpy(preprocess_images([f for f, _ in train], pre))
    y = torch.tensor([k for _, k in train])
    with torch.no_grad():
        feats = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1), 1)
    head = model.classifier[1]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(feats), y).backward()
        opt.step()
    w = BundleWriter("waste", root=root)
    buf = io.BytesIO()
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, buf)
    w.add("model.pt", "pytorch", "checkpoint")
    (w.dir / "model.pt").write_bytes(buf.getvalue())
    rel = lambda f: f"{f.parent.name}/{f.name}"  # noqa: E731
    split = {"root": str(data_root), "train": [rel(f) for f, _ in train],
             "val": [rel(f) for fs in files.values() for f in fs[1::3]]}
    (w.dir / "split.json").write_text(json.dumps(split))
    w.add("split.json", "json", "data")
    b = w.commit(task="image-classification", labels=labels, input=InputSpec(shape=[1, 3, *SIZE], preprocess=pre),
                 thresholds={"default": 0.5}, extra={"arch": arch, "output": "logits"})
    assert edgekit("export", b.path, "--format", "onnx", "--latency-runs", "3") == 0
    return Bundle.load(b.path)


@pytest.fixture(scope="module")
def waste(waste_mini: Path, imagenet_weights: Path, tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("waste")
    files = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
             for d in sorted(waste_mini.iterdir()) if d.is_dir()}
    bundle = _train_and_export(files, imagenet_weights, waste_mini, root / "models")
    return SimpleNamespace(bundle=bundle, calib=_link_split(files, slice(1, None, 3), root / "calib"),
                           held=_link_split(files, slice(2, None, 3), root / "held"), root=root)


@pytest.fixture(scope="module")
def calibrated(waste) -> SimpleNamespace:
    out = waste.root / "out"
    assert edgekit("calibrate", "classifier", "--model", waste.bundle.path, "--data", waste.calib,
                   "--out", out, "--target-precision", TARGET) == 0
    return SimpleNamespace(out=out, result=json.loads((out / "calibration.json").read_text()))


def _held_out(waste, thresholds: dict[str, float]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true index, decided index or -1) for every held-out photo through the runtime's Classifier."""
    from edgekit.bundle import Bundle
    from edgekit.edge.classify import UNKNOWN, Classifier
    from edgekit.edge.predictor import Predictor
    from edgekit.edge.preprocess import labeled_folder

    bundle = Bundle.load(waste.bundle.path)
    clf = Classifier(Predictor.from_bundle(bundle, fmt="onnx"), thresholds)
    paths, y = labeled_folder(waste.held, clf.labels)
    from PIL import Image

    decided = [clf.classify(Image.open(p)).label for p in paths]
    return y, np.array([-1 if d == UNKNOWN else clf.labels.index(d) for d in decided]), clf.labels


def _not_below(correct: int, n: int, target: float) -> bool:
    """True unless `correct` of `n` is significantly below `target` (one-sided binomial, p < 0.01)."""
    from scipy.stats import binom

    return n == 0 or binom.cdf(correct, n, target) >= 0.01


@pytest.mark.slow  # shares the module's trained and exported model (~15 s of CPU)
def test_thresholds_meet_the_target_on_held_out_photos(waste, calibrated):
    from edgekit.bundle import Bundle
    from edgekit.edge.classify import bundle_thresholds

    manifest = Bundle.load(waste.bundle.path).manifest
    written = bundle_thresholds(dict(manifest.thresholds), list(manifest.labels))  # as the device reads them
    assert set(written) == set(manifest.labels) | {"default"}
    y, pred, labels = _held_out(waste, written)
    met = {c["label"] for c in calibrated.result["classes"] if c["met"]}
    assert met, "some class should reach the target with this model"
    for k, label in enumerate(labels):
        called = pred == k
        if label in met:
            assert _not_below(int((y[called] == k).sum()), int(called.sum()), TARGET), label
    claimed = np.isin(pred, [labels.index(m) for m in met])  # what the met classes claim, all together
    assert claimed.sum() >= 20
    assert _not_below(int((pred[claimed] == y[claimed]).sum()), int(claimed.sum()), TARGET)
    # the check has teeth: the same model without thresholds (plain arg-max) fails it
    y0, plain, _ = _held_out(waste, {"default": 0.0})
    assert not _not_below(int((plain == y0).sum()), len(y0), TARGET)


@pytest.mark.slow  # shares the module's trained and exported model (~15 s of CPU)
def test_results_report_per_class_and_reach_bundle_and_env(waste, calibrated):
    r = calibrated.result
    for c in r["classes"]:
        at = r["at_thresholds"][c["label"]]
        if c["met"]:
            assert at["precision"] >= TARGET  # on the calibration photos this holds exactly
        else:
            assert c["label"] in r["not_met"]
    assert 0 < r["unknown_rate"] < 1
    assert (calibrated.out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    env = (calibrated.out / "calibration.env").read_text()
    from edgekit.edge.settings import load_settings

    (calibrated.out / "device.env").write_text(env)
    assert load_settings(calibrated.out / "device.env").class_thresholds == pytest.approx(r["thresholds"])
    from edgekit.bundle import Bundle

    b = Bundle.load(waste.bundle.path)
    assert b.manifest.thresholds["per_class"] == r["thresholds"] and b.manifest.thresholds["default"] == 0.5
    assert b.manifest.extra["calibration"]["target_precision"] == TARGET
    b.verify()  # the manifest changed, the files it lists did not


def test_highest_recall_at_the_target_and_classes_that_cannot_reach_it():
    labels = ["a", "b", "c"]
    # class a: scores 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (right): 0.75 threshold = 2/2, then 2/3 < 0.9
    # class b: always wrong when predicted (kept at its best, the highest cut); class c: never predicted
    rows = [([0.9, 0.1, 0], 0), ([0.8, 0.2, 0], 0), ([0.7, 0.3, 0], 1), ([0.6, 0.4, 0], 0),
            ([0.2, 0.8, 0], 0), ([0.3, 0.7, 0], 0)]
    scores = np.array([r for r, _ in rows], dtype=np.float32)
    y = np.array([t for _, t in rows])
    a, b, c = class_thresholds(scores, y, labels, target=0.9)
    assert a.met and a.threshold == pytest.approx(0.75) and a.recall == pytest.approx(2 / 5) and a.predicted == 2
    assert not b.met and b.precision == 0.0
    assert c.threshold is None and not c.met
    assert decide(scores, [a, b, c], default=0.5).tolist() == [0, 0, -1, -1, 1, -1]
    # a lower target admits the 3rd and 4th photos: 3/4 = 0.75
    assert class_thresholds(scores, y, labels, target=0.75)[0].threshold == pytest.approx(0.6)


def test_bad_inputs_are_one_sentence(waste, tmp_path, capsys):
    (tmp_path / "data" / "banana").mkdir(parents=True)
    assert edgekit("calibrate", "classifier", "-m", waste.bundle.path, "-d", tmp_path / "data",
                   "-o", tmp_path / "o") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has no images in folders named after the model's classes" in err
    from edgekit.bundle import BundleWriter, InputSpec

    w = BundleWriter("wake", root=tmp_path / "models")
    (w.dir / "x.onnx").write_bytes(b"x")
    w.add("x.onnx", "onnx", "model")
    wake = w.commit(task="wakeword", labels=["alexa"], input=InputSpec(shape=[1, 16, 96], layout="NTF"))
    assert edgekit("calibrate", "classifier", "-m", wake.path, "-d", waste.calib, "-o", tmp_path / "o") == 2
    assert "is for wakeword, not image classification" in " ".join(capsys.readouterr().err.split())
    assert edgekit("calibrate", "classifier", "-m", waste.bundle.path, "-d", waste.calib, "-o", tmp_path / "o",
                   "--format", "onnx-int9") == 2  # the bundle has onnx
    assert "has no onnx-int9 model (it has: onnx); did you mean onnx?" in " ".join(capsys.readouterr().err.split())


def test_out_that_is_a_file_fails_before_scoring(waste, tmp_path, capsys):
    (tmp_path / "results").write_text("mine")
    assert edgekit("calibrate", "classifier", "-m", waste.bundle.path, "-d", waste.calib,
                   "-o", tmp_path / "results") == 2
    assert "results, which is a file; give a folder" in " ".join(capsys.readouterr().err.split())
    assert (tmp_path / "results").read_text() == "mine"
    assert edgekit("calibrate", "classifier", "-m", waste.bundle.path, "-d", waste.calib, "-o", tmp_path / "o",
                   "--apply", "pi@") == 2
    assert "'pi@' is not a target" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_site_photos_are_picked_as_training_picks_them(waste, tmp_path, caplog, capsys):
    """Nested folders count, hidden files (macOS ._x.jpg) do not, a broken photo is left out, an unknown
    class folder is named and left out."""
    import logging
    import shutil

    from edgekit.edge.preprocess import labeled_folder

    labels = list(waste.bundle.manifest.labels)
    data = tmp_path / "site"
    for i, label in enumerate(labels):
        src = sorted(waste.calib.joinpath(label).glob("*.jpg"))[0]
        (data / label / "morning").mkdir(parents=True)
        shutil.copy(src, data / label / "morning" / "a.jpg")
        (data / label / f"._{src.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        if i == 0:
            (data / label / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (data / "banana").mkdir()
    shutil.copy(src, data / "banana" / "b.jpg")
    with caplog.at_level(logging.WARNING):
        paths, y = labeled_folder(data, labels)
    assert "the model does not know: banana" in caplog.text
    assert sorted(p.name for p in paths) == sorted(["a.jpg"] * len(labels) + ["broken.jpg"])
    capsys.readouterr()
    assert edgekit("calibrate", "classifier", "-m", waste.bundle.path, "-d", data, "-o", tmp_path / "o",
                   "--no-write-bundle") == 0
    out = capsys.readouterr()
    assert "skipping" in out.err + out.out and "broken.jpg" in out.err + out.out
