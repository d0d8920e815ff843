"""Device-side commands: `serve`, `data capture`, `record`, `calibrate`.

Only wiring; nothing here imports torch, tensorflow or fabric.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.errors import UserError


def _numbers(text: str, option: str) -> list[float]:
    """A comma list of numbers from an option, or a `UserError` naming the option."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"Option {option} takes comma-separated numbers, got {text!r}.")


def _build(cls: type, **fields: object) -> object:
    """A config object from options; a validation error names the option in one sentence."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "an option"
        raise UserError(f"Option {option}: {err['msg']}.")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    from edgekit.edge.audio import AUDIO_SOURCES  # numpy-light tables: --help text comes from them
    from edgekit.edge.camera import CAMERA_SOURCES
    from edgekit.edge.sources import describe

    _register_serve(app, describe(AUDIO_SOURCES), describe(CAMERA_SOURCES))
    _register_capture(groups["data"], describe(CAMERA_SOURCES))
    _register_record(groups["record"])
    _register_calibrate(groups["calibrate"])


def _register_serve(app: typer.Typer, audio_sources: str, camera_sources: str) -> None:
    @app.command("serve")
    def serve(
        env_file: Path | None = typer.Option(None, "--env-file", help="Settings file (.env); the environment "
                                             "overrides it, these options override both."),
        wakeword: str | None = typer.Option(None, help="OPENWAKEWORD_MODEL_PATHS: comma list of wake-word "
                                               "models or bundles."),
        model: Path | None = typer.Option(None, help="MODEL_PATH: image classifier bundle (or a model in it)."),
        audio_source: str | None = typer.Option(None, help=f"EDGEKIT_AUDIO_SOURCE. {audio_sources}."),
        audio_path: str | None = typer.Option(None, "--wav", help="EDGEKIT_AUDIO_PATH: WAV files/folders."),
        camera_source: str | None = typer.Option(None, help=f"EDGEKIT_CAMERA_SOURCE. {camera_sources}."),
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


def _register_capture(data: typer.Typer, camera_sources: str) -> None:
    @data.command("capture")
    def capture(
        classes: str = typer.Option(..., help="Comma list of class names, captured in this order."),
        out: Path = typer.Option(..., help="Dataset folder; photos go to OUT/<class>/."),
        target: int = typer.Option(100, min=1, help="Photos wanted per class (shown as existing/target)."),
        source: str = typer.Option("picamera2", help=f"Camera source. {camera_sources}."),
        camera: str | None = typer.Option(None, help="Camera number, OpenCV index/video file, or image folder."),
        ui: str = typer.Option("window", help="window (preview; SPACE capture, arrows brightness, D info, "
                               "Q next class, ESC stop) or terminal (same commands as lines, for SSH)."),
    ) -> None:
        """Capture labeled photos from a camera source into OUT/<class>/."""
        from edgekit.edge.capture import capture_config, print_summary, run_capture

        session = run_capture(capture_config(classes, out, target, source, camera, ui))
        print_summary(session)


def _register_record(record: typer.Typer) -> None:
    @record.command("ambient")
    def record_ambient(
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the WAV chunks (numbering continues)."),
        minutes: float = typer.Option(30.0, help="Minutes to record; FA/h targets need hours (0.5/h: ~7 h)."),
        chunk_s: float = typer.Option(60.0, "--chunk-s", help="Seconds per chunk: the most a power cut loses."),
        device: str | None = typer.Option(None, help="Input device index or part of its name."),
    ) -> None:
        """Record ambient audio (16 kHz) in chunks for wake-word calibration."""
        from edgekit.edge.record import AmbientConfig, mic_factory, record_ambient_cli

        record_ambient_cli(_build(AmbientConfig, out=out, minutes=minutes, chunk_s=chunk_s), mic_factory(device))

    @record.command("positives")
    def record_positives(
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the trimmed utterances."),
        prompt: str = typer.Option("say the wake word", help="What to ask for, e.g. 'say: puertocho'."),
        count: int = typer.Option(20, help="Utterances to record."),
        seconds: float = typer.Option(2.5, help="Recording window per utterance."),
        device: str | None = typer.Option(None, help="Input device index or part of its name."),
    ) -> None:
        """Record prompted wake-word utterances, trimmed to the speech by energy."""
        from edgekit.console import console
        from edgekit.edge.record import PositivesConfig, mic_factory, record_positives

        cfg = _build(PositivesConfig, out=out, prompt=prompt, count=count, seconds=seconds)
        say = lambda text: console.print(text, style="bold", markup=False)  # noqa: E731
        files = record_positives(cfg, mic_factory(device), say=say)
        console.print(f"{len(files)} utterance(s) in {out}")


def _register_calibrate(calibrate: typer.Typer) -> None:
    @calibrate.command("wakeword")
    def calibrate_wakeword(
        model: str = typer.Option(..., "--model", "-m", help="Wake-word bundle (folder or name) or .onnx/.tflite."),
        ambient: list[Path] = typer.Option(None, "--ambient", "-a", help="Ambient WAVs or folders (repeatable)."),
        positives: list[Path] = typer.Option(None, "--positives", "-p", help="Wake-word WAVs or folders."),
        out: Path = typer.Option(Path("calibration"), "--out", "-o", help="Folder for the results."),
        target_fa_per_hour: float = typer.Option(0.5, help="False accepts per hour allowed on the ambient audio."),
        framework: str | None = typer.Option(None, help="onnx or tflite (default: the model file's)."),
        feature_dir: Path | None = typer.Option(None, help="openWakeWord feature models folder."),
        patience: str = typer.Option("1,2,3,4", help="Patience values to sweep."),
        refractory: str = typer.Option("0.5,1,2,3", help="Refractory seconds to sweep."),
        vad: str = typer.Option("", help="VAD thresholds to sweep, e.g. 0.3,0.5,0.7 (empty: VAD off)."),
        margin: float = typer.Option(0.1, help="Without positives: added to the lowest passing threshold."),
        apply: list[str] = typer.Option(None, "--apply", help="Set the .env on these devices (pi@host, local:PATH)."),
        restart: str | None = typer.Option(None, help="--apply: restart command on the device."),
        health: str | None = typer.Option(None, help="--apply: health URL or command on the device."),
    ) -> None:
        """Choose threshold/patience/refractory (and VAD) from ambient audio and positives."""
        from edgekit.edge.calibrate_wakeword import WakewordCalibration, print_summary, run_calibration
        from edgekit.edge.calibration_apply import apply_to_devices, check_targets

        if not ambient:
            raise UserError("No ambient audio: pass --ambient with recordings of the site (edgekit record ambient).")
        cfg = _build(
            WakewordCalibration, model=model, ambient=ambient, positives=positives or [], out=out, framework=framework,
            feature_dir=feature_dir, target_fa_per_hour=target_fa_per_hour, margin=margin,
            patiences=[int(v) for v in _numbers(patience, "--patience")],
            refractories=_numbers(refractory, "--refractory"), vad_thresholds=_numbers(vad, "--vad"))
        if apply:
            check_targets(apply)
        result = run_calibration(cfg)
        print_summary(result)
        if apply:
            apply_to_devices(apply, result["env"], restart=restart, health=health)

    @calibrate.command("classifier")
    def calibrate_classifier(
        model: str = typer.Option(..., "--model", "-m", help="Image-classification bundle (folder or name)."),
        data: Path = typer.Option(..., "--data", "-d", help="Labeled site photos, DIR/<class>/*.jpg."),
        out: Path = typer.Option(Path("calibration"), "--out", "-o", help="Folder for the results."),
        target_precision: float = typer.Option(0.95, help="Precision each class must keep."),
        fmt: str | None = typer.Option(None, "--format", help="Model file to calibrate (default: as the device)."),
        framework: str = typer.Option("onnx", help="With no --format: onnx or tflite, int8 first if accepted."),
        write_bundle: bool = typer.Option(True, help="Write the thresholds into the bundle manifest."),
        apply: list[str] = typer.Option(None, "--apply", help="Set the .env on these devices (pi@host, local:PATH)."),
        restart: str | None = typer.Option(None, help="--apply: restart command on the device."),
        health: str | None = typer.Option(None, help="--apply: health URL or command on the device."),
    ) -> None:
        """Per-class thresholds for the camera classifier at a target precision."""
        from edgekit.edge.calibrate_classifier import ClassifierCalibration, print_summary, run_calibration
        from edgekit.edge.calibration_apply import apply_to_devices, check_targets

        cfg = _build(ClassifierCalibration, model=model, data=data, out=out, target_precision=target_precision,
                     format=fmt, framework=framework, write_bundle=write_bundle)
        if apply:
            check_targets(apply)
        result = run_calibration(cfg)
        print_summary(result)
        if apply:
            apply_to_devices(apply, result["env"], restart=restart, health=health)
