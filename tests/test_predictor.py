"""The Predictor and the image preprocessing: one runner for the gate and the device, without torch."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import export_helpers as h
import numpy as np
import pytest
from PIL import Image

from edgekit.bundle import Bundle, Preprocess
from edgekit.edge.predictor import Predictor, postprocess
from edgekit.edge.preprocess import fit_image, labeled_folder, preprocess_image
from edgekit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY_PRE = Preprocess(color="RGB", resize=(40, 48), scale=1 / 255, offset=0.0, mean=[0.5, 0.4, 0.3],
                      std=[0.25, 0.2, 0.3])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, waste_mini):
    """A small CNN bundle on real waste-mini photos, exported to every image format."""
    import torch

    from edgekit.bundle import BundleWriter, InputSpec
    from edgekit.trainer.export import ExportConfig, export_bundle

    torch.set_num_threads(1)
    labels = ["glass", "metal", "paper"]
    split: dict[str, list] = {"train": [], "val": []}
    for i, c in enumerate(labels):
        files = sorted(p.name for p in (waste_mini / c).glob("*.jpg"))
        split["val"] += [[f"{c}/{f}", i] for f in files[:4]]
        split["train"] += [[f"{c}/{f}", i] for f in files[4:16]]
    with pytest.MonkeyPatch.context() as mp:
        h.register_test_archs(mp)
        model = h.tiny_cnn(num_classes=3).eval()
        w = BundleWriter("tiny", root=tmp_path_factory.mktemp("models"))
        torch.save(model.state_dict(), w.add("model.pt", "pytorch", "checkpoint"))
        from edgekit import atomic

        atomic.write_json(w.add("split.json", "json", "data"), {"root": str(waste_mini), **split})
        bundle = w.commit(task="image-classification", labels=labels,
                          input=InputSpec(shape=[1, 3, 40, 48], layout="NCHW", preprocess=TINY_PRE),
                          extra={"arch": {"name": "test_tiny_cnn", "kwargs": {"num_classes": 3}}, "output": "logits"})
        export_bundle(ExportConfig(bundle=str(bundle.path), calib_samples=36, max_drop=100.0, latency_runs=1))
    return Bundle.load(bundle.path), model


def test_preprocess_follows_the_manifest_formula():
    pixels = np.array([[[0, 128, 255], [10, 20, 30]], [[255, 255, 255], [1, 2, 3]]], dtype=np.uint8)
    pre = Preprocess(color="RGB", resize=(2, 2), scale=2.0, offset=-1.0, mean=[1.0, 2.0, 3.0], std=[2.0, 4.0, 8.0])
    x = preprocess_image(pixels, pre)
    expected = (pixels.astype(np.float32) * 2.0 - 1.0 - np.array([1.0, 2.0, 3.0])) / np.array([2.0, 4.0, 8.0])
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), expected, rtol=1e-6)
    assert preprocess_image(pixels, pre, "NHWC").shape == (1, 2, 2, 3)
    bgr = preprocess_image(pixels, pre.model_copy(update={"color": "BGR", "mean": None, "std": None}), "NHWC")
    np.testing.assert_allclose(bgr[0, 0, 0], [255 * 2 - 1, 128 * 2 - 1, -1.0])


def test_layouts_convert_both_ways_and_refuse_the_rest():
    from edgekit.edge.predictor import to_layout

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    nhwc = to_layout(x, "NCHW", "NHWC")
    assert nhwc.shape == (2, 4, 5, 3) and nhwc[1, 2, 3, 0] == x[1, 0, 2, 3]
    np.testing.assert_array_equal(to_layout(nhwc, "NHWC", "NCHW"), x)
    assert to_layout(x, "NTF", "NTF") is x
    with pytest.raises(ValueError, match="cannot convert"):
        to_layout(x, "NTF", "NHWC")


def test_labeled_folder_reads_what_training_reads(tmp_path):
    from edgekit.trainer.images import IMAGE_EXTS

    for i, suffix in enumerate(sorted(IMAGE_EXTS)):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.new("RGB", (4, 4), (i, i, i)).save(tmp_path / "a" / f"x{i}{suffix}")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    paths, y = labeled_folder(tmp_path, ["a"])
    assert {p.suffix for p in paths} == IMAGE_EXTS and y.tolist() == [0] * len(IMAGE_EXTS)


def test_preprocess_resizes_by_stretching(waste_mini):
    photo = sorted((waste_mini / "glass").glob("*.jpg"))[0]
    pre = Preprocess(color="RGB", resize=(30, 70), scale=1.0, offset=0.0)
    x = preprocess_image(photo, pre)
    assert x.shape == (1, 3, 30, 70)
    direct = np.asarray(Image.open(photo).convert("RGB").resize((70, 30), Image.BILINEAR), dtype=np.float32)
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), direct)


def test_pad_letterboxes_with_edge_pixels_and_crop_cuts_the_centre():
    # Every pixel distinct, and every fit at scale exactly 1 (no resampling blur): an 8 wide x 4 high image
    # cropped to 4x4 keeps columns 2-5; the same image turned upright (4 wide x 8 high) padded to 8x8 sits
    # in columns 2-5 with its outer columns repeated on both sides.
    wide = np.arange(8 * 4 * 3, dtype=np.uint8).reshape(4, 8, 3)
    crop = fit_image(Image.fromarray(wide), (4, 4), "crop")
    np.testing.assert_array_equal(crop, wide[:, 2:6])
    tall = Image.fromarray(wide).transpose(Image.Transpose.ROTATE_90)  # 4 wide x 8 high
    pad = fit_image(tall, (8, 8), "pad")
    assert pad.shape == (8, 8, 3)
    np.testing.assert_array_equal(pad[:, 2:6], np.asarray(tall))
    np.testing.assert_array_equal(pad[:, :2], np.repeat(pad[:, 2:3], 2, axis=1))  # left: first column repeated
    np.testing.assert_array_equal(pad[:, 6:], np.repeat(pad[:, 5:6], 2, axis=1))
    np.testing.assert_array_equal(fit_image(tall, (8, 8), None), fit_image(tall, (8, 8), "stretch"))
    with pytest.raises(ValueError, match="known: stretch, pad, crop"):
        fit_image(tall, (8, 8), "zoom")


def test_training_cache_and_device_make_the_same_pixels_for_every_fit(waste_mini, tmp_path):
    from typing import get_args

    from edgekit.bundle import ImageFit
    from edgekit.edge.preprocess import FITS
    from edgekit.trainer.image_cache import ImageCache

    assert set(FITS) == set(get_args(ImageFit))  # every fit a bundle may name has a function, and no more
    with pytest.raises(ValueError, match="unknown image fit 'zoom'"):
        ImageCache((50, 40), root=tmp_path, fit="zoom")

    photos = sorted((waste_mini / "plastic").glob("*.jpg"))[:3]
    for fit in FITS:
        cached = ImageCache((50, 40), root=tmp_path, fit=fit).load(photos)
        pre = Preprocess(color="RGB", resize=(50, 40), fit=fit, scale=1.0, offset=0.0)
        device = np.concatenate([preprocess_image(p, pre, "NHWC") for p in photos])
        np.testing.assert_array_equal(cached.get(np.arange(3)).astype(np.float32), device)
    assert len({p.name for p in tmp_path.iterdir()}) == len(FITS)  # one store per fit


def test_every_image_input_kind_gives_the_same_scores(tiny, waste_mini):
    bundle, _ = tiny
    photo = sorted((waste_mini / "paper").glob("*.jpg"))[3]
    p = Predictor.from_bundle(bundle, "tflite")
    ref = p.predict_image(photo)
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    for kind in (str(photo), photo.read_bytes(), Image.open(photo), rgb):
        np.testing.assert_array_equal(p.predict_image(kind), ref)
    assert ref.shape == (1, 3) and p.latency_ms > 0


def test_nhwc_tflite_and_nchw_onnx_agree_with_pytorch(tiny, waste_mini):
    import torch

    bundle, model = tiny
    paths, _ = labeled_folder(waste_mini, ["cardboard", "glass", "metal", "paper", "plastic", "trash"])
    x = np.concatenate([preprocess_image(p, TINY_PRE) for p in paths[::40]])
    with torch.inference_mode():
        expected = postprocess(model(torch.from_numpy(x)).numpy(), "logits")
    for name in ("onnx", "tflite"):
        scores = Predictor.from_bundle(bundle, name).predict(x)
        assert scores.shape == (len(x), 3)
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_int8_io_is_quantized_with_the_files_own_parameters(tiny):
    bundle, _ = tiny
    p = Predictor.from_bundle(bundle, "tflite-int8")
    q_in, q_out = p.runner.input_quant, p.runner.output_quant
    assert q_in.dtype == np.int8 and q_out.dtype == np.int8
    x = np.random.default_rng(0).normal(size=(3, 3, 40, 48)).astype(np.float32)
    raw = np.concatenate([q_out.dequantize(p.runner.run(q_in.quantize(p._to_file_layout(x[i:i + 1]))))
                          for i in range(3)])
    np.testing.assert_allclose(p.predict(x), postprocess(raw, "logits"), rtol=1e-6)
    fp32 = Predictor.from_bundle(bundle, "tflite").predict(x)
    assert np.abs(p.predict(x) - fp32).max() < 0.1
    assert np.array_equal(q_in.quantize(np.array([1e9, -1e9], np.float32)), np.array([127, -128], np.int8))


def test_a_single_sample_without_batch_axis_is_accepted(tiny):
    bundle, _ = tiny
    p = Predictor.from_bundle(bundle, "onnx")
    x = np.random.default_rng(1).normal(size=(3, 40, 48)).astype(np.float32)
    np.testing.assert_array_equal(p.predict(x), p.predict(x[None]))


def test_user_mistakes_are_one_sentence(tiny, tmp_path):
    bundle, _ = tiny
    with pytest.raises(UserError, match="no onnx-int9 model"):
        Predictor.from_bundle(bundle, "onnx-int9")
    bogus = tmp_path / "model.pb"
    bogus.write_bytes(b"x")
    with pytest.raises(UserError, match="not a model file"):
        Predictor(bogus, bundle.manifest)
    with pytest.raises(UserError, match="Could not read"):
        Predictor.from_bundle(bundle, "onnx").predict_image(io.BytesIO(b"not a jpeg").getvalue())


def test_edge_side_runs_without_torch(tiny, waste_mini):
    """The Pi has no torch: load both runtimes and classify a photo with torch made unimportable."""
    bundle, _ = tiny
    photo = sorted((waste_mini / "metal").glob("*.jpg"))[0]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgekit.bundle import Bundle\nfrom edgekit.edge.predictor import Predictor\n"
        f"b = Bundle.load({str(bundle.path)!r})\n"
        "for f in ('onnx', 'tflite-int8'):\n"
        f"    print(f, Predictor.from_bundle(b, f).predict_image({str(photo)!r}).round(3).tolist())\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("[[") == 2


def test_calibration_method_is_wired_and_validated(tiny, tmp_path, capsys):
    from edgekit.cli import main

    bundle, _ = tiny
    copy = tmp_path / "tiny" / bundle.version
    shutil.copytree(bundle.path, copy)
    with pytest.MonkeyPatch.context() as mp:
        h.register_test_archs(mp)
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(copy), "--format", "onnx-int8", "--calib-method", "percentile",
                  "--calib-samples", "36", "--max-drop", "100", "--latency-runs", "1"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out  # the result table, without onnxruntime's histogram notes in it
        assert "onnx-int8" in out and "histogram" not in out, out
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(copy), "--calib-method", "kl"])
        assert exit_info.value.code == UserError.exit_code
    assert "--calib-method" in capsys.readouterr().err
    minmax, percentile = bundle.model_file("onnx-int8").read_bytes(), Bundle.load(copy).model_file("onnx-int8")
    assert percentile.read_bytes() != minmax  # other activation ranges, other file
    Bundle.load(copy).verify()


def test_eval_without_the_pytorch_checkpoint_still_scores(tiny, tmp_path):
    """A bundle copied without model.pt (as a device holds it) is evaluated, only without the PyTorch columns."""
    from edgekit.trainer.export import EvalConfig, eval_bundle

    bundle, _ = tiny
    copy = tmp_path / "tiny" / bundle.version
    shutil.copytree(bundle.path, copy)
    stripped = Bundle.load(copy)
    del stripped.manifest.files["model.pt"]
    stripped.save()
    (copy / "model.pt").unlink()
    [r] = eval_bundle(EvalConfig(bundle=str(copy), formats=["onnx"], latency_runs=1))
    assert r.agreement is None and r.drop is None
    assert r.accuracy == next(e for e in bundle.manifest.files.values() if e.format == "onnx").gate["accuracy"]


def test_exif_orientation_is_applied_once_for_every_user(tmp_path):
    """A phone photo stored sideways with an EXIF tag decodes upright (training and device share this)."""
    from PIL import Image

    from edgekit.edge.preprocess import load_image

    sideways = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    sideways.save(path, exif=exif)
    assert load_image(path).size == (20, 40)
    assert load_image(path.read_bytes()).size == (20, 40)
    plain = tmp_path / "plain.jpg"
    sideways.save(plain)
    assert load_image(plain).size == (40, 20)
