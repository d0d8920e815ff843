"""The device side of a deploy: a stdlib-only script that runs with the device's own `python3`.

edgekit uploads it with `agent_cycle.py` (restart and health checks) to `<root>/.edgekit/agent-<id>/`
once and then calls its subcommands with shlex-quoted arguments; each prints one JSON object. Nothing
here imports edgekit, so a Pi needs only Python 3. The same files run for `local:PATH` targets, so both
backends share every step.

Layout under the device root:
    releases/<release>/        extracted bundle files + .release.json (what was installed, its sha256)
    current, current.prev      relative symlinks into releases/ (the slot and its previous release)
    .env                       the service settings
    .edgekit/incoming/         uploads in flight (removed on the next deploy if a session died)
"""

from __future__ import annotations

# Heavy modules (tarfile, urllib, subprocess) are imported where used: every call starts a fresh
# interpreter, and on a Pi Zero an unused import of urllib.request costs a visible fraction of a second.
import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import time

try:  # on the device, agent_cycle.py lies beside this file (which is sys.path[0])
    import agent_cycle
except ImportError:  # imported as part of edgekit (the tests)
    from edgekit.deploy import agent_cycle

META = ".release.json"


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fail(msg: str, code: int = 3) -> None:
    _emit({"ok": False, "error": msg})
    sys.exit(code)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_meta(release_dir: str) -> dict | None:
    try:
        with open(os.path.join(release_dir, META)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _slot_target(root: str, slot: str) -> str | None:
    """The release a slot symlink points at; None when unset or dangling (its release folder is gone)."""
    link = os.path.join(root, slot)
    if not os.path.islink(link):
        return None
    release = os.path.basename(os.readlink(link))
    return release if os.path.isdir(os.path.join(root, "releases", release)) else None


def _releases(root: str) -> dict:
    rel = os.path.join(root, "releases")
    out = {}
    if os.path.isdir(rel):
        for name in sorted(os.listdir(rel)):
            path = os.path.join(rel, name)
            if name.endswith(".tmp") or name.startswith(".") or not os.path.isdir(path):
                continue
            out[name] = {"meta": _read_meta(path), "mtime": os.path.getmtime(path)}
    return out


def _slots(root: str) -> dict:
    out = {}
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            if os.path.islink(os.path.join(root, name)) and not name.endswith(".prev"):
                out[name] = {"current": _slot_target(root, name), "previous": _slot_target(root, name + ".prev")}
    return out


def _state(root: str) -> dict:
    """Everything a deploy needs to decide: machine, disk, tools, releases, slots, .env."""
    os.makedirs(root, exist_ok=True)
    env_path = os.path.join(root, ".env")
    env = None
    if os.path.isfile(env_path):
        with open(env_path) as f:
            env = f.read()
    return {
        "ok": True, "arch": platform.machine(), "python": platform.python_version(),
        "free": shutil.disk_usage(root).free, "docker": shutil.which("docker") is not None,
        "releases": _releases(root), "slots": _slots(root), "env": env,
        "compose": os.path.exists(os.path.join(root, "compose.yml")),
    }


def cmd_state(a) -> None:
    _emit(_state(a.root))


def cmd_lock(a) -> None:
    """Hold `<root>/.edgekit/lock` until stdin closes (the deploy ends or its SSH session dies).

    Once locked: remove what a dead deploy left behind, then answer with the device state.
    """
    d = os.path.join(a.root, ".edgekit")
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + a.timeout
    _flock_by(fd, deadline, f"another deploy holds the device lock after waiting {a.timeout:g} s")
    # An `apply` whose client went away (a dropped SSH session) still runs until its rollback is done:
    # wait for it before answering, so the next deploy sees the device as that apply leaves it.
    busy = os.open(os.path.join(d, "apply.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    _flock_by(busy, deadline, f"an earlier deploy's switch is still running on the device after {a.timeout:g} s")
    os.close(busy)  # only waited for: closing releases it
    cleaned = _clean(a.root)
    _emit({**_state(a.root), "locked": True, "pid": os.getpid(), "cleaned": cleaned})
    sys.stdin.read()  # returns at EOF: the client released the lock or went away


def _flock_by(fd: int, deadline: float, why: str) -> None:
    """Take an exclusive flock on `fd`, retrying until `deadline`; past it, fail with `why` (exit 4)."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                _fail(why, 4)
            time.sleep(0.1)


def _clean(root: str) -> list:
    """Remove what a dead deploy left: uploads in flight and half-extracted releases."""
    removed = []
    inc = os.path.join(root, ".edgekit", "incoming")
    for d, pattern in ((inc, None), (os.path.join(root, "releases"), ".tmp")):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if pattern is None or name.endswith(pattern):
                p = os.path.join(d, name)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                removed.append(name)
    return removed


def _safe_members(tar, dest: str) -> list:
    """Refuse absolute names, `..`, links and anything that is not a regular file or folder."""
    dest = os.path.realpath(dest)
    members = tar.getmembers()
    for m in members:
        name = m.name
        if name.startswith("/") or os.path.isabs(name) or ".." in name.split("/"):
            _fail(f"tarball member {name!r} has an absolute path or '..'; refused")
        target = os.path.realpath(os.path.join(dest, name))
        if not (target == dest or target.startswith(dest + os.sep)):
            _fail(f"tarball member {name!r} would land outside the release folder; refused")
        if m.issym() or m.islnk():  # edgekit packs regular files only; a chain of links could lead out
            _fail(f"tarball link {name!r} -> {m.linkname!r}: releases hold regular files only; refused")
        if not (m.isfile() or m.isdir()):
            _fail(f"tarball member {name!r} is not a regular file or folder; refused")
    return members


def _check_files(folder: str) -> None:
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        _fail("the release has no readable manifest.json")
    with open(os.path.join(folder, META)) as f:
        shipped = json.load(f)["files"]
    for rel in shipped:
        p = os.path.join(folder, rel)
        if rel not in files or not os.path.isfile(p) or _sha256(p) != files[rel]["sha256"]:
            _fail(f"release file {rel} does not match the manifest's sha256")


def _install(a) -> None:
    """Verify the uploaded tarball, extract it into releases/<name>.tmp, check files, rename into place."""
    import tarfile

    if _sha256(a.tar) != a.sha256:
        os.unlink(a.tar)
        _fail("the uploaded tarball's sha256 does not match what was sent (corrupted in transit); refused")
    releases = os.path.join(a.root, "releases")
    final = os.path.join(releases, a.release)
    tmp = final + ".tmp"
    os.makedirs(releases, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        with tarfile.open(a.tar, "r:*") as tar:
            members = _safe_members(tar, tmp)
            for m in members:  # plain extraction after the checks above; no owners, no modes beyond 0o755
                m.uid = m.gid = 0
                m.uname = m.gname = ""
                m.mode &= 0o755
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4/3.12: the stdlib's own guard as well
                tar.extractall(tmp, members=members, filter="data")
            else:
                tar.extractall(tmp, members=members)  # noqa: S202 - members were checked by _safe_members
        _check_files(tmp)
    except SystemExit:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.unlink(a.tar)
    if os.path.exists(final):
        if a.release in {s["current"] for s in _slots(a.root).values()}:
            shutil.rmtree(tmp, ignore_errors=True)
            _fail(f"release {a.release} is in use with different content; deploy it under a new version")
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(releases)


def _point(root: str, name: str, release: str | None) -> None:
    """Make symlink `root/name` point at releases/<release> (or remove it) with one rename."""
    link = os.path.join(root, name)
    if release is None:
        if os.path.islink(link):
            os.unlink(link)
        return
    if not os.path.isdir(os.path.join(root, "releases", release)):
        _fail(f"release {release} does not exist on the device")
    tmp = os.path.join(root, f".{name}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, link)


def _activate(root: str, slot: str, current: str, previous: str, env: str | None, compose: str | None) -> None:
    """Write `.env` (None: leave it) and a missing compose.yml, then set the slot: `<slot>.prev`, `<slot>`.

    Both releases are checked first, so a refused switch changes nothing.
    """
    for release in (current, previous):
        if release and not os.path.isdir(os.path.join(root, "releases", release)):
            _fail(f"release {release} does not exist on the device")
    if env is not None:
        _write(os.path.join(root, ".env"), env.encode())
    path = os.path.join(root, "compose.yml")
    if compose is not None and not os.path.exists(path):
        _write(path, compose.encode(), mode=0o644)
    if slot:
        _point(root, slot + ".prev", previous or None)
        _point(root, slot, current or None)
        _fsync_dir(root)


def _write(dest: str, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `dest` atomically (temp file, fsync, rename), keeping the old file's mode."""
    tmp = f"{dest}.{os.getpid()}.tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:  # .env may hold tokens
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(dest):
        shutil.copymode(dest, tmp)
    os.replace(tmp, dest)
    _fsync_dir(os.path.dirname(dest))


def _prune(root: str, keep: int) -> list:
    """Keep the newest `keep` releases; never remove one a slot or its `.prev` points at."""
    pinned = set()
    for s in _slots(root).values():
        pinned.update(v for v in s.values() if v)
    rels = sorted(_releases(root).items(), key=lambda kv: kv[1]["mtime"], reverse=True)
    removed = []
    for i, (name, _) in enumerate(rels):
        if i >= keep and name not in pinned:
            shutil.rmtree(os.path.join(root, "releases", name))
            removed.append(name)
    return removed


def cmd_apply(a) -> None:
    """One call for the whole switch: install the upload (if any), write files, point the slot, then
    restart + health check + prune (when a restart or a check is given).

    stdin: {"env": .env text or null, "compose": compose.yml for a device without one, "undo": null or
    {"current", "previous", "env", "expect"}: the state to return to}. When the new state is unhealthy, the
    agent itself puts `undo` back and restarts and checks it (when it has a release), before answering:
    the rollback does not depend on the client's connection lasting. `apply.lock` is held throughout.
    """
    files = json.loads(sys.stdin.read() or "{}")
    d = os.path.join(a.root, ".edgekit")
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "apply.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when this process ends
    if a.tar:
        _install(a)
    _activate(a.root, a.slot, a.current, a.previous, files.get("env"), files.get("compose"))
    if not (a.restart or a.check):
        _emit({"ok": True, "healthy": True})
        return
    answer = {"ok": True, **agent_cycle.cycle(a, a.expect, lambda: _prune(a.root, a.prune) if a.prune else [])}
    undo = files.get("undo")
    if not answer["healthy"] and undo is not None:
        _activate(a.root, a.slot, undo.get("current") or "", undo.get("previous") or "", undo.get("env"), None)
        back = undo.get("current")
        answer["reverted"] = agent_cycle.cycle(a, undo.get("expect") or "", list) if back else None
    _emit(answer)


def _cycle_args(s) -> None:
    s.add_argument("--restart", default="")
    s.add_argument("--restart-timeout", type=float, default=300.0)
    s.add_argument("--expect", default="")
    s.add_argument("--timeout", type=float, default=60.0)
    s.add_argument("--interval", type=float, default=0.5)
    s.add_argument("--prune", type=int, default=0)


def main() -> None:
    p = argparse.ArgumentParser(prog="edgekit-agent")
    p.add_argument("root")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("state")
    s = sub.add_parser("lock")
    s.add_argument("--timeout", type=float, default=60.0)
    s = sub.add_parser("apply")
    for name in ("tar", "sha256", "release", "slot", "current", "previous", "check"):
        s.add_argument(f"--{name}", default="")
    _cycle_args(s)
    a = p.parse_args()
    a.root = os.path.abspath(a.root)
    globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    main()
