"""Cloud-side commands: `data analyze`, `train waste|wakeword|sequence`, `export`, `eval`.

Only wiring: options become a config object and a function call; heavy imports happen inside.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.errors import UserError


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    _register_analyze(groups["data"])
    _register_train_waste(groups["train"])
    _register_train_wakeword(groups["train"])
    _register_train_sequence(groups["train"])
    _register_export(app)


def _register_analyze(data: typer.Typer) -> None:
    @data.command("analyze")
    def analyze(
        folder: str = typer.Argument(..., help="Dataset folder with one subfolder per class."),
        workers: int = typer.Option(None, min=1, help="Threads reading image headers (default: 2 x CPUs, max 8)."),
        json_out: str = typer.Option(None, "--json", help="Also write the analysis to this JSON file."),
    ) -> None:
        """Count images per class, find broken files, judge balance, recommend what to add.

        Exits 0 with warnings for a usable dataset, 2 when the folder layout is wrong.
        """
        from edgekit.paths import check_output
        from edgekit.trainer.images import run_analyze

        if json_out:  # before the analysis, not after its table has been printed
            check_output(json_out, "--json", want="file")
        run_analyze(folder, workers=workers, json_path=json_out)


def _register_train_waste(train: typer.Typer) -> None:
    @train.command("waste")
    def train_waste(
        data: str = typer.Option(..., help="Photos in DATA/<class>/ (class names: letters, digits, _ and -)."),
        epochs: int = typer.Option(10, help="Epochs in total (phase 1: --head-fraction of them, phase 2: the rest)."),
        batch_size: int = typer.Option(32, help="Images per step (halved automatically on GPU out-of-memory)."),
        lr: float = typer.Option(0.001, help="Peak learning rate of the head (one-cycle); the base trains at lr/10."),
        unfreeze: int = typer.Option(91, help="Phase 2 trains the last N base layers (91: blocks 7-18; 0: none)."),
        num_workers: int = typer.Option(4, help="Threads decoding photos into the image cache."),
        img_size: int = typer.Option(224, help="Square input size in pixels."),
        fit: str = typer.Option("stretch", help="How photos become square: stretch, pad (letterbox) or crop."),
        val_split: float = typer.Option(0.2, help="Share of each class held out for validation."),
        seed: int = typer.Option(42, help="Seed for split, initialisation, batch order and augmentation."),
        device: str = typer.Option("auto", help="auto, cuda or cpu."),
        weights: str = typer.Option("imagenet", help="imagenet (download torchvision's), none, or a state_dict file."),
        weights_style: str = typer.Option("auto", help="auto, keras ([-1,1] input, TF padding) or torchvision."),
        output: str = typer.Option("waste", help="Bundle name: models/NAME/vN."),
        classes: str = typer.Option(None, help="Only these class folders, comma-separated (default: all)."),
        head_fraction: float = typer.Option(0.3, help="Share of the epochs for phase 1 (new head, base frozen)."),
        train_bn: bool = typer.Option(False, "--train-bn", help="Update BatchNorm statistics while fine-tuning."),
        int8_grid: bool = typer.Option(True, "--int8-grid/--no-int8-grid",
                                       help="Train weights on the int8 grid, so int8 export keeps them exactly."),
        sam: float = typer.Option(0.0, help="Sharpness-aware steps: take the gradient this far uphill (e.g. 0.05; "
                                            "doubles the time per step; 0: off)."),
        views: int = typer.Option(0, help="Run the frozen layers once on N augmented copies per photo and reuse them "
                                          "every epoch (faster on CPU; 0: augment live)."),
        balance: str = typer.Option("weights", help="Class imbalance: weights (loss), sampler or none."),
        augment: bool = typer.Option(True, "--augment/--no-augment", help="Crop/flip/rotate/colour augmentation."),
        patience: int = typer.Option(5, help="Epochs without val-loss improvement before a phase stops."),
        max_retries: int = typer.Option(5, help="Out-of-memory recoveries before giving up."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Start over instead of resuming this run."),
        run_dir: str = typer.Option(None, help="Checkpoints folder (default: runs/OUTPUT/<settings hash>)."),
    ) -> None:
        """MobileNetV2 image classifier from DATA/<class>/ photos (two-phase fine-tuning)."""
        from edgekit.trainer.waste import WasteConfig, train

        train(_config(
            WasteConfig,
            data=data, output=output, epochs=epochs, batch_size=batch_size, lr=lr, unfreeze=unfreeze,
            num_workers=num_workers, img_size=img_size, fit=fit, val_split=val_split, seed=seed, device=device,
            weights=weights, weights_style=weights_style, head_fraction=head_fraction, train_bn=train_bn,
            int8_grid=int8_grid, sam=sam, views=views, balance=balance, augment={"enabled": augment}, patience=patience,
            max_retries=max_retries, resume=not no_resume, run_dir=run_dir,
            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        ))


def _register_train_wakeword(train: typer.Typer) -> None:
    @train.command("wakeword")
    def train_wakeword(
        phrase: list[str] = typer.Option(None, "--phrase", help="Wake phrase; repeat for variants."),
        lang: str = typer.Option(None, help="Language of the phrase: en or es (default en)."),
        n_positive: int = typer.Option(None, help="Synthetic positive clips (default 2000)."),
        negatives: list[Path] = typer.Option(None, "--negatives", help="Folder of your own negative audio."),
        negative_phrase: list[str] = typer.Option(None, "--negative-phrase", help="Phrase that must not fire."),
        background: list[Path] = typer.Option(None, "--background", help="Folder of noise to mix in; repeatable."),
        engine: list[str] = typer.Option(None, "--engine", help="TTS engine (espeak-ng, festival, flite, piper); "
                                         "default: every installed one."),
        piper_voice: list[Path] = typer.Option(None, "--piper-voice", help="Piper voice model (.onnx)."),
        config: Path = typer.Option(None, "--config", help="YAML config (training_config.yaml keys)."),
        preset: str = typer.Option("default", help="Starting settings: default, or quick (demo, ≤5 min)."),
        epochs: int = typer.Option(None, help="Maximum epochs."),
        batch_size: int = typer.Option(None, help="Windows per step."),
        lr: float = typer.Option(None, "--lr", help="Peak learning rate (OneCycle)."),
        patience: int = typer.Option(None, help="Early-stopping patience in epochs."),
        target_fa_per_hour: float = typer.Option(None, help="False accepts per hour the threshold must meet."),
        target_frr: float = typer.Option(None, help="False-reject rate to report against."),
        arch: str = typer.Option(None, help="Head: wakeword_cnn (default) or wakeword_dnn."),
        seed: int = typer.Option(None, help="Seed for voices, augmentation and training."),
        workers: int = typer.Option(None, help="Processes for synthesis and features (0 = all cores)."),
        cache_dir: Path = typer.Option(None, help="Clip and feature cache folder."),
        run_dir: Path = typer.Option(None, help="Checkpoint folder (default runs/NAME/HASH; a rerun resumes)."),
        feature_models: Path = typer.Option(None, help="Folder with openWakeWord's melspectrogram/embedding models."),
        output: str = typer.Option(None, "--output", help="Bundle name (default: the first phrase)."),
    ) -> None:
        """openWakeWord-compatible wake word from synthetic speech."""
        from edgekit.trainer.wakeword.config import load_config
        from edgekit.trainer.wakeword.train import train_wakeword as run

        overrides = {
            "model": {"name": output, "arch": arch},
            "training": {"epochs": epochs, "batch_size": batch_size, "learning_rate": lr,
                         "early_stopping_patience": patience},
            "data": {"phrases": phrase, "lang": lang, "n_positive": n_positive, "negatives": negatives,
                     "negative_phrases": negative_phrase, "background": background, "engines": engine,
                     "piper_voices": piper_voice, "target_fpr": target_fa_per_hour, "target_fnr": target_frr},
            "seed": seed, "workers": workers, "cache_dir": cache_dir, "run_dir": run_dir,
        }
        run(load_config(config, preset, overrides), oww_folder=feature_models)


def _register_train_sequence(train: typer.Typer) -> None:
    from edgekit.trainer.models import ARCHS

    seq_archs = [n.removeprefix("seq_") for n, a in ARCHS.items() if a.task == "sequence-classification"]

    @train.command("sequence")
    def train_sequence(
        data: str = typer.Option(..., help="Folder of CSV files, one per recording, one row per frame."),
        name: str = typer.Option("sequence", help="Bundle name."),
        features: str = typer.Option(None, help="Feature columns, comma-separated (default: all but label/group/t)."),
        label_col: str = typer.Option("activity", help="Label column; empty cells are unlabeled frames."),
        include_labels: str = typer.Option(None, help="Only these labels become classes (comma-separated)."),
        window: int = typer.Option(128, help="Frames per window (the model's fixed input length)."),
        stride: int = typer.Option(64, help="Frames between window starts."),
        train_stride: int = typer.Option(None, help="Frames between training window starts (default: --stride)."),
        group_by: str = typer.Option("file", help="Split unit: file, file:REGEX (part of the name) or a column."),
        test_groups: str = typer.Option(None, help="Groups held out for the report (default: about 20%)."),
        val_groups: str = typer.Option(None, help="Groups for early stopping (default: one more group)."),
        arch: str = typer.Option("lstm", help=f"Architecture: {', '.join(seq_archs)}."),
        units: str = typer.Option("128,64", help="Cells per recurrent layer (channels per conv block)."),
        dense: int = typer.Option(32, help="Dense layer width before the output (0: none)."),
        dropout: float = typer.Option(0.3, help="Dropout after each recurrent/conv layer."),
        pool: str = typer.Option("mean", help="Recurrent archs: classify from the mean over steps or the last step."),
        epochs: int = typer.Option(50, help="Most epochs."),
        batch_size: int = typer.Option(16, help="Windows per step."),
        lr: float = typer.Option(1e-3, help="Adam learning rate."),
        patience: int = typer.Option(10, help="Epochs without improvement before stopping."),
        class_weights: str = typer.Option("auto", help="auto (inverse frequency) or none."),
        seed: int = typer.Option(0, help="Seed for split, initialisation and batch order."),
        device: str = typer.Option("auto", help="auto, cuda or cpu."),
        run_dir: str = typer.Option(None, help="Checkpoints and history (default: runs/NAME/HASH of settings "
                                               "and data)."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Start over instead of resuming this run."),
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
        train_sequence(_config(
            SequenceConfig, data=data, name=name, features=items(features), label_col=label_col,
            include_labels=items(include_labels), window=window, stride=stride, train_stride=train_stride,
            group_by=group_by, test_groups=items(test_groups), val_groups=items(val_groups), arch=arch,
            units=unit_list, dense=dense, dropout=dropout, pool=pool, epochs=epochs, batch_size=batch_size, lr=lr,
            patience=patience, class_weights=class_weights, seed=seed, device=device, run_dir=run_dir,
            resume=not no_resume))


def _config(cls, **fields):
    """Build a pydantic config; a bad value becomes one sentence naming the option."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}.")


def _register_export(app: typer.Typer) -> None:
    from edgekit.trainer.formats import help_text

    def split(text: str | None) -> list[str]:
        return [t.strip() for t in (text or "").split(",") if t.strip()]

    @app.command("export")
    def export(
        bundle: str = typer.Argument(..., help="Bundle folder or name (models/waste/v3, waste)."),
        fmt: str = typer.Option(None, "--format", help=help_text()),
        calib_samples: int = typer.Option(200, help="Training samples that calibrate int8 (at least 32)."),
        calib_method: str = typer.Option("minmax", help="onnx-int8 calibration: minmax, entropy or percentile."),
        max_drop: float = typer.Option(1.0, help="Accuracy points a format may lose before it is rejected."),
        latency_runs: int = typer.Option(50, help="Single-sample runs behind the median latency (0: not measured)."),
    ) -> None:
        """Export a bundle to ONNX/TFLite (fp32, int8) with an accuracy gate.

        Exits 3 when the gate rejects a format (its file stays in the bundle, marked rejected).
        """
        from edgekit.trainer.export import ExportConfig, export_bundle

        export_bundle(_config(ExportConfig, bundle=bundle, formats=split(fmt), calib_samples=calib_samples,
                              calib_method=calib_method, max_drop=max_drop, latency_runs=latency_runs))

    @app.command("eval")
    def evaluate(
        bundle: str = typer.Argument(..., help="Bundle folder or name."),
        data: str = typer.Option(None, help="Labeled images (DIR/<class>/), a folder of CSVs (sequence bundles) "
                                            "or an .npz with x and y "
                                            "(default: the bundle's validation split)."),
        fmt: str = typer.Option(None, "--format", help="Comma-separated formats (default: every exported one)."),
        threads: int = typer.Option(1, help="Inference threads."),
        latency_runs: int = typer.Option(50, help="Single-sample runs behind the median latency (0: not measured)."),
    ) -> None:
        """Evaluate any exported format of a bundle on a labeled folder, with the export gate's code."""
        from edgekit.trainer.export import EvalConfig, eval_bundle

        eval_bundle(_config(EvalConfig, bundle=bundle, data=data, formats=split(fmt), threads=threads,
                            latency_runs=latency_runs))
