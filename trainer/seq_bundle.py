"""The sequence classifier's bundle: what the exporter and the device read, and the result table.

Files: `model.pt` (state_dict; format pytorch, role checkpoint), `eval_data.npz` (normalised float32
windows: `x_train`/`y_train` for int8 calibration, `x_val`/`y_val` = the held-out test groups, which
the export accuracy gate measures), `label_encoder.json`, `evaluation_report.json`, `confusion.png`,
`curves.png`. The input is [1, window, features] (layout NTF) with the training normalisation in
`input.preprocess`; the model outputs logits (`extra["output"]`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table

from edgekit import atomic
from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess, Provenance, git_commit
from edgekit.console import console

if TYPE_CHECKING:
    from edgekit.trainer.sequence import Prepared, SequenceConfig

CALIBRATION_WINDOWS = 512
"""Training windows kept in eval_data.npz for int8 calibration (a seeded sample, not all of them)."""


def _eval_data(prep: Prepared, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n = len(prep.train)
    keep = np.sort(rng.choice(n, size=min(n, CALIBRATION_WINDOWS), replace=False))
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=prep.train.x[keep].astype(np.float32), y_train=prep.train.y[keep],
                        x_val=prep.test.x.astype(np.float32), y_val=prep.test.y)
    return buf.getvalue()


def write_bundle(cfg: SequenceConfig, prep: Prepared, model: Any, report: dict[str, Any],
                 history: list[dict[str, Any]]) -> Bundle:
    """Write every file into a staging folder and commit the bundle atomically."""
    import torch

    from edgekit.trainer.plots import plot_confusion, plot_curves

    w = BundleWriter(cfg.name)
    try:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        atomic.write_bytes(w.add("model.pt", "pytorch", "checkpoint"), buf.getvalue())
        atomic.write_bytes(w.add("eval_data.npz", "npz", "data"), _eval_data(prep, cfg.seed))
        atomic.write_json(w.add("label_encoder.json", "json", "other"),
                          {"label_col": cfg.label_col, "classes": prep.labels,
                           "index": {c: i for i, c in enumerate(prep.labels)}})
        atomic.write_json(w.add("evaluation_report.json", "json", "report"), report)
        plot_confusion(report["confusion_matrix"], prep.labels, w.add("confusion.png", "png", "plot"))
        if history:
            plot_curves(history, w.add("curves.png", "png", "plot"))
        pre = Preprocess(window=cfg.window, stride=cfg.stride, features=prep.features,
                         mean=prep.norm.mean.tolist(), std=prep.norm.std.tolist())
        return w.commit(
            task="sequence-classification",
            labels=prep.labels,
            input=InputSpec(shape=[1, cfg.window, len(prep.features)], layout="NTF", preprocess=pre),
            metrics={"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "n_test": report["n"]},
            training_config=cfg.model_dump(mode="json"),
            provenance=Provenance(git_commit=git_commit(), torch=torch.__version__),
            extra={"arch": cfg.arch_record(len(prep.features), len(prep.labels)), "output": "logits",
                   "label_col": cfg.label_col, "split": prep.split,
                   "eval_data": "x_val/y_val are the windows of the test groups"},
        )
    except BaseException:
        w.abort()
        raise


def print_result(report: dict[str, Any], bundle: Bundle) -> None:
    """Per-class precision/recall/F1 on the test groups, then where the bundle is."""
    t = Table(title=f"Test groups {', '.join(report['split']['test'])}: accuracy {report['accuracy']:.1%}, "
                    f"macro F1 {report['macro_f1']:.3f}", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "windows"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for label, m in report["per_class"].items():
        t.add_row(label, f"{m['precision']:.2f}", f"{m['recall']:.2f}", f"{m['f1']:.2f}", str(m["support"]))
    console.print(t)
    console.print(f"Bundle: {bundle.path}")
