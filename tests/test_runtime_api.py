"""The device HTTP API over real HTTP: `edgekit serve` as a subprocess with an exported ONNX classifier."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from runtime_service import LABELS, export_tiny_classifier, running_service

from edgekit.bundle import Bundle

TOKEN = "s3cret-token"
MAX_UPLOAD = 64 * 1024


def _shared_dir() -> Path | None:
    p = Path(os.environ.get("EDGEKIT_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
    return p if (p / "data" / "waste-mini").is_dir() else None


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Bundle:
    shared = _shared_dir()
    if shared is None:
        pytest.skip("waste-mini not found in the shared data folder")
    return export_tiny_classifier(tmp_path_factory.mktemp("models"), shared / "data" / "waste-mini")


@pytest.fixture(scope="module")
def camera_folder(tmp_path_factory) -> Path:
    shared = _shared_dir()
    if shared is None:
        pytest.skip("waste-mini not found in the shared data folder")
    folder = tmp_path_factory.mktemp("camera")
    for cls in ("glass", "paper", "trash"):
        first = sorted((shared / "data" / "waste-mini" / cls).glob("*.jpg"))[0]
        (folder / first.name).symlink_to(first)
    return folder


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_bundle, camera_folder):
    tmp = tmp_path_factory.mktemp("serve")
    env = {"MODEL_PATH": str(tiny_bundle.path), "EDGEKIT_API_TOKEN": TOKEN,
           "EDGEKIT_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "EDGEKIT_CAMERA_SOURCE": "folder",
           "EDGEKIT_CAMERA": str(camera_folder), "EDGEKIT_CAMERA_FPS": "0", "EDGEKIT_SAVE_FRAMES": "true"}
    with running_service(tmp, env) as svc:
        yield svc
    assert svc.proc.returncode == 0, svc.output()


def _post(api, content: bytes, filename: str = "x.jpg", content_type: str = "image/jpeg", **kw) -> httpx.Response:
    headers = kw.pop("headers", api.headers)
    return httpx.post(api.url + "/predict", files={"file": (filename, content, content_type)}, headers=headers,
                      timeout=20, **kw)


def test_predict_a_waste_jpeg_matches_the_predictor(api, tiny_bundle, camera_folder):
    from edgekit.edge.predictor import Predictor

    jpeg = sorted(camera_folder.iterdir())[0]
    r = _post(api, jpeg.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "tiny-waste/v1"
    assert body["label"] == body["top"] == max(body["scores"], key=body["scores"].get)
    assert set(body["scores"]) == set(LABELS)
    assert abs(sum(body["scores"].values()) - 1) < 1e-4
    assert 0 < body["latency_ms"] <= body["total_ms"]
    expected = Predictor.from_bundle(tiny_bundle, fmt="onnx").predict_image(Image.open(jpeg))[0]
    np.testing.assert_allclose([body["scores"][k] for k in LABELS], expected, rtol=1e-4, atol=1e-6)
    event = [e for e in api.events("classification") if e["id"] == body["event_id"]]
    assert event and event[0]["data"]["source"] == "api"


def _noise_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_uploads_are_413_415_422(api, camera_folder):
    big = _noise_png(256)
    assert len(big) > MAX_UPLOAD
    assert _post(api, big, "big.png", "image/png").status_code == 413
    assert _post(api, b"hello, not an image", "notes.txt", "text/plain").status_code == 415
    assert _post(api, b"%PDF-1.4 ...", "doc.pdf", "application/pdf").status_code == 415
    jpeg = sorted(camera_folder.iterdir())[0].read_bytes()
    assert _post(api, jpeg[: len(jpeg) // 3]).status_code == 422  # truncated JPEG
    assert _post(api, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "x.png", "image/png").status_code == 422
    r = httpx.post(api.url + "/predict", data={"other": "field"}, headers=api.headers, timeout=20)
    assert r.status_code == 422
    health = api.get("/health")
    assert health.status_code == 200, health.text  # bad uploads do not hurt the service


def test_a_chunked_upload_is_refused_once_it_passes_the_limit(api):
    """Without Content-Length the body is counted as it arrives: 413 after about the limit, not after the
    multipart parser has spooled whatever the client sends to the SD card."""
    import select
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(api.url)
    chunk = lambda data: f"{len(data):x}\r\n".encode() + data + b"\r\n"  # noqa: E731
    sent, block, answer = 0, b"\xff" * 16384, b""
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: pi\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=B\r\n\r\n".encode())
        sock.sendall(chunk(b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'))
        while sent < 256 * MAX_UPLOAD and not select.select([sock], [], [], 0.002)[0]:
            try:
                sock.sendall(chunk(block))
            except OSError:  # the server answered and closed while we were sending
                break
            sent += len(block)
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:200])
    assert sent < 32 * MAX_UPLOAD, sent  # 2 MiB at most for a 64 KiB limit (socket buffers included)
    assert api.get("/health").status_code == 200


def test_predict_turns_phone_photos_upright_and_refuses_pixel_bombs(api, tiny_bundle, camera_folder):
    import struct
    import zlib

    from edgekit.edge.predictor import Predictor

    photo = Image.open(sorted(camera_folder.iterdir())[0]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: stored turned, shown rotated 90 degrees clockwise, as phones do
    buf = io.BytesIO()
    photo.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    r = _post(api, buf.getvalue())
    assert r.status_code == 200, r.text
    upright = Predictor.from_bundle(tiny_bundle, fmt="onnx").predict_image(buf.getvalue())[0]  # applies EXIF
    np.testing.assert_allclose([r.json()["scores"][k] for k in LABELS], upright, rtol=1e-4, atol=1e-6)

    def png_chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)  # 200 Mpx claimed in a 57-byte file
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")
    r = _post(api, bomb, "bomb.png", "image/png")
    assert r.status_code == 413 and "pixels" in r.json()["detail"], r.text


def test_token_is_required_except_for_health(api):
    for path in ("/events", "/metrics"):
        assert httpx.get(api.url + path, timeout=10).status_code == 401
        assert httpx.get(api.url + path, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        assert api.get(path).status_code == 200
    assert _post(api, b"x", headers={}).status_code == 401
    assert httpx.get(api.url + "/health", timeout=10).status_code == 200


def test_camera_folder_is_classified_with_saved_frames(api, camera_folder, tmp_path_factory):
    health = api.wait_source("camera", "finished")
    assert health["models"]["classifier"] == "tiny-waste/v1"
    camera = [e for e in api.events("classification") if e["data"]["source"] == "camera"]
    assert len(camera) == len(list(camera_folder.iterdir()))
    data_dir = Path(api.log.parent / "data")
    for e in camera:
        assert e["label"] in LABELS and (data_dir / e["image_path"]).is_file()
    later = api.get("/events", params={"since": camera[-1]["time"], "kind": "classification"}).json()["events"]
    assert all(e["time"] > camera[-1]["time"] for e in later)
    metrics = api.get("/metrics").text
    assert 'edgekit_inference_latency_seconds_count{task="classify"}' in metrics
    assert sum(int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('edgekit_classifications_total{') and 'source="camera"' in line) == len(camera)
    assert api.get("/events", params={"since": "yesterday"}).status_code == 422
    r = httpx.post(api.url + "/capture", headers=api.headers, timeout=20)
    assert r.status_code == 409 and "finished" in r.json()["detail"]


def test_openapi_fuzz_never_gives_5xx(api):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")

    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy())
    def fuzz(case) -> None:
        response = case.call(base_url=api.url, headers=api.headers, timeout=20)
        assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"

    fuzz()
    assert api.get("/health").status_code == 200
