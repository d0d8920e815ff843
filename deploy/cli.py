"""Deploy commands: `deploy`, `rollback`, `status`. Fabric is imported inside the commands."""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

from edgekit.deploy.releases import DEFAULT_HEALTH, DEFAULT_RESTART
from edgekit.errors import UserError

FORMATS_HELP = "tflite-int8, onnx-int8, tflite, onnx (default: the first accepted one in that order)"


def _check_format(fmt: str | None) -> str | None:
    from edgekit.deploy.payload import FRAMEWORK

    if fmt is None or fmt in FRAMEWORK:
        return fmt
    close = difflib.get_close_matches(fmt, list(FRAMEWORK), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else f" Choose from: {', '.join(FRAMEWORK)}."
    raise UserError(f"Unknown format {fmt!r}.{hint}")


def _finish(result, title: str) -> None:
    from edgekit.deploy.fleet import render

    render(result, title)
    if not result.ok:
        raise typer.Exit(1)


# Options shared by the three commands, declared once.
_INVENTORY = typer.Option(None, "--inventory", "-i", help="hosts.toml with named groups of targets.")
_ROOT = typer.Option(None, "--root", help="Device folder (default /opt/edgekit, or the inventory's).")
_SLOT = typer.Option("current", "--slot", help="Symlink the service reads; another one per extra model.")
_PARALLEL = typer.Option(4, "--parallel", "-p", min=1, help="Devices worked on at the same time.")
_RESTART = typer.Option(DEFAULT_RESTART, "--restart", help="Command run in the device folder.")
_HEALTH = typer.Option(DEFAULT_HEALTH, "--health",
                          help="URL that must report the new version, or a command that exits 0.")
_HEALTH_TIMEOUT = typer.Option(60.0, "--health-timeout", help="Seconds to wait for a healthy service.")
_KNOWN_HOSTS = typer.Option("~/.ssh/known_hosts", "--known-hosts", help="Host keys to check against.")
_ACCEPT = typer.Option(False, "--accept-new-host-key",
                          help="Record the key of a host seen for the first time (changed keys are refused).")
_IDENTITY = typer.Option(None, "--identity", "-k", help="Private key file (repeatable); default ~/.ssh + agent.")
_LOCK_TIMEOUT = typer.Option(60.0, "--lock-timeout", help="Seconds to wait for another deploy on a device.")


def _ssh_kwargs(known_hosts: str, accept: bool, identity: list[str] | None) -> dict:
    return {"known_hosts": known_hosts, "accept_new_host_key": accept, "identity": identity or None}


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    _register_deploy(app)
    _register_rollback(app)
    _register_status(app)


def _register_deploy(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy(
        args: list[str] = typer.Argument(..., metavar="TARGET... BUNDLE",
                                         help="user@host[:port], local:PATH or inventory groups, then the bundle."),
        fmt: str | None = typer.Option(None, "--format", "-f", help=FORMATS_HELP),
        inventory: Path | None = _INVENTORY,
        parallel: int = _PARALLEL,
        canary: bool = typer.Option(False, "--canary", help="Deploy to the first target alone first."),
        restart: str = _RESTART,
        health: str = _HEALTH,
        health_timeout: float = _HEALTH_TIMEOUT,
        keep: int = typer.Option(3, "--keep", min=2, help="Releases kept on the device."),
        env: list[str] | None = typer.Option(None, "--env", "-e", help="KEY=VALUE for the device .env (repeatable)."),
        force: bool = typer.Option(False, "--force", help="Deploy a gate-rejected model; replace a same-named one."),
        root: str | None = _ROOT,
        slot: str = _SLOT,
        known_hosts: str = _KNOWN_HOSTS,
        accept_new_host_key: bool = _ACCEPT,
        identity: list[str] | None = _IDENTITY,
        lock_timeout: float = _LOCK_TIMEOUT,
    ) -> None:
        """Deploy a bundle to devices: verified, atomic, health-checked, rolled back on failure."""
        from edgekit.deploy import api
        from edgekit.deploy.envfile import parse_assignments

        if len(args) < 2:
            raise UserError("Give at least one target and a bundle: edgekit deploy pi@raspberry models/waste.")
        result = api.deploy(
            args[:-1], args[-1], fmt=_check_format(fmt), force=force, inventory=inventory, root=root,
            parallel=parallel, canary=canary, restart=restart, health=health, health_timeout=health_timeout,
            keep=keep, env=parse_assignments(env or []), slot=slot, lock_timeout=lock_timeout,
            **_ssh_kwargs(known_hosts, accept_new_host_key, identity),
        )
        _finish(result, "Deploy")


def _register_rollback(app: typer.Typer) -> None:
    @app.command("rollback")
    def rollback(
        targets: list[str] = typer.Argument(..., help="user@host[:port], local:PATH or inventory groups."),
        inventory: Path | None = _INVENTORY,
        parallel: int = _PARALLEL,
        restart: str = _RESTART,
        health: str = _HEALTH,
        health_timeout: float = _HEALTH_TIMEOUT,
        root: str | None = _ROOT,
        slot: str = _SLOT,
        known_hosts: str = _KNOWN_HOSTS,
        accept_new_host_key: bool = _ACCEPT,
        identity: list[str] | None = _IDENTITY,
        lock_timeout: float = _LOCK_TIMEOUT,
    ) -> None:
        """Switch devices back to their previous release."""
        from edgekit.deploy import api

        result = api.rollback(
            targets, inventory=inventory, root=root, parallel=parallel, restart=restart, health=health,
            health_timeout=health_timeout, slot=slot, lock_timeout=lock_timeout,
            **_ssh_kwargs(known_hosts, accept_new_host_key, identity),
        )
        _finish(result, "Rollback")


def _register_status(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        targets: list[str] = typer.Argument(..., help="user@host[:port], local:PATH or inventory groups."),
        inventory: Path | None = _INVENTORY,
        parallel: int = _PARALLEL,
        health: str = _HEALTH,
        root: str | None = _ROOT,
        slot: str = _SLOT,
        known_hosts: str = _KNOWN_HOSTS,
        accept_new_host_key: bool = _ACCEPT,
        identity: list[str] | None = _IDENTITY,
    ) -> None:
        """Show each device's current and previous release, thresholds and health."""
        from edgekit.deploy import api
        from edgekit.deploy.status import render_status

        result = api.status(targets, inventory=inventory, root=root, parallel=parallel, health=health, slot=slot,
                            **_ssh_kwargs(known_hosts, accept_new_host_key, identity))
        render_status(result.results)
        if not result.ok:
            raise typer.Exit(1)
