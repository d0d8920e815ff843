"""`edgekit train waste`: cache, augmentation, split, freezing, and real training runs on waste-mini."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekit.bundle import Preprocess, resolve
from edgekit.cli import main
from edgekit.trainer import augment as aug
from edgekit.trainer import waste, waste_data
from edgekit.trainer.engine import TrainingInterrupted
from edgekit.trainer.image_cache import ImageCache
from edgekit.trainer.mobilenet import build


@pytest.fixture(scope="session")
def image_cache_dir(tmp_path_factory) -> Path:
    """One image cache for the whole session: waste-mini is decoded once per size."""
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(autouse=True)
def _cache_env(image_cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEKIT_CACHE", str(image_cache_dir))
    torch.set_num_threads(2)


# ---------------------------------------------------------------------------- input pipeline


def test_cache_decodes_each_photo_once_keyed_by_content(waste_mini: Path, tmp_path: Path) -> None:
    src = sorted((waste_mini / "metal").glob("*.jpg"))[:5]
    files = []
    for i, p in enumerate(src[:4]):
        files.append(tmp_path / f"m{i}.jpg")
        shutil.copy(p, files[-1])
    cache = ImageCache((40, 48), root=tmp_path / "cache")
    decoded: list[int] = []
    first = cache.load(files, progress=decoded.append)
    assert len(decoded) == 4 and first.errors == {}
    np.testing.assert_array_equal(first.get(np.array([2]))[0], np.asarray(
        Image.open(files[2]).convert("RGB").resize((48, 40), Image.BILINEAR)))
    decoded.clear()
    shutil.copy(files[0], tmp_path / "renamed.jpg")  # same content under another name: no decode
    again = cache.load([*files, tmp_path / "renamed.jpg"], progress=decoded.append)
    assert decoded == [] and again.rows[4] == again.rows[0]
    stats = json.loads((cache.dir / "index.json").read_text())["stats"]
    assert str(tmp_path / "renamed.jpg") in stats  # hashed once, remembered even though nothing was decoded
    shutil.copy(src[4], files[0])  # new content under an old name: decoded again
    changed = cache.load(files, progress=decoded.append)
    assert len(decoded) == 1 and changed.rows[0] == 4 and changed.rows[1:].tolist() == first.rows[1:].tolist()
    assert isinstance(changed.pixels, np.memmap)


def test_flip_only_augmentation_mirrors_exactly_and_jitter_stays_in_range() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 20, generator=g)
    still = aug.AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), rotation=0, brightness=0, contrast=0,
                              saturation=0, flip=1.0)
    torch.testing.assert_close(aug.augment(x, still), x.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(aug.augment(x, aug.AugmentConfig(enabled=False)), x)
    torch.manual_seed(1)
    y = aug.augment(x, aug.AugmentConfig())
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)
    torch.manual_seed(1)
    torch.testing.assert_close(aug.augment(x, aug.AugmentConfig()), y)  # seeded: same draw


def test_normalizer_applies_the_bundle_preprocessing() -> None:
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 2, 2, 3).numpy()
    x01 = aug.to_tensor(pixels, torch.device("cpu"))
    keras = waste.STYLES["keras"].preprocess(2)
    tv = waste.STYLES["torchvision"].preprocess(2)
    got = aug.Normalizer(keras, torch.device("cpu"))(x01)[0, :, 0, 0]
    torch.testing.assert_close(got, torch.tensor([0, 51, 255]) / 127.5 - 1.0)
    got = aug.Normalizer(tv, torch.device("cpu"))(x01)[0, :, 0, 0]
    want = (torch.tensor([0, 51, 255]) / 255 - torch.tensor(tv.mean)) / torch.tensor(tv.std)
    torch.testing.assert_close(got, want)
    assert isinstance(keras, Preprocess) and keras.resize == (2, 2) and keras.color == "RGB"
    from edgekit.edge.preprocess import to_array  # the device's code, also where scale/mean/std are unset

    for pre in (keras, tv, Preprocess(color="RGB")):
        want = torch.from_numpy(to_array(Image.fromarray(pixels[0]), pre)).permute(2, 0, 1)
        torch.testing.assert_close(aug.Normalizer(pre, torch.device("cpu"))(x01)[0], want)


def test_stratified_split_is_seeded_disjoint_and_per_class() -> None:
    y = np.repeat(np.arange(3), [10, 20, 5])
    s = waste_data.stratified_split(y, 0.2, seed=1)
    assert set(s.train).isdisjoint(s.val) and len(s.train) + len(s.val) == len(y)
    assert np.bincount(y[s.val]).tolist() == [2, 4, 1]
    assert np.array_equal(waste_data.stratified_split(y, 0.2, seed=1).val, s.val)
    assert not np.array_equal(waste_data.stratified_split(y, 0.2, seed=2).val, s.val)


def test_run_key_changes_with_the_split_so_a_run_resumes_only_on_the_same_photos(waste_mini: Path) -> None:
    cfg = waste.WasteConfig(data=waste_mini, img_size=32, weights="none")
    prep = waste_data.prepare(cfg)
    key = cfg.run_key(prep)
    assert cfg.run_key(prep) == key != cfg.run_key()
    assert cfg.model_copy(update={"device": "cpu"}).run_key(prep) == key
    prep.split = waste_data.fold_splits(prep.y, 5, seed=42)[0]
    assert cfg.run_key(prep) != key


def test_fold_splits_validate_every_photo_once_per_class_evenly() -> None:
    y = np.repeat(np.arange(3), [10, 20, 7])
    folds = waste_data.fold_splits(y, 5, seed=3)
    val = np.concatenate([f.val for f in folds])
    assert sorted(val.tolist()) == list(range(len(y)))
    for f in folds:
        assert set(f.train).isdisjoint(f.val) and len(f.train) + len(f.val) == len(y)
        counts = np.bincount(y[f.val], minlength=3)
        assert counts[0] == 2 and counts[1] == 4 and counts[2] in (1, 2)


def test_freezing_counts_layers_from_the_end_and_keeps_bn_statistics() -> None:
    model = build(6)
    head = sum(p.numel() for p in model.classifier.parameters())
    assert waste.set_trainable(model, 0) == head
    layers = waste.base_layers(model)
    waste.set_trainable(model, 3)  # features.18 = conv, BN, ReLU6
    assert layers[-3] is model.features[18][0]
    assert all(p.requires_grad for p in model.features[18].parameters())
    assert not any(p.requires_grad for p in model.features[17].parameters())
    assert waste.set_trainable(model, None) == sum(p.numel() for p in model.parameters())
    waste.bn_frozen_train_mode(model)
    assert not model.features[0][1].training and model.features[0][0].training and model.classifier.training


def test_weight_styles(imagenet_weights: Path) -> None:
    from edgekit.trainer.mobilenet import read_state_dict

    cfg = waste.WasteConfig(data=".", weights=str(imagenet_weights))
    assert cfg.style(read_state_dict(imagenet_weights)).padding == "keras"
    assert cfg.style(build(10).state_dict()).padding == "torch"  # real BN statistics: torchvision-style
    assert waste.WasteConfig(data=".").style(None) is waste.STYLES["torchvision"]
    assert waste.WasteConfig(data=".", weights_style="keras").style(None) is waste.STYLES["keras"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "/no/such/file.pth"], "does not exist"),
        (["--weights", __file__], "cannot be read as a PyTorch state_dict: it is not a file torch.save wrote."),
        (["--classes", "glass,wood"], "wood not found"),
        (["--val-split", "1.5"], "--val-split"),
        (["--output", "bad name"], "must start with a letter"),
        (["--fit", "zoom"], "--fit: Input should be 'stretch', 'pad' or 'crop'"),
        (["--sam", "-0.05"], "--sam: Input should be greater than or equal to 0"),
    ],
)
def test_mistakes_exit_2_with_one_sentence(waste_mini: Path, capsys, monkeypatch, args: list[str],
                                           message: str) -> None:
    def no_decoding(*_a, **_k):
        raise AssertionError("photos were decoded before the mistake was reported")

    monkeypatch.setattr(ImageCache, "load", no_decoding)
    with pytest.raises(SystemExit) as exc:
        main(["train", "waste", "--data", str(waste_mini), "--img-size", "32", "--epochs", "1", *args])
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------------------- real training


@pytest.mark.slow
def test_train_on_waste_mini_beats_chance_and_bundle_is_consistent(
    waste_mini: Path, imagenet_weights: Path, tmp_path: Path, capsys
) -> None:
    size = 96
    with pytest.raises(SystemExit) as exc:
        main(["train", "waste", "--data", str(waste_mini), "--weights", str(imagenet_weights), "--img-size",
              str(size), "--epochs", "4", "--lr", "0.003", "--unfreeze", "20", "--device", "cpu", "--fit", "pad",
              "--sam", "0.05", "--run-dir", str(tmp_path / "run"), "--output", "bins"])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None), out
    assert "Epoch [1/1] Train Loss:" in out and "Epoch [3/3] Train Loss:" in out and "Val Loss:" in out
    bundle = resolve("bins")
    bundle.verify()
    m = bundle.manifest
    assert m.task == "image-classification"
    assert m.labels == sorted(p.name for p in waste_mini.iterdir() if p.is_dir())
    assert m.input.shape == [1, 3, size, size] and m.input.layout == "NCHW"
    assert m.input.preprocess.scale == pytest.approx(1 / 127.5) and m.input.preprocess.offset == -1.0
    assert m.input.preprocess.fit == "pad"  # recorded, and what the accuracy below is re-computed with
    assert m.extra["arch"] == {"name": "mobilenet_v2", "kwargs": {"num_classes": 6, "padding": "keras",
                                                                 "width_mult": 1.0, "dropout": 0.2}}
    assert {e.format for e in m.files.values()} >= {"pytorch", "json", "png"}
    assert m.files["model.pt"].role == "checkpoint" and m.files["split.json"].role == "data"
    assert m.thresholds == {"default": 0.5}
    assert set(m.metrics["per_class"]) == set(m.labels)

    split = json.loads((bundle.path / "split.json").read_text())
    assert Path(split["root"]) == waste_mini.resolve()
    train, val = {r for r, _ in split["train"]}, {r for r, _ in split["val"]}
    assert not train & val and len(train | val) == 360
    assert np.bincount([i for _, i in split["val"]]).tolist() == [12] * 6

    # The accuracy in the manifest is reproduced from the bundle alone, with the code export and the
    # device run: rebuild the model, preprocess each val photo with edgekit.edge.preprocess.
    from edgekit.edge.preprocess import preprocess_images
    from edgekit.trainer.models import load_from_bundle

    model = load_from_bundle(bundle)
    x = preprocess_images([Path(split["root"]) / rel for rel, _ in split["val"]], m.input.preprocess)
    assert x.shape == (len(split["val"]), 3, size, size)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    acc = float((pred == np.array([i for _, i in split["val"]])).mean())
    assert acc == pytest.approx(m.metrics["val_accuracy"], abs=1.5 / len(val))
    assert acc >= 0.40, f"val accuracy {acc:.1%} is not far above chance (16.7%)"
    report = json.loads((bundle.path / "evaluation_report.json").read_text())
    assert report["verdict"] in {"poor", "good", "very good", "excellent"} and "Accuracy" in out
    history = json.loads((bundle.path / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert {h["phase"] for h in history} == {1, 2}

    # Trained on the int8 grid (the default): the fine-tuned weights moved, and stayed where int8 stores them.
    from edgekit.trainer.int8_grid import off_grid

    state = torch.load(bundle.path / "model.pt", weights_only=True)
    shared = torch.load(imagenet_weights, weights_only=True)
    assert json.loads((bundle.path / "config.json").read_text())["int8_grid"] is True
    assert not torch.equal(state["features.18.0.weight"], shared["features.18.0.weight"])
    assert off_grid(state) < 1e-3


def _broken_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.find(b"IDAT") + 10
    data[start:start + 20] = bytes(20)  # header and IEND intact: only a full decode finds out
    return bytes(data)


class _InterruptAt:
    """Sends this process SIGINT before training step `n` (counted across both phases)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def on_step(self, epoch: int, global_step: int, batch_size: int) -> None:
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_interrupted_run_resumes_and_skips_broken_photos(waste_mini: Path, imagenet_weights: Path,
                                                         tmp_path: Path) -> None:
    data = tmp_path / "data"
    for c in ("cardboard", "glass", "metal", "trash"):
        (data / c).mkdir(parents=True)
        for p in sorted((waste_mini / c).glob("*.jpg"))[:15]:
            (data / c / p.name).symlink_to(p)
    (data / "glass" / "broken.png").write_bytes(_broken_png())
    (data / "metal" / "cut.jpg").write_bytes((waste_mini / "metal" / "metal106.jpg").read_bytes()[:3000])
    (data / "metal" / "notes.txt").write_text("not a photo")
    cfg = waste.WasteConfig(data=data, classes=["cardboard", "glass", "metal"], weights=str(imagenet_weights),
                            img_size=64, epochs=3, batch_size=12, unfreeze=10, device="cpu",
                            run_dir=tmp_path / "run", output="resumed")
    # 36 training photos = 3 steps per epoch; phase 1 is 1 epoch, so step 5 is inside phase 2
    with pytest.raises(TrainingInterrupted) as exc:
        waste.train(cfg, hooks=_InterruptAt(5))
    assert exc.value.exit_code == 130
    assert (tmp_path / "run" / "phase1" / "done.json").exists()
    assert (tmp_path / "run" / "phase2" / "checkpoint_last.pt").exists()
    assert not (tmp_path / "run" / "phase2" / "done.json").exists()
    assert not (Path(os.environ["EDGEKIT_MODELS"]) / "resumed").exists()

    bundle = waste.train(cfg)
    bundle.verify()
    history = json.loads((bundle.path / "history.json").read_text())
    assert [(h["epoch"], h["phase"]) for h in history] == [(1, 1), (2, 2), (3, 2)]
    assert bundle.manifest.labels == ["cardboard", "glass", "metal"]
    report = json.loads((bundle.path / "evaluation_report.json").read_text())
    skipped = {s["file"]: s["reason"] for s in report["skipped_files"]}
    assert set(skipped) == {"glass/broken.png", "metal/cut.jpg", "metal/notes.txt"}
    assert "broken data stream" in skipped["glass/broken.png"] and "truncated" in skipped["metal/cut.jpg"]
    split = json.loads((bundle.path / "split.json").read_text())
    used = {r for r, _ in split["train"] + split["val"]}
    assert len(used) == 45 and not used & set(skipped)


def test_crop_and_turn_never_shear():
    """The sampled input-from-output map is a turned, scaled box: its two axes stay perpendicular."""
    import torch

    from edgekit.trainer import augment as aug

    theta = aug._affine(2000, aug.AugmentConfig(crop_scale=(0.3, 1.0), crop_ratio=(0.5, 2.0), rotation=30))
    a = theta[:, :, :2]
    cos = (a[:, :, 0] * a[:, :, 1]).sum(1) / (a[:, :, 0].norm(dim=1) * a[:, :, 1].norm(dim=1))
    assert float(cos.abs().max()) < 1e-5
    assert torch.allclose(a[:, :, 0].norm(dim=1) * a[:, :, 1].norm(dim=1), a.det().abs(), rtol=1e-4)


def test_unfreezing_more_layers_than_the_base_has_trains_all_of_it():
    from edgekit.trainer.mobilenet import MobileNetV2
    from edgekit.trainer.waste import base_layers, set_trainable

    model = MobileNetV2(num_classes=6)
    n = len(base_layers(model))
    everything = set_trainable(model, n)
    assert set_trainable(model, n + 1) == set_trainable(model, 10 * n) == everything
    assert set_trainable(model, 0) < set_trainable(model, 3) < set_trainable(model, n - 1) < everything


@pytest.mark.parametrize("over", [{}, {"unfreeze": 0}, {"head_fraction": 1.0}, {"weights": "none"},
                                  {"epochs": 7, "head_fraction": 0.5}])
def test_the_phases_share_out_every_epoch_asked_for(waste_mini, over):
    cfg = waste.WasteConfig(data=waste_mini, **{"epochs": 20, **over})
    phases = waste.plan(cfg)
    assert sum(ph.epochs for ph in phases) == cfg.epochs and all(ph.epochs > 0 for ph in phases)
    assert (len(phases) == 1) == (cfg.unfreeze == 0 or cfg.head_fraction == 1.0 or cfg.weights == "none")


def test_copies_of_a_photo_never_reach_both_sides_and_edits_start_a_new_run(waste_mini, tmp_path):
    from edgekit.trainer import waste
    from edgekit.trainer.waste_data import prepare

    data = tmp_path / "data"
    for cls in ("glass", "metal", "paper"):
        (data / cls).mkdir(parents=True)
        for p in sorted((waste_mini / cls).glob("*.jpg"))[:4]:
            shutil.copy(p, data / cls / p.name)
    glass = sorted((data / "glass").iterdir())
    shutil.copy(glass[0], data / "glass" / "zz_copy.jpg")  # the same photo twice in one class
    paper = sorted((data / "paper").iterdir())
    shutil.copy(paper[0], data / "metal" / "misfiled.jpg")  # and once in two classes
    cfg = waste.WasteConfig(data=data, img_size=32, weights="none", cache_dir=tmp_path / "cache")
    prep = prepare(cfg)
    reasons = dict(prep.skipped)
    assert reasons["glass/zz_copy.jpg"] == f"a copy of glass/{glass[0].name}"
    assert "filed under metal, paper" in reasons["metal/misfiled.jpg"]
    assert "filed under metal, paper" in reasons[f"paper/{paper[0].name}"]
    assert len(set(prep.images.hashes)) == len(prep.files) == 11  # 12 photos + 2 copies - 3 left out

    key = cfg.run_key(prep)
    assert waste.WasteConfig(data=data, img_size=32, weights="none", cache_dir=tmp_path / "cache").run_key(
        prepare(cfg)) == key
    (data / "glass" / glass[1].name).write_bytes(sorted((waste_mini / "trash").glob("*.jpg"))[0].read_bytes())
    assert cfg.run_key(prepare(cfg)) != key  # same names, other content: not the old run's weights
