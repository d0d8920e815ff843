"""The waste classifier's bundle, its verdict and the result tables.

Files: `model.pt` (state_dict; format pytorch, role checkpoint), `split.json` (the dataset root and the
train/val photos with their label index: export's accuracy gate and calibration evaluate on `val`),
`history.json` (both phases, epochs numbered through), `config.json`, `evaluation_report.json`
(per-class precision/recall/F1, confusion matrix, verdict, skipped files), `curves.png`, `confusion.png`.
The input is [1, 3, H, W] RGB, brought to (H, W) by `input.preprocess.fit` (stretch by default) with PIL
bilinear, then `pixel * scale + offset`, then `(x - mean) / std`; the model outputs logits.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table

from edgekit import atomic
from edgekit.bundle import Bundle, BundleWriter, InputSpec, Provenance, git_commit
from edgekit.console import console

if TYPE_CHECKING:
    from edgekit.trainer.engine import FitResult
    from edgekit.trainer.waste import WasteConfig, WeightStyle
    from edgekit.trainer.waste_data import Prepared

# (lowest accuracy, verdict, what to do): the seed guide's scale
VERDICTS: list[tuple[float, str, str]] = [
    (0.90, "excellent", "ready to export and deploy."),
    (0.85, "very good", "usable; a few more photos of the most confused classes would help."),
    (0.80, "good", "usable; add varied photos (angles, light, backgrounds) to the weaker classes."),
    (0.00, "poor", "collect more photos (at least 100 per class), check for mislabelled ones with "
               "`edgekit data analyze`, and train longer or unfreeze more layers."),
]


def verdict(accuracy: float) -> tuple[str, str]:
    """(verdict word, advice) for a validation accuracy in [0, 1]."""
    for low, word, advice in VERDICTS:
        if accuracy >= low:
            return word, advice
    return VERDICTS[-1][1], VERDICTS[-1][2]


def joined_history(results: list[FitResult]) -> list[dict[str, Any]]:
    """Both phases' epoch records, numbered through, each tagged with its phase."""
    out: list[dict[str, Any]] = []
    for phase, r in enumerate(results, start=1):
        for rec in r.history:
            out.append({**rec, "phase": phase, "phase_epoch": rec["epoch"], "epoch": len(out) + 1})
    return out


def evaluation_report(prep: Prepared, pred: np.ndarray) -> dict[str, Any]:
    """Per-class metrics of `pred` on the validation split, the verdict, and the files left out."""
    from edgekit.trainer.metrics import classification_report

    report = classification_report(prep.y[prep.split.val], pred, prep.labels)
    word, advice = verdict(report["accuracy"])
    report.update(verdict=word, advice=advice, skipped_files=[{"file": f, "reason": r} for f, r in prep.skipped])
    return report


def write_bundle(cfg: WasteConfig, prep: Prepared, model: Any, style: WeightStyle, weights_source: str,
                 pred: np.ndarray, results: list[FitResult]) -> Bundle:
    """Write every file into a staging folder and commit the bundle atomically."""
    import torch

    from edgekit.trainer.plots import plot_confusion, plot_curves

    report = evaluation_report(prep, pred)
    history = joined_history(results)
    w = BundleWriter(cfg.output)
    try:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
        atomic.write_bytes(w.add("model.pt", "pytorch", "checkpoint"), buf.getvalue())
        split = {"root": str(prep.root),
                 "train": [[prep.files[i], int(prep.y[i])] for i in prep.split.train],
                 "val": [[prep.files[i], int(prep.y[i])] for i in prep.split.val]}
        atomic.write_json(w.add("split.json", "json", "data"), split)
        atomic.write_json(w.add("history.json", "json", "report"), history)
        atomic.write_json(w.add("config.json", "json", "other"), cfg.model_dump(mode="json"))
        atomic.write_json(w.add("evaluation_report.json", "json", "report"), report)
        plot_confusion(report["confusion_matrix"], prep.labels, w.add("confusion.png", "png", "plot"))
        plot_curves(history, w.add("curves.png", "png", "plot"))
        arch = {"name": "mobilenet_v2", "kwargs": {"num_classes": len(prep.labels), "padding": style.padding,
                                                   "width_mult": cfg.width_mult, "dropout": cfg.dropout}}
        per_class = {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in d.items()}
                     for k, d in report["per_class"].items()}
        return w.commit(
            task="image-classification",
            labels=prep.labels,
            input=InputSpec(shape=[1, 3, cfg.img_size, cfg.img_size], layout="NCHW",
                            preprocess=style.preprocess(cfg.img_size, cfg.fit)),
            metrics={"val_accuracy": report["accuracy"], "val_macro_f1": report["macro_f1"],
                     "n_val": report["n"], "per_class": per_class},
            thresholds={"default": 0.5},
            training_config=cfg.model_dump(mode="json"),
            provenance=Provenance(git_commit=git_commit(), torch=torch.__version__, device=_device(cfg)),
            extra={"arch": arch, "output": "logits", "weights": weights_source,
                   "epochs_run": [r.epochs_run for r in results], "verdict": report["verdict"]},
        )
    except BaseException:
        w.abort()
        raise


def _device(cfg: WasteConfig) -> str:
    from edgekit.trainer.engine import resolve_device

    return str(resolve_device(cfg.device))


def print_data_summary(prep: Prepared) -> None:
    """Classes with their train/val counts, and the files left out."""
    t = Table(title=f"Dataset {prep.root}", title_justify="left")
    for col in ("class", "train", "val"):
        t.add_column(col, justify="left" if col == "class" else "right")
    tr, va = np.bincount(prep.y[prep.split.train], minlength=len(prep.labels)), \
        np.bincount(prep.y[prep.split.val], minlength=len(prep.labels))
    for i, label in enumerate(prep.labels):
        t.add_row(label, str(tr[i]), str(va[i]))
    console.print(t)
    if prep.skipped:
        console.print(f"[yellow]Skipped {len(prep.skipped)} unusable file(s)[/]: "
                      + ", ".join(f"{f} ({r})" for f, r in prep.skipped[:5])
                      + (" ..." if len(prep.skipped) > 5 else ""))


def print_result(bundle: Bundle) -> None:
    """Per-class precision/recall/F1 on the validation photos, the verdict, and where the bundle is."""
    m = bundle.manifest.metrics
    t = Table(title=f"Validation: accuracy {m['val_accuracy']:.1%}, macro F1 {m['val_macro_f1']:.3f}",
              title_justify="left")
    for col in ("class", "precision", "recall", "F1", "photos"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for label, c in m["per_class"].items():
        t.add_row(label, f"{c['precision']:.2f}", f"{c['recall']:.2f}", f"{c['f1']:.2f}", str(c["support"]))
    console.print(t)
    word, advice = verdict(m["val_accuracy"])
    color = {"excellent": "green", "very good": "green", "good": "yellow"}.get(word, "red")
    console.print(f"[{color}]Accuracy {m['val_accuracy']:.1%}: {word}[/] — {advice}")
    console.print(f"Bundle: {bundle.path}")
