"""The Docker service for the Pi: compose file and Dockerfile checked, the container command run as a process.

No Docker engine runs here; `docker compose config` runs when the Compose plugin is installed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from runtime_service import free_port, wait_for

from edgekit.bundle import BundleWriter, InputSpec, Preprocess

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "deploy" / "docker"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the runtime stage, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    last_from = max(i for i, (w, _) in enumerate(out) if w == "FROM")
    return out[last_from:]


def _env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in instructions:
        if word == "ENV":
            env.update(dict(tok.split("=", 1) for tok in shlex.split(rest)))
    return env


def _exec_form(rest: str) -> list[str]:
    return json.loads(rest[rest.index("["):])


def test_compose_file_has_what_the_pi_needs():
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    svc = compose["services"]["edgekit"]
    assert svc["env_file"] == ".env" and svc["restart"] == "unless-stopped"
    assert "/dev/snd:/dev/snd" in svc["devices"]
    assert any(d.startswith("/dev/video") for d in svc["devices"]) and any("/dev/media" in d for d in svc["devices"])
    assert "/run/udev:/run/udev:ro" in svc["volumes"]
    # releases, current symlink and .env, read-only, at the device root's own path (deploy writes EDGEKIT_ROOT)
    assert ".:${EDGEKIT_ROOT:-/opt/edgekit}:ro" in svc["volumes"]
    data = [v for v in svc["volumes"] if v.endswith(":/data")]
    assert data and data[0].split(":")[0] in compose["volumes"]
    assert svc["network_mode"] == "host" and "ports" not in svc  # the API binds 127.0.0.1 unless configured
    assert "EDGEKIT_API_HOST" not in _env_of(dockerfile_instructions())
    assert svc["platform"] == "linux/arm64"
    assert (REPO / svc["build"]["dockerfile"]).is_file()


def test_dockerfile_is_slim_arm64_edge_only_non_root():
    tomllib = pytest.importorskip("tomllib")

    text = (DOCKER / "Dockerfile").read_text()
    assert "python:3.11-slim-bookworm" in text and "linux/arm64" in text
    assert '".[edge]"' in text and "portaudio" in text
    code = " ".join(rest for _, rest in dockerfile_instructions())
    assert not any(heavy in code for heavy in ("[train]", "[all]", "torch", "tensorflow", "fabric"))
    edge = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["edge"]
    assert not any(heavy in dep for dep in edge for heavy in ("torch", "tensorflow", "fabric"))
    runtime = dockerfile_instructions()
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(word == "HEALTHCHECK" and "/health" in rest for word, rest in runtime)
    assert _exec_form(next(rest for word, rest in runtime if word == "CMD")) == ["edgekit", "serve"]


def test_docker_compose_config_validates(tmp_path):
    if shutil.which("docker") is None:
        pytest.skip("no docker client here: `docker compose config` cannot run")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker client here has no Compose plugin: `docker compose config` cannot run")
    shutil.copy(DOCKER / "compose.yml", tmp_path / "compose.yml")
    (tmp_path / ".env").write_text("MODEL_PATH=/opt/edgekit/current/model.onnx\n")
    out = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "EDGEKIT_SOURCE": str(REPO)})
    assert out.returncode == 0, out.stderr


def _device_root(tmp: Path, oww_dir: Path) -> Path:
    """The layout `edgekit deploy` leaves on a device: releases/<release>/, a `current` symlink, `.env`."""
    root = tmp / "device"
    w = BundleWriter("alexa", root=tmp / "models", version="v1")
    w.copy_in(oww_dir / "alexa_v0.1.onnx", "alexa_v0.1.onnx", "onnx", "model")
    bundle = w.commit(task="wakeword", labels=["alexa"], thresholds={"threshold": 0.5},
                      input=InputSpec(shape=[1, 16, 96], layout="NTF",
                                      preprocess=Preprocess(sample_rate=16000, frame_size=1280, window=16)))
    (root / "releases").mkdir(parents=True)
    shutil.copytree(bundle.path, root / "releases" / "alexa-v1-onnx")
    (root / "current").symlink_to(Path("releases") / "alexa-v1-onnx")
    (root / ".env").write_text(
        f"OPENWAKEWORD_MODEL_PATHS={root}/current/alexa_v0.1.onnx\nMODEL_FRAMEWORK=onnx\n"
        f"EDGEKIT_FEATURE_DIR={oww_dir}\nEDGEKIT_AUDIO_SOURCE=wav\nEDGEKIT_AUDIO_PATH={oww_dir / 'alexa_test.wav'}\n")
    return root


def _local(argv: list[str]) -> list[str]:
    """The container's argv with its programs taken from this environment (same names, same arguments)."""
    bindir = Path(sys.executable).parent
    return [sys.executable if a == "python" else str(bindir / a) if i == 0 else a for i, a in enumerate(argv)]


def test_container_command_serves_the_deployed_release(oww_dir, tmp_path):
    runtime = dockerfile_instructions()
    cmd = _local(_exec_form(next(rest for word, rest in runtime if word == "CMD")))
    health = _local(_exec_form(next(rest for word, rest in runtime if word == "HEALTHCHECK")))
    root = _device_root(tmp_path, oww_dir)
    port = free_port()
    from dotenv import dotenv_values

    env = {**os.environ, **_env_of(runtime), **dotenv_values(root / ".env"),  # compose: env_file: .env
           "EDGEKIT_API_PORT": str(port), "EDGEKIT_DATA_DIR": str(tmp_path / "data")}
    with open(tmp_path / "container.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        body = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json(), 60, "/health")
        assert "alexa/v1" in body["versions"]  # what the deploy health check waits for
        assert subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/events", timeout=5).json()["events"], 30, "a detection")
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends (STOPSIGNAL)
        proc.wait(20)
    assert proc.returncode == 0, (tmp_path / "container.log").read_text()
    assert subprocess.run(health, env=env, capture_output=True, timeout=30).returncode != 0  # and it can fail
