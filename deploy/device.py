"""A device root as seen through a transport: installs the agent once, then calls its subcommands.

Every remote command line is built with `shlex.join`/`shlex.quote`; nothing the user typed is pasted
into a shell unquoted. The user's own `--restart`/`--health` commands travel as one quoted argument
and the agent runs them with `sh -c` in the device folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import tarfile
from pathlib import Path

from edgekit.deploy.transport import Completed, Transport
from edgekit.errors import UserError

log = logging.getLogger(__name__)
AGENT_FILES = {name: Path(__file__).with_name(name).read_bytes() for name in ("agent.py", "agent_cycle.py")}
AGENT_ID = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in AGENT_FILES.items())).hexdigest()[:12]


def _agent_tar() -> bytes:
    """The agent's files as one small tar (fixed metadata, so the same edgekit always sends the same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in AGENT_FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


AGENT_TAR = _agent_tar()
PY = "edgekit-python:"
"""Marks the lines of the agent check's answer."""


class DeployError(UserError):
    """A deploy step failed on the device (its message says which and why)."""


class Device:
    """The device folder `root` on the other end of `transport`."""

    def __init__(self, transport: Transport, root: str):
        self.t = transport
        self.root = root
        self.agent_dir = f"{root.rstrip('/')}/.edgekit/agent-{AGENT_ID}"
        self.agent = f"{self.agent_dir}/agent.py"
        self.incoming = f"{root.rstrip('/')}/.edgekit/incoming"
        self.python = "python3"
        self._python_file = f"{root.rstrip('/')}/.edgekit/python"

    @property
    def label(self) -> str:
        return self.t.target.label

    def install_agent(self, deployed: bool = False) -> None:
        """Find python3 and check the agent of this edgekit version is installed; send it if not.

        `deployed`: the folder must already hold a deployment or a `.env` (checked in the same command), so a
        mistyped root is refused instead of being created.
        """
        # The interpreter's real path, found once and remembered on the device: calls then skip
        # wrappers such as pyenv shims, which cost ~0.5 s per call.
        agent, pyfile = shlex.quote(self.agent), shlex.quote(self._python_file)
        root = self.root.rstrip("/")
        guard = (f"[ -d {shlex.quote(root + '/releases')} ] || [ -f {shlex.quote(root + '/.env')} ] || exit 8; "
                 if deployed else "")
        # Marked lines: a shell rc that prints something on the device must not be taken for the answer.
        check = (f'{guard}p=$(cat {pyfile} 2>/dev/null); if [ -f {agent} ] && [ -x "$p" ]; then echo "{PY}$p"; '
                 f"echo {PY}present; else python3 -c 'import sys; print(\"{PY}\" + sys.executable)' || exit 9; fi")
        r = self.t.run(check, timeout=60)
        if r.rc == 8:
            raise DeployError(f"{self.label}: no edgekit deployment or .env in {self.root}; deploy a bundle there "
                              "first.")
        if r.rc == 9:
            raise DeployError(f"{self.label}: python3 is not installed on the device (apt install python3).")
        answer = [line.strip()[len(PY):] for line in r.stdout.splitlines() if line.strip().startswith(PY)]
        if r.rc not in (0, 1) or not answer:
            raise DeployError(f"{self.label}: cannot run commands on the device: {(r.stderr or r.stdout).strip()}")
        self.python = answer[0] or "python3"
        if "present" in answer[1:]:
            return
        # Unpacked under a temporary name, then renamed: a half-written agent is never run. Two deploys
        # installing at once: the first rename wins and the other drops its copy.
        folder, tmp = shlex.quote(self.agent_dir), shlex.quote(f"{self.agent_dir}.tmp") + "$$"
        r = self.t.run(f"mkdir -p {tmp} {shlex.quote(self.incoming)} && tar -xf - -C {tmp} && "
                       f"if [ -d {folder} ]; then rm -rf {tmp}; else mv {tmp} {folder} || rm -rf {tmp}; fi && "
                       f"[ -f {agent} ] && echo {shlex.quote(self.python)} > {pyfile}",
                       stdin=AGENT_TAR, timeout=60)
        if r.rc != 0:
            why = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [f"exit {r.rc}"]
            raise DeployError(f"{self.label}: cannot write to {self.root} ({why[0]}); create it once on the device "
                              f"with `sudo install -d -o $USER {shlex.quote(self.root)}` or pass --root.")

    def command(self, sub: str, *args: str | float | int) -> str:
        """The shell line that runs the agent's `sub` with `args`, every word quoted."""
        return shlex.join([self.python, "-S", self.agent, self.root, sub, *(str(a) for a in args)])

    def call(self, sub: str, *args: str | float | int, stdin: bytes | None = None, timeout: float = 300.0) -> dict:
        """Run an agent subcommand and return its JSON answer; a failure raises `DeployError`."""
        r: Completed = self.t.run(self.command(sub, *args), stdin=stdin, timeout=timeout)
        if r.rc == -1 and not r.stdout.strip():  # paramiko's exit status when the session vanished
            raise DeployError(f"{self.label}: the connection was lost during {sub}" + (
                "; the device finishes the switch on its own and rolls back if the new release is unhealthy"
                if sub == "apply" else ""))
        answer = r.json()
        if r.rc != 0 or not answer.get("ok"):
            why = answer.get("error") or (r.stderr.strip().splitlines() or [f"exit {r.rc}"])[-1]
            raise DeployError(f"{self.label}: {sub} failed: {why}")
        return answer
