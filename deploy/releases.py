"""The steps of a deploy on one device, each one safe to interrupt.

preflight → identical-skip → upload to a temporary name → sha256 check on the device → safe extract into
`releases/<name>.tmp` → rename → atomic `.env` → atomic slot switch → restart → health check (→ switch
back, restore `.env`, restart, check the old release) → prune. All of it under the device lock; the part
from the switch on is one agent call that rolls back by itself, so a client that loses its connection
mid-switch does not leave a broken release running.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgekit.deploy import envfile
from edgekit.deploy.device import DeployError, Device
from edgekit.deploy.lock import device_lock
from edgekit.deploy.payload import Payload, env_for
from edgekit.errors import UserError

log = logging.getLogger(__name__)
ARCHES = ("aarch64", "armv7l", "x86_64")
DEFAULT_RESTART = "docker compose up -d"
DEFAULT_HEALTH = "http://127.0.0.1:8000/health"
STATUSES = ("ok", "skipped-identical", "rolled-back", "failed", "not-run")
COMPOSE_FILE = Path(__file__).with_name("docker") / "compose.yml"
"""The runtime's compose file, installed as `<root>/compose.yml` on devices that have none."""


class DeployOptions(BaseModel):
    """How to deploy one payload to each device (built once per command by `edgekit.deploy.api`)."""

    model_config = ConfigDict(extra="forbid")

    slot: str = Field("current", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    """Name of the symlink the service reads (`current`); a second model on the same Pi uses another."""
    restart: str = DEFAULT_RESTART
    """Shell command run in the device folder after a switch (e.g. `sudo systemctl restart edgekit`)."""
    health: str = DEFAULT_HEALTH
    """A URL whose answer must name the new version, or a command that exits 0 when healthy."""
    health_timeout: float = 60.0
    """Seconds to wait for the service to become healthy before rolling back."""
    keep: int = Field(3, ge=2)
    """Releases to keep on the device; the current and previous ones are never removed."""
    env: dict[str, str] = {}
    """Extra `.env` keys to set (`--env KEY=VALUE`), applied after the bundle's own."""
    lock_timeout: float = 60.0
    """Seconds a deploy waits for another deploy on the same device to finish."""
    min_free_mb: int = 20
    """Free disk, beyond the release itself, required on the device."""
    force: bool = False
    """Replace a different release installed under the same name (the gate check is at packing time)."""


@dataclass
class HostResult:
    """What happened on one device."""

    target: str
    status: str
    """One of STATUSES (`edgekit status` results use `ok`, `unhealthy` and `empty`)."""
    reason: str = ""
    release: str | None = None
    previous: str | None = None
    uploaded: int = 0
    """Bytes sent to the device (tarball, agent, .env)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped-identical")


def preflight(dev: Device, state: dict, payload: Payload, opts: DeployOptions) -> None:
    """Refuse a device that cannot take the release: architecture, disk, Docker for the default restart."""
    if state["arch"] not in ARCHES:
        raise DeployError(f"{dev.label}: unsupported architecture {state['arch']} (supported: {', '.join(ARCHES)}).")
    need = 2 * payload.tarball.stat().st_size + opts.min_free_mb * 1024 * 1024
    if state["free"] < need:
        raise DeployError(f"{dev.label}: only {state['free'] / 2**20:.0f} MiB free in {dev.root}, "
                          f"{need / 2**20:.0f} MiB needed.")
    if opts.restart.startswith("docker") and not state["docker"]:
        raise DeployError(f"{dev.label}: Docker is not installed; install it or pass --restart with your own command.")


def upload(dev: Device, payload: Payload, progress: Callable[[int, int], None] | None) -> tuple[str, str, str]:
    """Send the tarball under a temporary name; returns what the device needs to verify and install it."""
    remote = f"{dev.incoming}/{payload.release}.{uuid.uuid4().hex[:8]}.part"
    dev.t.put(payload.tarball, remote, progress)
    return remote, payload.sha256, payload.release


@dataclass
class Switch:
    """One `apply` call on the device: [install] → write .env → point the slot → [restart → health → prune],
    and back to `undo` (by the device itself) when the new state is unhealthy."""

    current: str | None
    previous: str | None
    env: str | None
    """The whole new `.env` text, or None to leave it."""
    expect: str = ""
    """`name/version` the health check must see."""
    install: tuple[str, str, str] | None = None
    """(uploaded tarball, its sha256, release name) to verify and extract first."""
    compose: str | None = None
    prune: int = 0
    """Releases to keep once healthy (0: prune nothing)."""
    undo: dict | None = None
    """The state to return to when unhealthy (`undo_of`), or None to leave the new one in place."""


def undo_of(state: dict, old: dict) -> dict:
    """What the device puts back when a switch is unhealthy: the slot's old pointers, the old `.env` (empty
    when there was none, so the failed release's keys do not stay) and the version the old release reports."""
    return {"current": old.get("current"), "previous": old.get("previous"), "env": state["env"] or "",
            "expect": expect_of(meta_of(state, old.get("current")))}


def compose_to_install(state: dict, opts: DeployOptions) -> str | None:
    """edgekit's compose file, when the restart uses Docker Compose and the device has none yet.

    An existing compose.yml on the device is the user's and is never overwritten.
    """
    if state.get("compose") or not opts.restart.startswith("docker compose") or not COMPOSE_FILE.is_file():
        return None
    return COMPOSE_FILE.read_text()


def apply(dev: Device, opts: DeployOptions, sw: Switch) -> dict:
    """Run a `Switch` in one device call (one SSH round trip, one Python start on the device); the agent's
    answer: `healthy`, `detail`, `removed`, and `reverted` (None: no release to go back to) after an undo."""
    # `--key=value` keeps argparse from reading a value that starts with '-' as an option
    args = {"slot": opts.slot, "current": sw.current or "", "previous": sw.previous or ""}
    if sw.install:
        args.update(zip(("tar", "sha256", "release"), sw.install, strict=True))
    restart_timeout = max(120.0, opts.health_timeout)
    args.update({"check": opts.health, "restart": opts.restart, "restart-timeout": restart_timeout,
                 "expect": sw.expect, "timeout": opts.health_timeout, "prune": sw.prune})
    return dev.call("apply", *(f"--{k}={v}" for k, v in args.items()),
                    stdin=json.dumps({"env": sw.env, "compose": sw.compose, "undo": sw.undo}).encode(),
                    timeout=2 * (opts.health_timeout + restart_timeout) + 300)  # the switch, and maybe its undo


def slot_of(state: dict, name: str) -> dict:
    """The `current`/`previous` releases of slot `name` in an agent state (both None when unset)."""
    return state["slots"].get(name, {"current": None, "previous": None})


def meta_of(state: dict, release: str | None) -> dict | None:
    """The `.release.json` record of `release` on the device, or None (no release, gone, or unreadable)."""
    return state["releases"].get(release or "", {}).get("meta")


def expect_of(meta: dict | None) -> str:
    """`name/version` the health check must see for a release record (empty without one)."""
    return f"{meta['name']}/{meta['version']}" if meta else ""


def settle(res: HostResult, answer: dict, old: dict, why: str) -> HostResult:
    """The result of an unhealthy switch, from what the device did about it (`apply`'s `reverted`)."""
    back = answer.get("reverted")
    if back is None:
        res.status, res.reason = "failed", f"{why}; no previous release to go back to"
        return res
    res.status = "rolled-back" if back["healthy"] else "failed"
    res.reason = f"{why}; back on {old['current']}" + ("" if back["healthy"] else
                                                      f", which is unhealthy too ({back['detail']})")
    return res


def deploy_device(dev: Device, payload: Payload, opts: DeployOptions,
                  progress: Callable[[int, int], None] | None = None) -> HostResult:
    """Deploy `payload` to one device; returns its result (user-facing failures raise `DeployError`)."""
    res = HostResult(dev.label, "failed", release=payload.release)
    dev.install_agent()
    with device_lock(dev, opts.lock_timeout) as state:
        preflight(dev, state, payload, opts)
        slot = slot_of(state, opts.slot)
        res.previous = slot["current"]
        existing = state["releases"].get(payload.release)
        same = bool(existing and existing["meta"] and existing["meta"].get("content") == payload.meta["content"])
        new_env = envfile.merge(state["env"], {**env_for(payload.meta, dev.root, opts.slot), **opts.env})
        if same and slot["current"] == payload.release and new_env == (state["env"] or ""):
            res.status, res.reason, res.previous = "skipped-identical", "already current", slot["previous"]
            return res
        if existing and not same:
            in_use = sorted(n for n, sl in state["slots"].items() if sl["current"] == payload.release)
            if in_use:
                raise DeployError(f"{dev.label}: {payload.release} is running (slot {', '.join(in_use)}) with "
                                  f"different content; give the bundle a new version (--force cannot replace "
                                  f"a release in use).")
            if not opts.force:
                raise DeployError(f"{dev.label}: {payload.release} is installed with different content; "
                                  f"give the bundle a new version or pass --force.")
        sent = None if same else upload(dev, payload, progress)
        previous = slot["current"] if slot["current"] != payload.release else slot["previous"]
        answer = apply(dev, opts, Switch(payload.release, previous, new_env, payload.expect, install=sent,
                                         compose=compose_to_install(state, opts), prune=opts.keep,
                                         undo=undo_of(state, slot)))
        if not answer.get("healthy", True):
            return settle(res, answer, slot, f"health check failed: {answer.get('detail', '')}")
        res.status = "ok"
        res.reason = "reused the release already on the device" if same else ""
        if answer.get("removed"):
            res.reason = (res.reason + "; " if res.reason else "") + f"removed {', '.join(answer['removed'])}"
        return res


def rollback_device(dev: Device, opts: DeployOptions) -> HostResult:
    """Switch the slot to its previous release, rewrite `.env` for it, restart and check health."""
    res = HostResult(dev.label, "failed")
    dev.install_agent()
    with device_lock(dev, opts.lock_timeout) as state:
        slot = slot_of(state, opts.slot)
        if not slot["previous"]:
            raise DeployError(f"{dev.label}: {opts.slot} has no previous release to roll back to.")
        meta = meta_of(state, slot["previous"])
        if not meta:
            raise DeployError(f"{dev.label}: the previous release {slot['previous']} is no longer on the device.")
        res.release, res.previous = slot["previous"], slot["current"]
        env = envfile.merge(state["env"], {**env_for(meta, dev.root, opts.slot), **opts.env})
        answer = apply(dev, opts, Switch(slot["previous"], slot["current"], env, expect_of(meta),
                                         undo=undo_of(state, slot)))
        if not answer.get("healthy", True):
            return settle(res, answer, slot, f"{slot['previous']} is unhealthy: {answer.get('detail', '')}")
        res.status = "ok"
        return res


def apply_env_device(dev: Device, env: dict[str, str], opts: DeployOptions) -> HostResult:
    """Set `.env` keys (others kept), restart, check health; restore the old `.env` if unhealthy."""
    res = HostResult(dev.label, "failed")
    dev.install_agent(deployed=True)  # settings go to a folder that exists: a mistyped root is not created
    with device_lock(dev, opts.lock_timeout) as state:
        slot = slot_of(state, opts.slot)
        res.release, res.previous = slot["current"], slot["previous"]
        new_env = envfile.merge(state["env"], env)
        if new_env == (state["env"] or ""):
            res.status, res.reason = "skipped-identical", ".env already has these values"
            return res
        meta = meta_of(state, slot["current"])
        answer = apply(dev, opts, Switch(slot["current"], slot["previous"], new_env, expect_of(meta),
                                         undo=undo_of(state, slot)))
        if answer.get("healthy", True):
            res.status = "ok"
            return res
        return settle(res, answer, slot, f"health check failed with the new .env: {answer.get('detail', '')}")


def timed(fn: Callable[[], HostResult], label: str) -> HostResult:
    """Run one device's work; a failure becomes a `failed` result instead of stopping the fleet."""
    start = time.monotonic()
    try:
        res = fn()
    except UserError as e:
        res = HostResult(label, "failed", str(e).removeprefix(f"{label}: ").rstrip("."))
    except Exception as e:  # a bug or an unexpected library error: reported per host, traceback logged
        log.warning("%s: unexpected error", label, exc_info=True)
        res = HostResult(label, "failed", f"{type(e).__name__}: {e}")
    res.seconds = time.monotonic() - start
    return res
