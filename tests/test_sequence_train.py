"""A short real `edgekit train sequence` run on har-mini, its bundle, ONNX/TFLite export and the device runner.

One training run (module fixture) feeds every test here; it trains on four people and reports on a
fifth that training never saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle import resolve
from edgekit.cli import main

BASIC = "WALKING,WALKING_UPSTAIRS,WALKING_DOWNSTAIRS,SITTING,STANDING,LAYING"


@pytest.fixture(scope="module")
def har_mini(shared: Path) -> Path:
    p = shared / "data" / "har-mini"
    if not p.is_dir():
        pytest.skip(f"har-mini not found in {p}")
    return p


@pytest.fixture(scope="module")
def trained(har_mini: Path, tmp_path_factory: pytest.TempPathFactory):
    """(bundle, printed output) of a small LSTM trained on people 01, 03, 05, 07; 08 validates, 06 tests."""
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("seq")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_MODELS", str(tmp / "models"))
        from io import StringIO

        from edgekit.console import console

        out = StringIO()
        mp.setattr(console, "file", out)
        with pytest.raises(SystemExit) as done:  # typer ends a successful command with exit 0
            main(["train", "sequence", "--data", str(har_mini), "--name", "har", "--group-by", r"file:user(\d+)",
                  "--include-labels", BASIC, "--test-groups", "06", "--val-groups", "08", "--units", "32",
                  "--dense", "16", "--epochs", "8", "--batch-size", "32", "--lr", "0.003", "--patience", "4",
                  "--device", "cpu", "--run-dir", str(tmp / "run")])
        assert done.value.code in (0, None)
        bundle = resolve(tmp / "models" / "har")
    return bundle, out.getvalue()


def test_real_run_beats_chance_widely_and_writes_the_bundle(trained):
    bundle, printed = trained
    m = bundle.manifest
    assert m.task == "sequence-classification" and len(m.labels) == 6
    # the diagnosis is printed before training starts, the result table after
    assert printed.index("Windows per class") < printed.index("Test groups 06")
    assert "Imbalance (largest/smallest training class)" in printed
    report = json.loads((bundle.path / "evaluation_report.json").read_text())
    assert report["split"] == {"train": ["01", "03", "05", "07"], "val": ["08"], "test": ["06"]}
    assert report["n"] > 250 and report["accuracy"] >= 0.5, report["accuracy"]  # chance is 1/6
    assert len(report["confusion_matrix"]) == 6 and set(report["per_class"]) == set(m.labels)
    bundle.verify()
    roles = {rel: (e.format, e.role) for rel, e in m.files.items()}
    assert roles["model.pt"] == ("pytorch", "checkpoint") and roles["eval_data.npz"] == ("npz", "data")
    for rel in ("label_encoder.json", "confusion.png", "curves.png"):
        assert rel in roles
    pre = m.input.preprocess
    assert m.input.shape == [1, 128, 6] and m.input.layout == "NTF"
    assert pre.features == ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    assert pre.window == 128 and pre.stride == 64 and len(pre.mean) == len(pre.std) == 6
    assert m.extra["arch"]["name"] == "seq_lstm" and m.extra["output"] == "logits"
    data = np.load(bundle.path / "eval_data.npz")
    assert data["x_val"].shape == (report["n"], 128, 6) and data["x_val"].dtype == np.float32
    # normalised with training statistics: the training windows are centred, the test person is not exactly
    assert np.abs(data["x_train"].reshape(-1, 6).mean(0)).max() < 0.15


def test_label_encoder_and_arch_rebuild(trained):
    bundle, _ = trained
    from edgekit.trainer.models import load_from_bundle
    from edgekit.trainer.sequence import predict_logits

    enc = json.loads((bundle.path / "label_encoder.json").read_text())
    assert enc["classes"] == bundle.manifest.labels
    model = load_from_bundle(bundle)
    data = np.load(bundle.path / "eval_data.npz")
    acc = float((predict_logits(model, data["x_val"]).argmax(1) == data["y_val"]).mean())
    assert acc == pytest.approx(bundle.manifest.metrics["accuracy"], abs=1e-6)


def _onnx(bundle, tmp: Path) -> Path:
    import torch

    from edgekit.trainer.models import load_from_bundle

    model = load_from_bundle(bundle)
    path = tmp / "har.onnx"
    torch.onnx.export(model, (torch.zeros(1, 128, 6),), str(path), input_names=["x"], output_names=["logits"],
                      dynamo=False)
    return path


def test_onnx_export_matches_pytorch_and_runs_on_the_device_side(trained, tmp_path, har_mini):
    import onnxruntime as ort

    from edgekit.edge.sequence import SequenceModel, evaluate_folder
    from edgekit.trainer.models import load_from_bundle
    from edgekit.trainer.sequence import predict_logits

    bundle, _ = trained
    sess = ort.InferenceSession(str(_onnx(bundle, tmp_path)), providers=["CPUExecutionProvider"])
    x = np.load(bundle.path / "eval_data.npz")["x_val"][:40]
    ref = predict_logits(load_from_bundle(bundle), x)
    got = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(got, ref, atol=1e-4)

    def predict(batch: np.ndarray) -> np.ndarray:
        z = sess.run(None, {"x": batch})[0]
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    model = SequenceModel(bundle.manifest, predict)
    csv = har_mini / "exp11_user06.csv"
    res = model.predict_csv(csv)
    # the stream gives exactly the CSV's windows, frame by frame
    from edgekit.trainer.seq_data import read_csv

    frames = read_csv(csv).frames[:128 + 64 * 5]
    preds = model.stream().run(frames)
    assert [p.start for p in preds] == list(res.starts[:6])
    np.testing.assert_allclose(np.stack([p.probs for p in preds]), res.probs[:6], atol=1e-6)
    # held-out person 06, windows cut the device's way: still far above chance
    folder = tmp_path / "person06"
    folder.mkdir()
    for f in ("exp11_user06.csv", "exp12_user06.csv"):
        (folder / f).symlink_to(har_mini / f)
    report = evaluate_folder(model, folder)
    assert report["n"] > 200 and report["accuracy"] >= 0.5


@pytest.mark.slow
def test_tflite_export_matches_pytorch(trained, tmp_path):
    import litert_torch
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.trainer.models import load_from_bundle
    from edgekit.trainer.sequence import predict_logits

    bundle, _ = trained
    model = load_from_bundle(bundle)
    path = tmp_path / "har.tflite"
    litert_torch.convert(model, (torch.zeros(1, 128, 6),)).export(str(path))
    it = Interpreter(str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = np.load(bundle.path / "eval_data.npz")["x_val"][:20]
    got = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        got.append(it.get_tensor(out["index"]).copy())
    np.testing.assert_allclose(np.concatenate(got), predict_logits(model, x), atol=1e-4)


def test_edge_sequence_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import edgekit.edge.sequence, edgekit.trainer.seq_data; "
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr


def test_cli_user_errors_are_one_sentence(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("t,acc_x,activity\n0,1,walk\n0.02,oops,walk\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "sequence", "--data", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "a.csv: line 3: feature 'acc_x' has the value 'oops'" in " ".join(err.split())
    with pytest.raises(SystemExit):
        main(["train", "sequence", "--data", str(tmp_path), "--arch", "lstn"])
    assert "Did you mean 'lstm'" in capsys.readouterr().err
