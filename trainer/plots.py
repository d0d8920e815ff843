"""Training plots as PNG files (matplotlib's Agg backend: no display needed on a cloud VM)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekit.atomic import atomic_path

log = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out `fig`, write it to `path` as PNG (atomically) and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train against validation, written to `path` (PNG).

    Args:
        history: one dict per epoch with `epoch` and any of `train_loss`, `val_loss`, `train_acc`,
            `val_acc` (accuracies as fractions); other metrics are ignored here.
        path: where the PNG goes (written atomically).
    """
    plt = _pyplot()
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy (%)")):
        scale = 100.0 if metric == "acc" else 1.0
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{metric}"
            points = [(e, h[key] * scale) for e, h in zip(epochs, history, strict=True) if h.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=split, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(plt, fig, path)


def plot_curves_quietly(history: Sequence[dict[str, Any]], path: Path) -> None:
    """`plot_curves` for the training loop: the curves are a convenience, so a failure is logged, never fatal."""
    try:
        plot_curves(history, path)
    except Exception as e:  # noqa: BLE001
        log.warning("Could not draw %s: %s", path, e)


def plot_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells, as PNG."""
    import numpy as np

    plt = _pyplot()
    path = Path(path)
    m = np.asarray(cm, dtype=float)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    row_sums = m.sum(axis=1, keepdims=True)
    ax.imshow(np.divide(m, row_sums, out=np.zeros_like(m), where=row_sums > 0), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            share = m[i, j] / row_sums[i, 0] if row_sums[i, 0] else 0.0
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color="white" if share > 0.5 else "black")
    return _save(plt, fig, path)
