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

    from edgekit.trainer.models import ARCHS

    seq_archs = [n.removeprefix("seq_") for n, a in ARCHS.items() if a.task == "sequence-classification"]

    @train.command("sequence")
    def train_sequence(
        data: str = typer.Option(..., help="Folder of CSV files, one per recording, one row per frame."),
        name: str = typer.Option("sequence", help="Bundle name."),
        features: str = typer.Option(None, help="Feature columns, comma-separated [default: all but label/time]."),
        label_col: str = typer.Option("activity", help="Label column; empty cells are unlabeled frames."),
        include_labels: str = typer.Option(None, help="Only these labels become classes (comma-separated)."),
        window: int = typer.Option(128, help="Frames per window (the model's fixed input length)."),
        stride: int = typer.Option(64, help="Frames between window starts."),
        train_stride: int = typer.Option(None, help="Frames between training window starts [default: stride]."),
        group_by: str = typer.Option("file", help="Split unit: file, file:REGEX (part of the name) or a column."),
        test_groups: str = typer.Option(None, help="Groups held out for the report [default: ~20%]."),
        val_groups: str = typer.Option(None, help="Groups for early stopping [default: one more group]."),
        arch: str = typer.Option("lstm", help=f"Architecture: {', '.join(seq_archs)}."),
        units: str = typer.Option("128,64", help="Cells per recurrent layer (channels per conv block)."),
        dense: int = typer.Option(32, help="Dense layer width before the output (0: none)."),
        dropout: float = typer.Option(0.3, help="Dropout after each recurrent/conv layer."),
        epochs: int = typer.Option(50, help="Most epochs."),
        batch_size: int = typer.Option(16, help="Windows per step."),
        lr: float = typer.Option(1e-3, help="Adam learning rate."),
        patience: int = typer.Option(10, help="Epochs without improvement before stopping."),
        class_weights: str = typer.Option("auto", help="auto (inverse frequency) or none."),
        seed: int = typer.Option(0, help="Seed for split, initialisation and batch order."),
        device: str = typer.Option("auto", help="auto, cuda or cpu."),
    ) -> None:
        """LSTM/GRU/CNN activity classifier from CSV frames (diagnosis first, split by group)."""
        from edgekit.trainer.sequence import SequenceConfig, train_sequence

        def items(v: str | None) -> list[str] | None:
            return [x.strip() for x in v.split(",") if x.strip()] if v else None

        try:
            unit_list = [int(u) for u in items(units) or []]
        except ValueError:
            raise UserError(f"--units {units!r} must be comma-separated integers, e.g. 128,64.")
        if class_weights not in ("auto", "none"):
            raise UserError(f"--class-weights must be auto or none, not {class_weights!r}.")
        from pydantic import ValidationError

        try:
            cfg = SequenceConfig(
                data=data, name=name, features=items(features), label_col=label_col,
                include_labels=items(include_labels), window=window, stride=stride, train_stride=train_stride,
                group_by=group_by, test_groups=items(test_groups), val_groups=items(val_groups), arch=arch,
                units=unit_list, dense=dense, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr,
                patience=patience, class_weights=class_weights, seed=seed, device=device,
            )
        except ValidationError as e:
            first = e.errors()[0]
            raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}.")
        train_sequence(cfg)

    @app.command("export")
    def export() -> None:
        """Export a bundle to ONNX/TFLite (fp32, int8) with an accuracy gate."""
        _not_built("export")

    @app.command("eval")
    def evaluate() -> None:
        """Evaluate any exported format of a bundle on a labeled folder."""
        _not_built("eval")
