"""Device-side commands: `serve`, `data capture`, `record`, `calibrate`.

Only wiring; nothing here imports torch, tensorflow or fabric.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.errors import UserError


def _not_built(what: str) -> None:
    raise UserError(f"`edgekit {what}` is not built yet.")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    data, record, calibrate = groups["data"], groups["record"], groups["calibrate"]

    @app.command("serve")
    def serve(
        env_file: Path | None = typer.Option(None, "--env-file", help="Settings file (.env); the environment "
                                             "overrides it, these options override both."),
        wakeword: str | None = typer.Option(None, help="OPENWAKEWORD_MODEL_PATHS: comma list of wake-word "
                                               "models or bundles."),
        model: Path | None = typer.Option(None, help="MODEL_PATH: image classifier bundle (or a model in it)."),
        audio_source: str | None = typer.Option(None, help="EDGEKIT_AUDIO_SOURCE: mic, wav or stdin."),
        audio_path: str | None = typer.Option(None, "--wav", help="EDGEKIT_AUDIO_PATH: WAV files/folders."),
        camera_source: str | None = typer.Option(None, help="EDGEKIT_CAMERA_SOURCE: picamera2, opencv, folder."),
        camera: str | None = typer.Option(None, help="EDGEKIT_CAMERA: camera number, index, video or folder."),
        host: str | None = typer.Option(None, help="EDGEKIT_API_HOST (default 127.0.0.1)."),
        port: int | None = typer.Option(None, help="EDGEKIT_API_PORT (default 8000)."),
        data_dir: Path | None = typer.Option(None, help="EDGEKIT_DATA_DIR: events and saved frames."),
    ) -> None:
        """Run the device service: wake word, camera classification, HTTP API, events.

        Settings come from --env-file, the environment, then these options. SIGTERM stops it cleanly.
        """
        from edgekit.edge.service import Service
        from edgekit.edge.settings import load_settings

        settings = load_settings(env_file, wakeword_models=wakeword, model_path=model, audio_source=audio_source,
                                 audio_path=audio_path, camera_source=camera_source, camera=camera,
                                 api_host=host, api_port=port, data_dir=data_dir)
        Service(settings).run()

    @data.command("capture")
    def capture(
        classes: str = typer.Option(..., help="Comma list of class names, captured in this order."),
        out: Path = typer.Option(..., help="Dataset folder; photos go to OUT/<class>/."),
        target: int = typer.Option(100, min=1, help="Photos wanted per class (shown as existing/target)."),
        source: str = typer.Option("picamera2", help="Camera source: picamera2, opencv or folder."),
        camera: str | None = typer.Option(None, help="Camera number, OpenCV index/video file, or image folder."),
        ui: str = typer.Option("window", help="window (preview; SPACE capture, arrows brightness, D info, "
                               "Q next class, ESC stop) or terminal (same commands as lines, for SSH)."),
    ) -> None:
        """Capture labeled photos from a camera source into DIR/<class>/."""
        from edgekit.edge.capture import capture_config, print_summary, run_capture

        session = run_capture(capture_config(classes, out, target, source, camera, ui))
        print_summary(session)

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
