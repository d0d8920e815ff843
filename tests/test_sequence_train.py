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
        # patch the backing field: undoing a patched `file` property would pin the console to this
        # moment's sys.stdout (pytest's capture) for every later test
        mp.setattr(console, "_file", out)
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
    print(f"held-out person 06: accuracy {report['accuracy']:.3f} on {report['n']} windows")
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


@pytest.fixture(scope="module")
def exported(trained):
    """The trained bundle after `edgekit export --format onnx,tflite` (the exporter's own command and gate)."""
    bundle, _ = trained
    with pytest.raises(SystemExit) as done:
        main(["export", str(bundle.path), "--format", "onnx,tflite", "--latency-runs", "3"])
    assert done.value.code in (0, None), "the accuracy gate rejected a format"
    return resolve(bundle.path)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_matches_pytorch(exported, fmt):
    from edgekit.edge.predictor import Predictor
    from edgekit.trainer.models import load_from_bundle
    from edgekit.trainer.sequence import predict_logits

    entry = next(e for e in exported.manifest.files.values() if e.role == "model" and e.format == fmt)
    assert entry.status == "accepted"
    x = np.load(exported.path / "eval_data.npz")["x_val"][:40]
    ref = _softmax(predict_logits(load_from_bundle(exported), x))
    got = Predictor.from_bundle(exported, fmt).predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.slow
def test_device_runner_over_csv_stream_and_folder(exported, tmp_path, har_mini):
    from edgekit.edge.sequence import SequenceModel, evaluate_folder
    from edgekit.trainer.seq_data import read_csv

    model = SequenceModel.from_bundle(exported, fmt="tflite")
    csv = har_mini / "exp11_user06.csv"
    res = model.predict_csv(csv)
    assert len(res.starts) == (len(read_csv(csv).frames) - 128) // 64 + 1
    # the stream gives exactly the CSV's windows, frame by frame, with the stored normalisation
    frames = read_csv(csv).frames[:128 + 64 * 5]
    preds = model.stream().run(frames)
    assert [p.start for p in preds] == list(res.starts[:6])
    np.testing.assert_allclose(np.stack([p.probs for p in preds]), res.probs[:6], atol=1e-6)
    assert [p.label for p in preds] == res.predicted(model.labels)[:6]
    # held-out person 06, windows cut the device's way (from frame 0, not per labeled run): far above chance
    folder = tmp_path / "person06"
    folder.mkdir()
    for f in ("exp11_user06.csv", "exp12_user06.csv"):
        (folder / f).symlink_to(har_mini / f)
    report = evaluate_folder(SequenceModel.from_bundle(exported, fmt="onnx"), folder)
    assert report["n"] > 200 and report["accuracy"] >= 0.5


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


def test_edgekit_eval_on_a_folder_of_csvs(exported, tmp_path, har_mini):
    """`edgekit eval BUNDLE --data DIR` cuts label-pure windows with the stored normalisation."""
    from edgekit.trainer.export import EvalConfig, eval_bundle

    folder = tmp_path / "person06"
    folder.mkdir()
    for f in ("exp11_user06.csv", "exp12_user06.csv"):
        (folder / f).symlink_to(har_mini / f)
    (folder / "broken.csv").write_text("t,acc_x\n1,2\n")  # reported and skipped, not a crash
    results = eval_bundle(EvalConfig(bundle=str(exported.path), data=str(folder), formats=["onnx"], latency_runs=3))
    assert len(results) == 1 and results[0].accuracy >= 0.5


@pytest.mark.parametrize("args, msg", [
    (["--dropout", "1.5"], "--dropout: Input should be less than 1."),
    (["--lr", "-1"], "--lr: Input should be greater than 0."),
    (["--patience", "-1"], "--patience: Input should be greater than or equal to 0."),
    (["--dense", "-5"], "--dense: Input should be greater than or equal to 0."),
    (["--train-stride", "0"], "--train-stride: Input should be greater than or equal to 1."),
    (["--units", "64,0"], "--units: Input should be greater than or equal to 1."),
    (["--seed", "-1"], "--seed: Input should be greater than or equal to 0."),
    (["--name", "../x"], "Bundle name '../x' must start with a letter or digit"),
    (["--test-groups", "B,A", "--val-groups", "A"], "--val-groups and --test-groups both name A: early stopping"),
])
def test_bad_options_stop_before_any_data_is_read(tmp_path, capsys, args, msg):
    """Each is one sentence and exit 2 from the config alone: the data folder does not even exist."""
    with pytest.raises(SystemExit) as e:
        main(["train", "sequence", "--data", str(tmp_path / "not-there"), *args])
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert msg in err and "Traceback" not in err and "not-there" not in err


def test_user_column_missing_from_every_file_is_one_error_not_a_warning_per_file(tmp_path, capsys):
    for n in range(3):
        (tmp_path / f"rec{n}.csv").write_text("t,acc_x,activity\n0,1,walk\n0.02,2,walk\n")
    for args, msg in ((["--label-col", "nope"], "has a label column 'nope' (columns of rec0.csv: t, acc_x, activity)"),
                      (["--features", "acc_x,foo"], "has a feature column 'foo' (columns of rec0.csv:"),
                      (["--group-by", "nocol"], "has a group column 'nocol'"),
                      (["--group-by", "file:user("], "'file:user(' is not a valid regular expression"),
                      (["--group-by", r"file:user(\d+)"], r"pattern 'user(\d+)' matches no file name")):
        with pytest.raises(SystemExit) as e:
            main(["train", "sequence", "--data", str(tmp_path), *args])
        err = " ".join(capsys.readouterr().err.split())
        assert e.value.code == 2 and msg in err, err
        assert "skipped" not in err, err  # no warning per file before the error
