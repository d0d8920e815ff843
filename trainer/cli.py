"""Cloud-side commands: `data analyze`, `train waste|wakeword|sequence`, `export`, `eval`.

Only wiring: options become a config object and a function call; heavy imports happen inside.
"""

from __future__ import annotations

import typer

from edgekit.errors import UserError


def _not_built(what: str) -> None:
    raise UserError(f"`edgekit {what}` is not built yet.")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    data, train = groups["data"], groups["train"]

    @data.command("analyze")
    def analyze(
        folder: str = typer.Argument(..., help="Dataset folder with one subfolder per class."),
        workers: int = typer.Option(None, help="Threads reading image headers [default: 2 x CPUs, max 8]."),
        json_out: str = typer.Option(None, "--json", help="Also write the analysis to this JSON file."),
    ) -> None:
        """Count images per class, find broken files, judge balance, recommend what to add.

        Exits 0 with warnings for a usable dataset, 2 when the folder layout is wrong.
        """
        from edgekit.trainer.images import run_analyze

        run_analyze(folder, workers=workers, json_path=json_out)

    @train.command("waste")
    def train_waste() -> None:
        """MobileNetV2 image classifier from DATA/<class>/ photos (two-phase fine-tuning)."""
        _not_built("train waste")

    @train.command("wakeword")
    def train_wakeword() -> None:
        """openWakeWord-compatible wake word from synthetic speech."""
        _not_built("train wakeword")

    @train.command("sequence")
    def train_sequence() -> None:
        """LSTM/GRU/CNN activity classifier from CSV frames."""
        _not_built("train sequence")

    @app.command("export")
    def export() -> None:
        """Export a bundle to ONNX/TFLite (fp32, int8) with an accuracy gate."""
        _not_built("export")

    @app.command("eval")
    def evaluate() -> None:
        """Evaluate any exported format of a bundle on a labeled folder."""
        _not_built("eval")
