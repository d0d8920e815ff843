"""`edgekit data analyze`: the real waste-mini photos, broken layouts and broken files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.cli import main
from edgekit.trainer import images


def _jpeg(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def test_waste_mini_counts_sizes_and_advice(waste_mini: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "analysis.json"
    code, out = _run(["data", "analyze", str(waste_mini), "--json", str(report)], capsys)
    assert code == 0, out
    a = json.loads(report.read_text())
    on_disk = {c.name: len(list(c.glob("*.jpg"))) for c in waste_mini.iterdir() if c.is_dir()}
    assert a["counts"] == dict(sorted(on_disk.items()))
    assert a["total"] == sum(on_disk.values()) == 360
    assert a["size_min"] == a["size_median"] == a["size_max"] == [192, 256]
    assert a["bad"] == [] and a["balanced"] and a["balance_ratio"] == 1.0
    advice = " ".join(a["recommendations"])
    assert "at least 100 per class" in advice and "at least 500 images" in advice
    assert "cardboard" in out and "360" in out and "balanced" in out


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "no class subfolders"),
        ({"photo.jpg": "jpg", "glass/a.jpg": "jpg"}, "directly in"),
        ({"plastic bottle/a.jpg": "jpg"}, "spaces or special characters"),
        ({"vidrio&metal/a.jpg": "jpg"}, "spaces or special characters"),
        ({"glass/a.jpg": "jpg", "metal/notes.txt": "txt"}, "contain no images"),
    ],
    ids=["no-classes", "loose-images", "space-in-name", "special-char", "empty-class"],
)
def test_structural_errors_exit_2(tmp_path: Path, capsys, layout: dict[str, str], message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for rel, kind in layout.items():
        p = root / rel
        if kind == "jpg":
            _jpeg(p)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("hello")
    code, out = _run(["data", "analyze", str(root)], capsys)
    assert code == 2
    assert message in " ".join(out.split()), out


def test_corrupt_and_non_image_files_are_listed_with_reasons(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for i in range(3):
        _jpeg(root / "glass" / f"g{i}.jpg", seed=i)
        _jpeg(root / "metal" / f"m{i}.jpg", size=(64, 48), seed=10 + i)
    good = _jpeg(root / "metal" / "m3.jpg", seed=20)
    (root / "metal" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "glass" / "fake.jpg").write_bytes(b"<html>not a photo</html>")
    (root / "glass" / "README.txt").write_text("notes")
    report = tmp_path / "a.json"
    code, out = _run(["data", "analyze", str(root), "--json", str(report)], capsys)
    assert code == 0, out
    a = json.loads(report.read_text())
    reasons = dict(a["bad"])
    assert set(reasons) == {"metal/truncated.jpg", "glass/fake.jpg", "glass/README.txt"}
    assert "truncated" in reasons["metal/truncated.jpg"]
    assert "not a readable image" in reasons["glass/fake.jpg"]
    assert "not an image file" in reasons["glass/README.txt"]
    assert a["counts"] == {"glass": 3, "metal": 4}
    assert a["size_min"] == [40, 30] and a["size_max"] == [64, 48]
    assert a["balanced"] and a["balance_ratio"] == pytest.approx(4 / 3, abs=1e-3)  # 1.33 <= 1.5
    assert "truncated.jpg" in out and "unusable" in out


def test_imbalance_verdict(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(6):
        _jpeg(root / "paper" / f"p{i}.jpg", seed=i)
    _jpeg(root / "trash" / "t0.jpg", seed=99)
    a = images.analyze(root, workers=2)
    assert a.balance_ratio == 6.0 and not a.balanced
    assert any("imbalanced" in r and "trash" in r for r in a.recommendations)


def test_json_path_that_is_a_folder_fails_before_the_analysis(tmp_path: Path, capsys) -> None:
    _jpeg(tmp_path / "data" / "glass" / "g0.jpg")
    (tmp_path / "reports").mkdir()
    code, out = _run(["data", "analyze", str(tmp_path / "data"), "--json", str(tmp_path / "reports")], capsys)
    assert code == 2, out
    assert "reports, which is a folder; give a file" in " ".join(out.split())
    assert "glass" not in out  # no table printed before the error


def test_a_file_given_as_the_dataset_folder_is_named_as_a_file(tmp_path: Path, capsys) -> None:
    _jpeg(tmp_path / "photo.jpg")
    code, out = _run(["data", "analyze", str(tmp_path / "photo.jpg")], capsys)
    assert code == 2 and "photo.jpg is a file, not a folder." in " ".join(out.split()), out


def test_workers_below_one_is_one_sentence(tmp_path: Path, capsys) -> None:
    _jpeg(tmp_path / "data" / "glass" / "g0.jpg")
    code, out = _run(["data", "analyze", str(tmp_path / "data"), "--workers", "0"], capsys)
    assert code == 2 and "--workers" in out and "Traceback" not in out, out


def test_cli_exit_code_and_message_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _jpeg(tmp_path / "data" / "loose.jpg")
    out = subprocess.run([sys.executable, "-m", "edgekit", "data", "analyze", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 2
    assert "move each into" in out.stderr and "Traceback" not in out.stderr


def test_phone_and_odd_files_are_judged_right(tmp_path: Path) -> None:
    """A JPEG with a Motion Photo's video after it is whole; a 200-megapixel PNG is too large, not a crash;
    a class whose every file is broken makes the dataset unbalanced; 16-bit grey PNGs keep their tones."""
    import struct
    import zlib

    from edgekit.edge.preprocess import load_image

    root = tmp_path / "data"
    for i in range(3):
        _jpeg(root / "glass" / f"g{i}.jpg", seed=i)
    motion = root / "glass" / "motion.jpg"
    motion.write_bytes(_jpeg(tmp_path / "x.jpg", seed=7) + b"\0\0\0\x18ftypmp42" + os.urandom(4096))
    assert images.check_header(motion) == ((40, 30), None)
    (root / "metal").mkdir()
    ihdr = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    (root / "metal" / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    assert images.check_header(root / "metal" / "huge.png")[1] == "too large (more pixels than Pillow opens safely)"
    a = images.analyze(root, workers=2)
    assert a.counts == {"glass": 4, "metal": 0} and not a.balanced
    assert a.recommendations[0].startswith("metal: no usable photo")

    grey16 = (np.arange(64 * 256, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    rgb = np.asarray(load_image(tmp_path / "grey16.png"))
    np.testing.assert_array_equal(rgb[..., 0], (grey16 >> 8).astype(np.uint8))


def test_a_file_name_that_is_not_utf8_prints(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(2):
        _jpeg(root / "glass" / f"g{i}.jpg", seed=i)
    (root / "glass").joinpath(os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"not a photo")  # Latin-1 name
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "edgekit.cli", "data", "analyze", str(root)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "caf\\udce9.jpg" in out.stdout  # the undecodable byte, escaped
