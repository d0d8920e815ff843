"""Deploy to `local:PATH` (the same agent and steps as over SSH), plus the pure parts: .env and targets."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from sshd import HEALTH_CMD, cli, device_dir, make_bundle, wide_console  # noqa: F401 - wide_console is autouse

from edgekit.deploy import api, envfile
from edgekit.deploy.device import DeployError, Device
from edgekit.deploy.targets import Inventory, expand, load_inventory, parse_target
from edgekit.deploy.transport import LocalTransport
from edgekit.errors import UserError

RUN = ["--restart", "sh restart.sh", "--health", HEALTH_CMD, "--health-timeout", "1"]
KW = {"restart": "sh restart.sh", "health": HEALTH_CMD, "health_timeout": 1}


def test_env_merge_keeps_what_the_user_wrote():
    text = '# my settings\nexport API_TOKEN="s3cret value"\nMODEL_PATH=/old/model.onnx\n\nDATA_DIR=/data # local\n'
    merged = envfile.merge(text, {"MODEL_PATH": "/opt/edgekit/current/m.onnx", "MODEL_FRAMEWORK": "onnx"})
    lines = merged.splitlines()
    assert lines[:2] == ["# my settings", 'export API_TOKEN="s3cret value"']
    assert lines[2] == "MODEL_PATH=/opt/edgekit/current/m.onnx"  # edited in place, order kept
    assert "DATA_DIR=/data # local" in lines and lines[-1] == "MODEL_FRAMEWORK=onnx"
    parsed = envfile.parse(merged)
    assert parsed["API_TOKEN"] == "s3cret value" and parsed["DATA_DIR"] == "/data"
    assert envfile.merge(merged, {"MODEL_FRAMEWORK": "onnx"}) == merged  # idempotent
    import io

    from dotenv import dotenv_values

    for value in ('a "b" c', "back\\slash", "", "#not-a-comment", "pa$$word", "t0k$HOMEx", 'say "$5"'):
        text = envfile.merge("", {"X": value})
        assert envfile.parse(text)["X"] == value
        assert dotenv_values(stream=io.StringIO(text))["X"] == value  # what `edgekit serve --env-file` reads
        assert "$" not in value or f"X='{value}'" in text  # single quotes: Docker Compose expands no $VAR there
    for bad in ("it's $5", "t0k${HOME}"):
        with pytest.raises(UserError, match="cannot hold"):
            envfile.merge("", {"X": bad})
    with pytest.raises(UserError):
        envfile.merge("", {"BAD KEY": "1"})
    with pytest.raises(UserError, match="KEY=VALUE"):
        envfile.parse_assignments(["NOVALUE"])


def test_targets_and_inventory_groups():
    t = parse_target("pi@raspberry:2222")
    assert (t.kind, t.user, t.host, t.port, t.root) == ("ssh", "pi", "raspberry", 2222, "/opt/edgekit")
    assert parse_target("local:dev").kind == "local" and Path(parse_target("local:dev").root).is_absolute()
    for bad in ("pi@host:99999", "pi@ho st", "local:"):
        with pytest.raises(UserError):
            parse_target(bad)
    inv = Inventory(root="/srv/ek", groups={"kitchen": ["pi@a", "pi@b:2200"], "lab": ["pi@a"]})
    hosts = expand(["kitchen", "lab", "pi@c"], inv)
    assert [h.label for h in hosts] == ["pi@a", "pi@b:2200", "pi@c"] and hosts[0].root == "/srv/ek"
    with pytest.raises(UserError, match="Did you mean 'kitchen'"):
        expand(["kitchn"], inv)


def test_inventory_example_in_the_docstring_loads(tmp_path):
    """The hosts.toml example shown in edgekit.deploy.targets is real: it parses and expands."""
    import textwrap

    from edgekit.deploy import targets

    example = textwrap.dedent(targets.__doc__.split("Inventory example:\n", 1)[1].split('"""')[0])
    (tmp_path / "hosts.toml").write_text(example)
    inv = load_inventory(tmp_path / "hosts.toml")
    hosts = expand(["kitchen"], inv)
    assert [h.label for h in hosts] == ["pi@10.0.0.5", "pi@10.0.0.6:2222", "pi@10.0.0.7"]
    assert [h.root for h in hosts] == ["/opt/edgekit", "/opt/edgekit", "/srv/edgekit"]


def test_local_deploy_redeploy_rollback_status(tmp_path, capsys):
    models = tmp_path / "models"
    b1, b2, b3 = (make_bundle(models, version=v) for v in ("v1", "v2", "v3"))
    dev = device_dir(tmp_path / "dev")
    (dev / ".env").write_text("API_TOKEN=keepme\n")
    target = f"local:{dev}"

    assert cli("deploy", target, str(b1.path), "--format", "onnx", *RUN, "--env", "CAMERA_FPS=2") == 0
    assert os.readlink(dev / "current") == "releases/waste-v1-onnx"  # relative: works inside a container too
    env = envfile.parse((dev / ".env").read_text())
    assert env == {"API_TOKEN": "keepme", "MODEL_PATH": f"{dev}/current/model.onnx", "MODEL_FRAMEWORK": "onnx",
                   "EDGEKIT_ROOT": str(dev), "CAMERA_FPS": "2"}
    assert (dev / "current" / "model.onnx").read_bytes() == (b1.path / "model.onnx").read_bytes()
    assert not (dev / "current" / "checkpoint.pt").exists()  # only the deployed format travels

    again = api.deploy([target], b1, fmt="onnx", env={"CAMERA_FPS": "2"}, **KW)
    assert again.results[0].status == "skipped-identical" and again.results[0].uploaded == 0

    (dev / "broken").write_text("waste/v2\n")
    assert cli("deploy", target, str(b2.path), "-f", "onnx", *RUN) == 1
    out = capsys.readouterr().out
    assert "rolled-back" in out and "health check failed" in out
    assert os.readlink(dev / "current") == "releases/waste-v1-onnx" and (dev / "running").read_text() == "waste/v1\n"
    assert not list((dev / "releases").glob("*.tmp"))

    (dev / "broken").unlink()
    for b in (b2, b3):
        assert api.deploy([target], b, fmt="onnx", keep=2, **KW).ok
    assert sorted(p.name for p in (dev / "releases").iterdir()) == ["waste-v2-onnx", "waste-v3-onnx"]

    assert cli("rollback", target, "--restart", "sh restart.sh", "--health", HEALTH_CMD) == 0
    assert os.readlink(dev / "current") == "releases/waste-v2-onnx" and (dev / "running").read_text() == "waste/v2\n"
    capsys.readouterr()
    assert cli("status", target, "--health", HEALTH_CMD) == 0
    out = capsys.readouterr().out
    assert "waste-v2-onnx" in out and "waste-v3-onnx" in out and "healthy" in out


def test_env_values_are_checked_against_the_device_settings_before_upload(tmp_path, capsys, monkeypatch):
    b1 = make_bundle(tmp_path / "models")
    dev = device_dir(tmp_path / "dev")
    (dev / ".env").write_text("API_TOKEN=keepme\n")
    for item, words in (("OPENWAKEWORD_THRESHOLD=abc", "Setting OPENWAKEWORD_THRESHOLD in --env is invalid"),
                        ("EDGEKIT_CLASS_THRESHOLDS=glass:0.9", "label=value"),
                        ("OPENWAKEWORD_TRESHOLD=0.6", "did you mean OPENWAKEWORD_THRESHOLD")):
        assert cli("deploy", f"local:{dev}", str(b1.path), *RUN, "-e", item) == 2
        assert words in " ".join(capsys.readouterr().err.split())
    assert not (dev / "releases").exists() and (dev / ".env").read_text() == "API_TOKEN=keepme\n"
    with pytest.raises(UserError, match="OPENWAKEWORD_PATIENCE is invalid"):
        api.apply_env([f"local:{dev}"], {"OPENWAKEWORD_PATIENCE": "0"}, restart="true", health="true")
    assert (dev / ".env").read_text() == "API_TOKEN=keepme\n"
    # this machine's environment is not the device's: a bad value here does not block a good one there
    monkeypatch.setenv("OPENWAKEWORD_THRESHOLD", "abc")
    assert cli("deploy", f"local:{dev}", str(b1.path), *RUN, "-e", "OPENWAKEWORD_THRESHOLD=0.6", "-e", "MY_TOOL=x") == 0
    assert envfile.parse((dev / ".env").read_text())["OPENWAKEWORD_THRESHOLD"] == "0.6"


def test_rejected_model_needs_force_and_wakeword_env(tmp_path, capsys):
    bad = make_bundle(tmp_path / "models", name="alexa", status="rejected", task="wakeword")
    dev = device_dir(tmp_path / "dev")
    (dev / ".env").write_text("MODEL_PATH=/opt/edgekit/classifier.onnx\n")
    with pytest.raises(UserError, match="rejected by the export gate"):
        api.deploy([f"local:{dev}"], bad, fmt="onnx", **KW)
    assert cli("deploy", f"local:{dev}", str(bad.path), "--format", "onx") == 2
    assert "Did you mean 'onnx'" in capsys.readouterr().err
    assert not (dev / "releases").exists()
    assert api.deploy([f"local:{dev}"], bad, fmt="tflite-int8", force=True, slot="wakeword", **{
        **KW, "health": 'test -f "$EDGEKIT_ROOT/wakeword/model_int8.tflite"'}).ok
    env = envfile.parse((dev / ".env").read_text())
    assert env["OPENWAKEWORD_MODEL_PATHS"] == f"{dev}/wakeword/model_int8.tflite"
    assert env["OPENWAKEWORD_THRESHOLD"] == "0.62" and env["MODEL_FRAMEWORK"] == "tflite"
    assert env["MODEL_PATH"] == "/opt/edgekit/classifier.onnx"  # the other model's setting is untouched


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("members", [
    [(_member("../evil.txt"), b"x")],
    [(_member("/tmp/evil-abs.txt"), b"x")],
    [(_member("ok/../../evil.txt"), b"x")],
    [(_member("escape", tarfile.SYMTYPE, "../../outside"), None)],
    [(_member("abs-link", tarfile.SYMTYPE, "/etc/passwd"), None)],
    [(_member("hard", tarfile.LNKTYPE, "../../etc/passwd"), None)],
    [(_member("fifo", tarfile.FIFOTYPE), None)],
    # each link alone stays inside the folder; followed one after the other they climb out of it
    [(_member("d/e/s", tarfile.SYMTYPE, ".."), None), (_member("d/e/s/t", tarfile.SYMTYPE, ".."), None),
     (_member("d/e/s/t/u", tarfile.SYMTYPE, ".."), None), (_member("d/e/s/t/u/escaped.txt"), b"x")],
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-out", "symlink-abs", "hardlink-out", "fifo", "link-chain"])
def test_path_traversal_tarball_refused(tmp_path, members):
    import hashlib

    dev = device_dir(tmp_path / "dev")
    device = Device(LocalTransport(parse_target(f"local:{dev}")), str(dev))
    device.install_agent()
    data = _tar([*members, (_member(".release.json"), json.dumps({"files": []}).encode()),
                 (_member("manifest.json"), b'{"files": {}}')])
    upload = dev / ".edgekit" / "incoming" / "evil.part"
    upload.write_bytes(data)
    with pytest.raises(DeployError, match=r"tarball (member|link) .* refused"):
        device.call("apply", f"--tar={upload}", f"--sha256={hashlib.sha256(data).hexdigest()}",
                    "--release=evil-v1-onnx")  # install only: no slot, no check
    assert not (dev / "releases" / "evil-v1-onnx").exists() and not (dev / "releases" / "evil-v1-onnx.tmp").exists()
    assert not (tmp_path / "evil.txt").exists() and not (dev / "evil.txt").exists()


def test_apply_env_restores_old_env_when_unhealthy(tmp_path):
    b1 = make_bundle(tmp_path / "models")
    dev = device_dir(tmp_path / "dev")
    assert api.deploy([f"local:{dev}"], b1, **KW).ok
    before = (dev / ".env").read_text()
    good = api.apply_env([f"local:{dev}"], {"OPENWAKEWORD_THRESHOLD": "0.7"}, restart="sh restart.sh",
                         health=HEALTH_CMD)
    assert good.ok and envfile.parse((dev / ".env").read_text())["OPENWAKEWORD_THRESHOLD"] == "0.7"
    assert envfile.parse((dev / ".env").read_text())["MODEL_PATH"] == envfile.parse(before)["MODEL_PATH"]
    after_good = (dev / ".env").read_text()
    check = 'grep -q "OPENWAKEWORD_THRESHOLD=0.7$" .env'  # healthy only with the old value
    bad = api.apply_env([f"local:{dev}"], {"OPENWAKEWORD_THRESHOLD": "0.1"}, restart="true", health=check,
                        health_timeout=0.5)
    assert not bad.ok and bad.results[0].status == "rolled-back"
    assert (dev / ".env").read_text() == after_good


def test_apply_env_needs_a_deployment_and_creates_no_folder(tmp_path):
    typo = tmp_path / "devv"
    res = api.apply_env([f"local:{typo}"], {"OPENWAKEWORD_THRESHOLD": "0.7"}, restart="true", health="true")
    assert not res.ok and "no edgekit deployment or .env" in res.results[0].reason
    assert not typo.exists()


def test_default_restart_installs_compose_file_once(tmp_path, monkeypatch):
    """No Docker engine runs here: a `docker` script on PATH stands in for it and records its calls."""
    from edgekit.deploy import releases

    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  edgekit:\n    image: edgekit-runtime\n")
    monkeypatch.setattr(releases, "COMPOSE_FILE", compose)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\necho "$PWD: $*" >> docker.log\nsh restart.sh\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    dev = device_dir(tmp_path / "dev")
    b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
    assert api.deploy([f"local:{dev}"], b1, health=HEALTH_CMD).ok
    assert (dev / "compose.yml").read_text() == compose.read_text()
    (dev / "compose.yml").write_text("# my own edits\n" + compose.read_text())
    assert api.deploy([f"local:{dev}"], b2, health=HEALTH_CMD).ok
    assert (dev / "compose.yml").read_text().startswith("# my own edits")  # never overwritten
    assert (dev / "docker.log").read_text().splitlines() == [f"{dev}: compose up -d"] * 2

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a device without Docker is refused before any change
    b3 = make_bundle(tmp_path / "models", version="v3")
    res = api.deploy([f"local:{dev}"], b3, health=HEALTH_CMD).results[0]
    assert res.status == "failed" and "Docker is not installed" in res.reason
    assert os.readlink(dev / "current") == "releases/waste-v2-tflite-int8"


def test_health_url_must_report_the_new_version(tmp_path):
    """The default kind of check: GET /health answers 200 and names `bundle/version` (as `edgekit serve` does)."""
    import http.server
    import threading

    dev = device_dir(tmp_path / "dev")

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            running = (dev / "running").read_text().strip() if (dev / "running").exists() else ""
            body = json.dumps({"status": "ok" if running else "degraded", "versions": [running]}).encode()
            self.send_response(200 if running else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    try:
        b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
        assert api.deploy([f"local:{dev}"], b1, restart="sh restart.sh", health=url).ok
        # v2's service keeps answering with the old version (e.g. it failed to load the new model)
        res = api.deploy([f"local:{dev}"], b2, restart="true", health=url, health_timeout=1).results[0]
        assert res.status == "rolled-back" and "does not report waste/v2" in res.reason
        (dev / "broken").write_text("waste/v2\n")  # v2 takes the service down: /health answers 503
        res = api.deploy([f"local:{dev}"], b2, restart="sh restart.sh", health=url, health_timeout=1).results[0]
        assert res.status == "rolled-back" and "503" in res.reason
        assert (dev / "running").read_text() == "waste/v1\n"
    finally:
        server.shutdown()


def test_first_deploy_that_fails_health_leaves_no_current(tmp_path):
    dev = device_dir(tmp_path / "dev")
    b1 = make_bundle(tmp_path / "models")
    (dev / "broken").write_text("waste/v1\n")
    res = api.deploy([f"local:{dev}"], b1, **{**KW, "health_timeout": 0.5}).results[0]
    assert res.status == "failed" and "no previous release" in res.reason
    assert not os.path.lexists(dev / "current") and (dev / ".env").read_text() == ""


def test_switch_edge_cases_restart_output_dangling_slot_and_force(tmp_path):
    """A restart that leaves a background process, odd bytes in its output, `--health ""`, a slot whose
    release was deleted by hand, and --force on the running release."""
    import time

    dev = device_dir(tmp_path / "dev")
    b1, b2, b3 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2", "v3"))
    target = f"local:{dev}"
    start = time.monotonic()
    background = "sh restart.sh; (sleep 20 &); sleep 20 &"  # a service started with & keeps stdout open
    assert api.deploy([target], b1, **{**KW, "restart": background}).ok
    assert time.monotonic() - start < 15

    (dev / "broken").write_text("waste/v2\n")
    latin1 = "printf 'caf\\351\\n'; sh restart.sh"  # not UTF-8: still an answer, and a rollback
    res = api.deploy([target], b2, **{**KW, "restart": latin1}).results[0]
    assert res.status == "rolled-back", res
    assert os.readlink(dev / "current") == "releases/waste-v1-tflite-int8"
    assert (dev / "running").read_text() == "waste/v1\n"
    (dev / "broken").unlink()

    res = api.deploy([target], b2, restart="sh restart.sh", health="").results[0]  # no check: still restarted
    assert res.status == "ok" and (dev / "running").read_text() == "waste/v2\n"

    import shutil

    shutil.rmtree(dev / "releases" / "waste-v2-tflite-int8")  # someone cleaned up by hand
    env_before = (dev / ".env").read_text()
    assert api.deploy([target], b3, **KW).ok  # the dangling slot counts as empty
    assert os.readlink(dev / "current") == "releases/waste-v3-tflite-int8" and not os.path.lexists(dev / "current.prev")
    assert (dev / ".env").read_text() == env_before  # the same settings: v2 and v3 differ only in version

    changed = make_bundle(tmp_path / "other", version="v3", seed=1)  # same name and version, other bytes
    res = api.deploy([target], changed, force=True, **KW).results[0]
    assert res.status == "failed" and "is running (slot current)" in res.reason and res.uploaded == 0


def test_health_url_matches_the_version_exactly(tmp_path):
    from edgekit.deploy import agent_cycle as agent

    body = json.dumps({"status": "ok", "versions": ["waste/v10"], "models": {"camera": "waste/v10"}})
    assert not agent.reports(body, "waste/v1") and agent.reports(body, "waste/v10")
    assert agent.reports('{"versions": [["a/v1"]]}', "a/v1")
    assert agent.reports("running waste/v1 since 10:00", "waste/v1")
    assert not agent.reports("running waste/v10", "waste/v1") and not agent.reports("xwaste/v1", "waste/v1")
