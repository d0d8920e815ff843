"""A real OpenSSH server on 127.0.0.1 for the deploy tests, run as the current user.

Each `SSHD` gets its own free port, a temporary ed25519 host key and an authorized client key.
It offers no SFTP subsystem: deploys stream files over exec channels and must not need one.
Works as root (creates the privilege-separation folder sshd insists on) and as a normal user
(sshd then runs unprivileged and can only log that user in, which is all the tests need).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD_BIN = shutil.which("sshd") or "/usr/sbin/sshd"
CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
MaxStartups 100
MaxSessions 50
LogLevel ERROR
{setenv}"""


def available() -> str | None:
    """None when sshd can run here, else why not (the tests skip with that reason)."""
    if not Path(SSHD_BIN).exists():
        return "OpenSSH sshd is not installed (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    return None


def keygen(path: Path) -> Path:
    """An ed25519 key pair at `path` / `path.pub` without a passphrase."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHD:
    """One sshd process; `known_hosts_line` trusts it, `kill_sessions()` cuts live connections."""

    def __init__(self, workdir: Path, client_key: Path, login_rc: bool = True, env: dict[str, str] | None = None):
        """Args:
            login_rc: let bash read the user's ~/.bashrc for each command as it does under a real sshd.
                False sets SHLVL=1 for sessions, which stops that (bash reads it only at level 1):
                a developer's rc (pyenv, conda) can cost 0.5 s of CPU per command, which a Pi's
                plain rc does not, and which would swamp what the fleet benchmark measures.
            env: more variables for every session (`SetEnv`), e.g. BASH_ENV to run a script before each
                command as a chatty shell rc would.
        """
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        keygen(self.dir / "host_key")
        shutil.copy(f"{client_key}.pub", self.dir / "authorized_keys")
        variables = {**({} if login_rc else {"SHLVL": "1"}), **(env or {})}
        # one line: sshd keeps only the first SetEnv directive
        setenv = "SetEnv " + " ".join(f"{k}={v}" for k, v in variables.items()) + "\n" if variables else ""
        (self.dir / "sshd_config").write_text(CONFIG.format(port=self.port, dir=self.dir, setenv=setenv))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.log = open(self.dir / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen([SSHD_BIN, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    @property
    def user(self) -> str:
        import getpass

        return getpass.getuser()

    @property
    def address(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        kind, b64 = (self.dir / "host_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener)."""
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                kids.append(int(stat.parent.name))
        return kids

    def kill_sessions(self) -> int:
        """SIGKILL every live connection, as a dropped Wi-Fi link would end it. Returns how many."""
        pids = self.sessions()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        self.kill_sessions()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ---- bundles and device scripts shared by the deploy tests ------------------------------------------

# The "service" of the test devices: `restart` records which release it now runs (as /health would),
# unless the release is named in `broken` (a model that crashes the service at start).
RESTART_SH = """\
v=$(python3 -c 'import json; m = json.load(open("current/.release.json")); print(m["name"] + "/" + m["version"])')
if [ -f broken ] && grep -qx "$v" broken; then rm -f running; exit 0; fi
echo "$v" > running
"""
# Healthy when the service runs the version the deploy expects.
HEALTH_CMD = 'test "$(cat running 2>/dev/null)" = "$EDGEKIT_EXPECT_VERSION"'


def make_bundle(root: Path, name: str = "waste", version: str = "v1", model_bytes: int = 4096,
                status: str | None = "accepted", task: str = "image-classification", seed: int = 0):
    """A small real bundle with an onnx and a tflite-int8 'model' (deploy moves bytes, it never runs them)."""
    import random

    from edgekit.bundle import BundleWriter, InputSpec

    rnd = random.Random(f"{name}{version}{seed}")
    w = BundleWriter(name, root=root, version=version)
    for rel, fmt in (("model.onnx", "onnx"), ("model_int8.tflite", "tflite-int8")):
        w.add(rel, fmt, "model", status=status).write_bytes(rnd.randbytes(model_bytes))
    w.add("checkpoint.pt", "pytorch", "checkpoint").write_bytes(rnd.randbytes(64))
    labels = ["alexa"] if task == "wakeword" else ["glass", "paper"]
    return w.commit(task=task, labels=labels, input=InputSpec(shape=[1, 3, 8, 8]),
                    thresholds={"threshold": 0.62, "patience": 2} if task == "wakeword" else {})


def device_dir(path: Path) -> Path:
    """A device folder with the test service's restart script."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "restart.sh").write_text(RESTART_SH)
    return path


def cli(*args: str) -> int:
    """Run `edgekit ARGS...` in this process; its exit code."""
    from edgekit.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


# ---- pytest fixtures (import them into a test module to use them) -------------------------------------

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables in one line per host, so the tests can read them (autouse where imported)."""
    from edgekit.console import console

    monkeypatch.setattr(console, "width", 250)


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    """The test client's private key (ed25519, no passphrase)."""
    why = available()
    if why:
        pytest.skip(why)
    return keygen(tmp_path_factory.mktemp("client") / "id_ed25519")


@pytest.fixture
def sshd_factory(tmp_path, client_key):
    """Start real sshd servers on free ports: `sshd_factory()` → SSHD; all stopped after the test."""
    servers: list[SSHD] = []

    def start(**kwargs) -> SSHD:
        s = SSHD(tmp_path / f"sshd{len(servers)}", client_key, **kwargs)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def known_hosts(tmp_path) -> Path:
    """An empty known_hosts file for the test (servers are trusted by appending their line)."""
    p = tmp_path / "known_hosts"
    p.write_text("")
    return p
