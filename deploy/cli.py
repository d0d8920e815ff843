"""Deploy commands: `deploy`, `rollback`, `status`. Fabric is imported inside the commands."""

from __future__ import annotations

import typer

from edgekit.errors import UserError


def _not_built(what: str) -> None:
    raise UserError(f"`edgekit {what}` is not built yet.")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("deploy")
    def deploy() -> None:
        """Deploy a bundle to devices: verified, atomic, health-checked, rolled back on failure."""
        _not_built("deploy")

    @app.command("rollback")
    def rollback() -> None:
        """Switch devices back to their previous release."""
        _not_built("rollback")

    @app.command("status")
    def status() -> None:
        """Show each device's current and previous release, thresholds and health."""
        _not_built("status")
