"""What other commands call: deploy, rollback, status and `.env` updates over a fleet.

    from edgekit.deploy.api import apply_env
    result = apply_env(["pi@raspberry"], {"OPENWAKEWORD_THRESHOLD": "0.62"})
    if not result.ok: ...

Every function takes targets as typed (`user@host[:port]`, `local:PATH`, inventory groups) and returns a
`FleetResult` with one `HostResult` per device; nothing raises because one device failed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edgekit.bundle import Bundle, resolve
from edgekit.deploy import payload as payloads
from edgekit.deploy.fleet import Connect, FleetResult, run_fleet
from edgekit.deploy.releases import DeployOptions, apply_env_device, deploy_device, rollback_device
from edgekit.deploy.status import device_status
from edgekit.deploy.targets import expand, load_inventory
from edgekit.deploy.transport import SSHOptions, connect
from edgekit.edge.settings import check_env_values
from edgekit.errors import UserError

_FLEET_KEYS = ("inventory", "root", "parallel", "canary", "conn")


def _validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """Build a config model; a bad value is the user's mistake, said in one sentence."""
    try:
        return model(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"Invalid {'.'.join(str(x) for x in first['loc'])}: {first['msg']}.")


def _split(opts: dict[str, Any]) -> tuple[dict, dict, SSHOptions]:
    fleet = {k: opts.pop(k) for k in _FLEET_KEYS if k in opts}
    ssh = {k: opts.pop(k) for k in list(opts) if k in SSHOptions.model_fields}
    return fleet, opts, _validated(SSHOptions, ssh)


def _fleet(targets: list[str], work, ssh: SSHOptions, inventory: str | os.PathLike | None = None,
           root: str | None = None, parallel: int = 4, canary: bool = False, conn: Connect = connect) -> FleetResult:
    hosts = expand(list(targets), load_inventory(inventory), root)
    return run_fleet(hosts, work, ssh, parallel=parallel, canary=canary, conn=conn)


def deploy(targets: list[str], bundle: str | os.PathLike | Bundle, *, fmt: str | None = None,
           force: bool = False, **opts: Any) -> FleetResult:
    """Deploy a bundle's `fmt` model to every target.

    Args:
        targets: `user@host[:port]`, `local:PATH` or inventory group names.
        bundle: a `Bundle` or what `edgekit.bundle.resolve` accepts.
        fmt: model format (`tflite-int8`, `onnx`, ...); None picks the best accepted one.
        force: deploy a format the export gate rejected, and replace a differing release of the same name.
        **opts: `DeployOptions` fields (restart, health, keep, env, slot, ...), `SSHOptions` fields
            (known_hosts, accept_new_host_key, identity, ...), and inventory, root, parallel, canary.
    """
    fleet, rest, ssh = _split(dict(opts))
    options = _validated(DeployOptions, {"force": force, **rest})
    check_env_values(options.env, "--env")  # here, not on the device: a bad value must not be uploaded
    b = bundle if isinstance(bundle, Bundle) else resolve(bundle)
    with tempfile.TemporaryDirectory(prefix="edgekit-deploy-") as work:
        pkg = payloads.pack(b, fmt, Path(work), force=force)
        return _fleet(targets, lambda dev, progress: deploy_device(dev, pkg, options, progress), ssh, **fleet)


def rollback(targets: list[str], **opts: Any) -> FleetResult:
    """Switch every target back to its previous release (restart, health check, undo if unhealthy)."""
    fleet, rest, ssh = _split(dict(opts))
    options = _validated(DeployOptions, rest)
    return _fleet(targets, lambda dev, progress: rollback_device(dev, options), ssh, **fleet)


def status(targets: list[str], **opts: Any) -> FleetResult:
    """Each target's current and previous release, `.env` thresholds and one health check."""
    fleet, rest, ssh = _split(dict(opts))
    options = _validated(DeployOptions, rest)
    return _fleet(targets, lambda dev, progress: device_status(dev, options), ssh, **fleet)


def apply_env(targets: list[str], env: dict[str, str], *, restart: str | None = None, health: str | None = None,
              **conn_opts: Any) -> FleetResult:
    """Update the device `.env` atomically (other keys kept), restart, health check; restore it on failure.

    Args:
        targets: `user@host[:port]`, `local:PATH` or inventory group names.
        env: keys to set, e.g. `{"OPENWAKEWORD_THRESHOLD": "0.62"}`.
        restart: shell command run in the device folder (default `docker compose up -d`).
        health: URL or command (default: the service's /health reports the current release).
        **conn_opts: `SSHOptions` fields, `DeployOptions` fields, and inventory, root, parallel, canary.
    """
    fleet, rest, ssh = _split(dict(conn_opts))
    if restart is not None:
        rest["restart"] = restart
    if health is not None:
        rest["health"] = health
    options = _validated(DeployOptions, rest)
    check_env_values(env)
    return _fleet(targets, lambda dev, progress: apply_env_device(dev, env, options), ssh, **fleet)
