"""The `edgekit` command: the root app, its groups, and the error boundary.

Each side of the system (trainer/, edge/, deploy/) has a `cli.py` with a `register(app, groups)` that
adds its commands. Those modules only wire options to functions and import heavy libraries inside the
commands, so `edgekit --help` and `edgekit serve` work on a Pi that has only the `edge` extra.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.text import Text

from edgekit import __version__
from edgekit.console import err_console, setup_logging, state
from edgekit.errors import UserError
from edgekit.progress import log_interval

log = logging.getLogger(__name__)

app = typer.Typer(
    name="edgekit",
    help="Train on a cloud GPU, export, deploy to a Raspberry Pi and keep it working there.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
groups: dict[str, typer.Typer] = {
    "data": typer.Typer(help="Inspect datasets and capture new ones.", no_args_is_help=True),
    "train": typer.Typer(help="Train a model into a bundle (waste, wakeword, sequence).", no_args_is_help=True),
    "calibrate": typer.Typer(help="Tune decision thresholds from data recorded on site.", no_args_is_help=True),
    "record": typer.Typer(help="Record audio on the device for calibration.", no_args_is_help=True),
}


def _version(value: bool) -> None:
    if value:
        print(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging and full tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    setup_logging(verbose)
    log_interval()  # a bad EDGEKIT_PROGRESS_EVERY fails here, not at the first progress bar of a long run


@app.command()
def doctor() -> None:
    """Show what is installed and usable here: torch/CUDA, runtimes, openwakeword, TTS, ssh, docker."""
    from edgekit.doctor import run_doctor

    run_doctor()


@app.command()
def demo(
    workdir: str = typer.Option(".demo", help="Folder for the demo's models, device and logs."),
) -> None:
    """Run the whole loop on the embedded default: train, export, deploy to a local device, detect."""
    from edgekit.demo import run_demo

    run_demo(workdir)


def _register_sides() -> None:
    from edgekit.deploy import cli as deploy_cli
    from edgekit.edge import cli as edge_cli
    from edgekit.trainer import cli as trainer_cli

    for side in (trainer_cli, edge_cli, deploy_cli):
        side.register(app, groups)
    for name, group in groups.items():
        app.add_typer(group, name=name)


_register_sides()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a `UserError` becomes one sentence and exit 2."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 (from a Windows zip, say) must print, not crash a run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        app(args=argv, prog_name="edgekit")
    except UserError as e:
        if state.verbose:
            err_console.print_exception()
        err_console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
