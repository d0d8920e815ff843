"""The bundle format: write, load, resolve, verify, atomic manifest updates."""

from __future__ import annotations

import json

import pytest

from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess, resolve
from edgekit.errors import UserError, VerificationError


def _make(root, name="waste", payload=b"weights"):
    w = BundleWriter(name, root=root)
    w.add("model.pt", "pytorch", "checkpoint").write_bytes(payload)
    w.add("notes/history.json", "json", "report").parent.mkdir(parents=True)
    (w.dir / "notes/history.json").write_text("[]")
    pre = Preprocess(color="RGB", resize=(96, 96), scale=1 / 127.5, offset=-1)
    spec = InputSpec(shape=[1, 3, 96, 96], preprocess=pre)
    return w.commit(task="image-classification", labels=["glass", "paper"], input=spec, metrics={"val_accuracy": 0.9})


def test_write_load_roundtrip(tmp_path):
    b = _make(tmp_path)
    assert b.path == tmp_path / "waste" / "v1"
    again = Bundle.load(b.path)
    assert again.manifest.labels == ["glass", "paper"]
    assert again.manifest.input.preprocess.resize == (96, 96)
    assert again.manifest.files["model.pt"].size == len(b"weights")
    assert again.manifest.provenance.host
    again.verify()
    # no staging folders left behind
    assert [p.name for p in (tmp_path / "waste").iterdir()] == ["v1"]


def test_versions_increment_and_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_MODELS", str(tmp_path))
    _make(tmp_path)
    b2 = _make(tmp_path, payload=b"better")
    assert b2.version == "v2"
    assert resolve("waste").version == "v2"
    assert resolve(tmp_path / "waste" / "v1").version == "v1"
    assert resolve("waste/v1").version == "v1"
    with pytest.raises(UserError, match="No bundle found"):
        resolve("nothing-here")


def test_tampered_file_fails_verification(tmp_path):
    b = _make(tmp_path)
    (b.path / "model.pt").write_bytes(b"weightz")  # same size, other content
    with pytest.raises(VerificationError, match="model.pt does not match its sha256"):
        b.verify()
    (b.path / "model.pt").unlink()
    with pytest.raises(VerificationError, match="model.pt is missing"):
        b.verify()


def test_manifest_rejects_unknown_fields_and_bad_task(tmp_path):
    b = _make(tmp_path)
    data = json.loads((b.path / "manifest.json").read_text())
    data["surprise"] = 1
    (b.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="not a valid manifest"):
        Bundle.load(b.path)
    data.pop("surprise")
    data["task"] = "regression"
    (b.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="task"):
        Bundle.load(b.path)
    with pytest.raises(UserError, match="not a valid manifest: task: "):  # names the field, not just the path
        Bundle.load(b.path)


def test_add_file_updates_manifest_atomically(tmp_path):
    b = _make(tmp_path)
    (b.path / "model.onnx").write_bytes(b"onnx")
    b.add_file("model.onnx", "onnx", "model", status="accepted")
    again = Bundle.load(b.path)
    assert again.model_file("onnx") == b.path / "model.onnx"
    assert again.formats() == ["onnx"]
    assert not list(b.path.glob(".manifest.json.*"))
    again.verify()


def test_bad_bundle_names(tmp_path):
    for bad in ["", "has space", "../up", "-dash"]:
        with pytest.raises(UserError, match="Bundle name"):
            BundleWriter(bad, root=tmp_path)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from edgekit import atomic

    atomic.write_text(tmp_path / "x.env", "A=1\n")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.env").stat().st_mode & 0o777 == 0o666 & ~mask


def test_bundle_containing_a_model_file(tmp_path):
    b = _make(tmp_path)
    (b.path / "sub").mkdir()
    (b.path / "sub" / "m.onnx").write_bytes(b"x")
    assert Bundle.containing(b.path / "model.pt").path == b.path
    assert Bundle.containing(b.path / "sub" / "m.onnx").path == b.path
    (tmp_path / "loose.onnx").write_bytes(b"x")
    assert Bundle.containing(tmp_path / "loose.onnx") is None


def test_two_writers_finishing_together_get_two_versions(tmp_path):
    a = BundleWriter("race", root=tmp_path)
    b = BundleWriter("race", root=tmp_path)  # both see v1 free
    assert a.version == b.version == "v1"
    for w in (a, b):
        (w.dir / "m.onnx").write_bytes(w.dir.name.encode())
        w.add("m.onnx", "onnx", "model")
    first = a.commit(task="wakeword", labels=["x"], input=InputSpec(shape=[1, 16, 96], layout="NTF"))
    second = b.commit(task="wakeword", labels=["x"], input=InputSpec(shape=[1, 16, 96], layout="NTF"))
    assert (first.version, second.version) == ("v1", "v2")
    assert Bundle.load(tmp_path / "race" / "v2").manifest.version == "v2"
    Bundle.load(tmp_path / "race" / "v2").verify()  # its own model, not a mix of the two


def test_a_manifest_path_that_leaves_the_bundle_is_refused(tmp_path):
    w = BundleWriter("esc", root=tmp_path)
    (w.dir / "m.onnx").write_bytes(b"x")
    w.add("m.onnx", "onnx", "model")
    bundle = w.commit(task="wakeword", labels=["x"], input=InputSpec(shape=[1, 16, 96], layout="NTF"))
    (tmp_path / "outside.onnx").write_bytes(b"x")
    data = json.loads((bundle.path / "manifest.json").read_text())
    data["files"]["../../outside.onnx"] = data["files"].pop("m.onnx")
    (bundle.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="leaves the bundle folder"):
        Bundle.load(bundle.path)


def test_two_copies_of_a_bundle_editing_the_manifest_keep_both_changes(tmp_path):
    w = BundleWriter("two", root=tmp_path)
    (w.dir / "m.pt").write_bytes(b"x")
    w.add("m.pt", "pytorch", "checkpoint")
    path = w.commit(task="wakeword", labels=["x"], input=InputSpec(shape=[1, 16, 96], layout="NTF")).path
    a, b = Bundle.load(path), Bundle.load(path)  # two exports of one bundle, say
    (path / "m.onnx").write_bytes(b"onnx")
    (path / "m.tflite").write_bytes(b"tflite")
    a.add_file("m.onnx", "onnx", "model")
    b.add_file("m.tflite", "tflite", "model")  # b's copy predates a's change
    assert sorted(Bundle.load(path).manifest.files) == ["m.onnx", "m.pt", "m.tflite"]
    Bundle.load(path).verify()
