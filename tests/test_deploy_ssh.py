"""Deploys against real OpenSSH servers on 127.0.0.1: verified uploads, rollbacks, cuts, locks, fleets."""
# ruff: noqa: F811 - the fixtures imported from sshd.py are used as test arguments

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from sshd import HEALTH_CMD, cli, client_key, device_dir, known_hosts, make_bundle, sshd_factory, wide_console  # noqa: F401

from edgekit.deploy import api
from edgekit.deploy.transport import connect

KW = {"restart": "sh restart.sh", "health": HEALTH_CMD, "health_timeout": 1.0, "use_agent": False}


@pytest.fixture
def ssh(client_key, known_hosts):
    """Connection options for the tests: the test key, the test known_hosts, no agent."""
    return {"identity": [str(client_key)], "known_hosts": str(known_hosts), **KW}


def trusted(server, known_hosts: Path, root: Path) -> str:
    with open(known_hosts, "a") as f:
        f.write(server.known_hosts_line)
    device_dir(root)
    return server.address


@pytest.fixture
def pi(tmp_path, sshd_factory, known_hosts):
    """One trusted sshd and its device folder `tmp_path/pi`: (server, folder, address)."""
    server = sshd_factory()
    dev = tmp_path / "pi"
    return server, dev, trusted(server, known_hosts, dev)


def test_first_deploy_then_redeploy_uploads_nothing(tmp_path, pi, known_hosts, client_key, ssh):
    _, dev, addr = pi
    b1 = make_bundle(tmp_path / "models", model_bytes=200_000)
    (dev / ".env").write_text("OPENWAKEWORD_VAD_THRESHOLD=0.3\n")
    code = cli("deploy", addr, str(b1.path), "--root", str(dev), "--format", "onnx", "--known-hosts", str(known_hosts),
               "-k", str(client_key), "--restart", "sh restart.sh", "--health", HEALTH_CMD)
    assert code == 0
    assert os.readlink(dev / "current") == "releases/waste-v1-onnx" and (dev / "running").read_text() == "waste/v1\n"
    assert "OPENWAKEWORD_VAD_THRESHOLD=0.3" in (dev / ".env").read_text()
    assert (dev / "current" / "model.onnx").read_bytes() == (b1.path / "model.onnx").read_bytes()

    again = api.deploy([addr], b1, fmt="onnx", root=str(dev), **ssh).results[0]
    assert again.status == "skipped-identical"
    assert again.uploaded == 0  # not a byte: no tarball, no agent, no .env


def test_failing_health_rolls_back_to_a_healthy_old_release(tmp_path, pi, ssh):
    _, dev, addr = pi
    b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
    assert api.deploy([addr], b1, root=str(dev), **ssh).ok
    env_before = (dev / ".env").read_text()
    (dev / "broken").write_text("waste/v2\n")  # v2 crashes the service at start
    res = api.deploy([addr], b2, root=str(dev), env={"CAMERA_FPS": "5"}, **ssh).results[0]
    assert res.status == "rolled-back" and "health check failed" in res.reason
    assert os.readlink(dev / "current") == "releases/waste-v1-tflite-int8"
    assert (dev / "running").read_text() == "waste/v1\n"  # the old release runs again, checked healthy
    assert (dev / ".env").read_text() == env_before


def _wrapped(hook):
    """A transport factory whose uploads go through `hook(transport, put, local, remote, progress)`."""

    def conn(target, opts):
        t = connect(target, opts)
        put = t.put
        t.put = lambda local, remote, progress=None: hook(t, put, local, remote, progress)
        return t

    return conn


def test_tarball_tampered_after_upload_is_refused(tmp_path, pi, ssh):
    _, dev, addr = pi
    b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
    assert api.deploy([addr], b1, root=str(dev), **ssh).ok

    def tamper(t, put, local, remote, progress):
        put(local, remote, progress)
        with open(remote, "r+b") as f:  # the "device" is this machine: flip one byte of the model data
            f.seek(2048)
            byte = f.read(1)
            f.seek(2048)
            f.write(bytes([byte[0] ^ 0xFF]))

    res = api.deploy([addr], b2, root=str(dev), conn=_wrapped(tamper), **ssh).results[0]
    assert res.status == "failed" and "corrupted in transit" in res.reason
    assert os.readlink(dev / "current") == "releases/waste-v1-tflite-int8"
    assert sorted(p.name for p in (dev / "releases").iterdir()) == ["waste-v1-tflite-int8"]
    assert not list((dev / ".edgekit" / "incoming").iterdir())


def test_connection_cut_mid_upload_keeps_the_previous_release(tmp_path, pi, ssh):
    server, dev, addr = pi
    b1 = make_bundle(tmp_path / "models", version="v1")
    b2 = make_bundle(tmp_path / "models", version="v2", model_bytes=3_000_000)
    assert api.deploy([addr], b1, root=str(dev), **ssh).ok
    cut: list[int] = []

    def cut_midway(t, put, local, remote, progress):
        def on_chunk(done, total):
            if not cut and done > total // 4:
                cut.append(server.kill_sessions())  # the Wi-Fi drops: sshd's session processes die

        put(local, remote, on_chunk)

    res = api.deploy([addr], b2, root=str(dev), conn=_wrapped(cut_midway), **ssh).results[0]
    assert cut and cut[0] >= 1
    assert res.status == "failed" and "upload failed" in res.reason
    assert os.readlink(dev / "current") == "releases/waste-v1-tflite-int8"
    assert (dev / "running").read_text() == "waste/v1\n"
    assert not (dev / "releases" / "waste-v2-tflite-int8").exists()
    partial = list((dev / ".edgekit" / "incoming").iterdir())
    assert all(p.name.endswith(".part") for p in partial)  # the half upload is only ever a .part file

    # The dead session released the lock with it; the next deploy cleans up and succeeds.
    res = api.deploy([addr], b2, root=str(dev), lock_timeout=10, **ssh).results[0]
    assert res.status == "ok" and res.uploaded > 3_000_000
    assert os.readlink(dev / "current") == "releases/waste-v2-tflite-int8"
    assert not list((dev / ".edgekit" / "incoming").iterdir())


def test_connection_cut_mid_switch_the_device_rolls_back_by_itself(tmp_path, pi, ssh):
    server, dev, addr = pi
    b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
    assert api.deploy([addr], b1, root=str(dev), **ssh).ok
    env_before = (dev / ".env").read_text()
    (dev / "broken").write_text("waste/v2\n")  # v2 will not come up
    cut: list[int] = []

    def cut_in_restart():
        deadline = time.monotonic() + 30
        while not (dev / "restarting").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cut.append(server.kill_sessions())  # the laptop's Wi-Fi drops while v2 starts

    watcher = threading.Thread(target=cut_in_restart)
    watcher.start()
    slow = "touch restarting; sleep 1; rm -f restarting; sh restart.sh"
    res = api.deploy([addr], b2, root=str(dev), **{**ssh, "restart": slow}).results[0]
    watcher.join()
    assert cut and cut[0] >= 1
    assert res.status == "failed" and "connection was lost during apply" in res.reason
    # The next deploy waits for the orphaned switch, which found v2 unhealthy and put v1 back on its own.
    again = api.deploy([addr], b1, root=str(dev), lock_timeout=30, **ssh).results[0]
    assert again.status == "skipped-identical", again
    assert os.readlink(dev / "current") == "releases/waste-v1-tflite-int8"
    assert (dev / "running").read_text() == "waste/v1\n" and (dev / ".env").read_text() == env_before


def test_concurrent_deploys_do_not_interleave(tmp_path, pi, ssh):
    _, dev, addr = pi
    b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
    results = {}

    def run(name, bundle, pause=0.2, **kw):
        restart = f"echo start >> order.log; sleep {pause}; sh restart.sh; echo end >> order.log"
        results[name] = api.deploy([addr], bundle, root=str(dev), **{**ssh, "restart": restart, **kw}).results[0]

    first = threading.Thread(target=run, args=("first", b1), kwargs={"pause": 3})
    first.start()
    deadline = time.monotonic() + 30
    while not (dev / "order.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the first deploy is inside its restart, holding the lock
    second = threading.Thread(target=run, args=("second", b2), kwargs={"lock_timeout": 30})
    second.start()
    run("impatient", b2, lock_timeout=0.3)
    first.join()
    second.join()
    assert results["impatient"].status == "failed" and "lock" in results["impatient"].reason
    assert results["first"].status == "ok" and results["second"].status == "ok"
    assert (dev / "order.log").read_text().split() == ["start", "end", "start", "end"]
    assert os.readlink(dev / "current") == "releases/waste-v2-tflite-int8"
    assert os.readlink(dev / "current.prev") == "releases/waste-v1-tflite-int8"


def test_unknown_or_changed_host_key_is_refused(tmp_path, sshd_factory, known_hosts, client_key, ssh):
    server = sshd_factory()
    dev = device_dir(tmp_path / "pi")
    b1 = make_bundle(tmp_path / "models")
    res = api.deploy([server.address], b1, root=str(dev), **ssh).results[0]
    assert res.status == "failed" and "ssh-keyscan -p" in res.reason and "--accept-new-host-key" in res.reason
    assert not (dev / "releases").exists()

    assert api.deploy([server.address], b1, root=str(dev), accept_new_host_key=True, **ssh).ok
    assert server.known_hosts_line.split(None, 1)[1] in known_hosts.read_text()

    forged = server.known_hosts_line.split()[0] + " " + " ".join(Path(f"{client_key}.pub").read_text().split()[:2])
    known_hosts.write_text(forged + "\n")  # the device "was replaced": its key no longer matches
    res = api.deploy([server.address], b1, root=str(dev), accept_new_host_key=True, **ssh).results[0]
    assert res.status == "failed" and "CHANGED" in res.reason


def test_fleet_reports_each_host_and_one_dead_host_fails_the_run(tmp_path, sshd_factory, known_hosts, client_key,
                                                                   capsys):
    servers = [sshd_factory() for _ in range(3)]
    dead = f"{servers[0].user}@127.0.0.1:{_closed_port()}"
    roots = [tmp_path / f"pi{i}" for i in range(3)]
    hosts = {f"pi{i}": (trusted(s, known_hosts, roots[i]), roots[i]) for i, s in enumerate(servers)}
    inv = tmp_path / "hosts.toml"
    lines = [f'[hosts.{n}]\naddress = "{a}"\nroot = "{r}"\n' for n, (a, r) in hosts.items()]
    inv.write_text("".join(lines) + f'[groups]\nfleet = ["pi0", "{dead}", "pi1", "pi2"]\n')
    b1 = make_bundle(tmp_path / "models")
    common = ["-i", str(inv), "--known-hosts", str(known_hosts), "-k", str(client_key),
              "--restart", "sh restart.sh", "--health", HEALTH_CMD]
    assert cli("deploy", "fleet", str(b1.path), "--parallel", "4", *common) == 1
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert all(" ok " in rows[hosts[n][0]] for n in hosts)
    assert " failed " in rows[dead] and "cannot connect" in rows[dead]
    for n in hosts:
        assert (hosts[n][1] / "running").read_text() == "waste/v1\n"

    b2 = make_bundle(tmp_path / "models", version="v2")
    assert cli("deploy", dead, "pi0", str(b2.path), "--canary", *common) == 1
    out = capsys.readouterr().out
    assert "not-run" in out and "canary" in out
    assert (hosts["pi0"][1] / "running").read_text() == "waste/v1\n"  # the canary failed: nothing else moved


def _closed_port() -> int:
    from sshd import free_port

    return free_port()  # nothing listens there once the probe socket is closed


def test_host_alias_and_port_come_from_the_ssh_config(tmp_path, pi, ssh, monkeypatch):
    """`edgekit deploy kitchen-pi ...` uses ~/.ssh/config's HostName, Port and User, as `ssh kitchen-pi` does."""
    server, dev, addr = pi
    user, port = addr.split("@")[0], addr.rsplit(":", 1)[1]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host kitchen-pi\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n")
    monkeypatch.setenv("HOME", str(home))
    res = api.deploy(["kitchen-pi"], make_bundle(tmp_path / "models"), root=str(dev), **ssh).results[0]
    assert res.status == "ok", res
    assert res.target == "kitchen-pi" and os.readlink(dev / "current") == "releases/waste-v1-tflite-int8"


def test_a_shell_that_prints_a_greeting_does_not_confuse_the_deploy(tmp_path, sshd_factory, known_hosts, ssh):
    """Many Pis print a banner or a fortune from the shell's rc; bash runs BASH_ENV before each command."""
    chatty = tmp_path / "chatty.sh"
    chatty.write_text('echo "Welcome to the Pi! {not json"\nunset BASH_ENV\n')  # once per command, as an rc
    server = sshd_factory(env={"BASH_ENV": str(chatty)}, login_rc=False)  # not this machine's own ~/.bashrc
    dev = tmp_path / "pi"
    addr = trusted(server, known_hosts, dev)
    b1, b2 = (make_bundle(tmp_path / "models", version=v) for v in ("v1", "v2"))
    assert api.deploy([addr], b1, root=str(dev), **ssh).ok
    assert api.deploy([addr], b2, root=str(dev), **ssh).ok
    assert os.readlink(dev / "current") == "releases/waste-v2-tflite-int8"
    assert (tmp_path / "pi" / "running").read_text() == "waste/v2\n"
