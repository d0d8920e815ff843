"""Push calibrated values into devices' `.env` through the deploy module (`--apply TARGET`).

The deploy module writes the `.env` atomically, keeps the other keys, restarts the service, checks its
health and puts the old `.env` back when the check fails; this only hands it the values and reports.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.errors import UserError

log = logging.getLogger(__name__)


def _deploy(module: str) -> Any:
    """`edgekit.deploy.<module>`, or one sentence saying that `--apply` needs the deploy extra."""
    import importlib

    try:
        return importlib.import_module(f"edgekit.deploy.{module}")
    except ImportError as e:
        raise UserError(f"--apply needs the deploy extra ({e.name} is missing): pip install 'edgekit[deploy]'.")


def check_targets(targets: list[str]) -> None:
    """Parse the `--apply` targets, so a typo fails before the calibration rather than after it.

    Raises:
        UserError: when the deploy extra is missing or a target is malformed.
    """
    t = _deploy("targets")
    t.expand(list(targets), t.load_inventory(None), None)


def apply_to_devices(targets: list[str], env: dict[str, str], restart: str | None = None,
                     health: str | None = None, **conn_opts: Any) -> Any:
    """Set `env` on every target; prints the per-device table and returns the `FleetResult`.

    Raises:
        UserError: when the deploy extra is missing or any device failed (after printing the table).
    """
    api, fleet = _deploy("api"), _deploy("fleet")
    result = api.apply_env(list(targets), env, restart=restart, health=health, **conn_opts)
    fleet.render(result, "calibration .env update")
    if not result.ok:
        names = ", ".join(f"{r.target} ({r.reason or r.status})" for r in result.failed)
        raise UserError(f"Applying the calibration failed on {len(result.failed)} device(s): {names}.")
    return result
