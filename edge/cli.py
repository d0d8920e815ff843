"""Device-side commands: `serve`, `data capture`, `record`, `calibrate`.

Only wiring; nothing here imports torch, tensorflow or fabric.
"""

from __future__ import annotations

import typer

from edgekit.errors import UserError


def _not_built(what: str) -> None:
    raise UserError(f"`edgekit {what}` is not built yet.")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    data, record, calibrate = groups["data"], groups["record"], groups["calibrate"]

    @app.command("serve")
    def serve() -> None:
        """Run the device service: wake word, camera classification, HTTP API, events."""
        _not_built("serve")

    @data.command("capture")
    def capture() -> None:
        """Capture labeled photos from a camera source into DIR/<class>/."""
        _not_built("data capture")

    @record.command("ambient")
    def record_ambient() -> None:
        """Record ambient audio in chunks for wake-word calibration."""
        _not_built("record ambient")

    @record.command("positives")
    def record_positives() -> None:
        """Record prompted wake-word utterances."""
        _not_built("record positives")

    @calibrate.command("wakeword")
    def calibrate_wakeword() -> None:
        """Choose threshold/patience/refractory from ambient audio and positives."""
        _not_built("calibrate wakeword")

    @calibrate.command("classifier")
    def calibrate_classifier() -> None:
        """Per-class thresholds for the camera classifier at a target precision."""
        _not_built("calibrate classifier")
