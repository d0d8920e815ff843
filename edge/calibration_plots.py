"""Calibration plots as PNG: the wake word's DET curve, the classifier's reliability diagram.

matplotlib is not part of the `edge` extra (a Pi may not have it): without it the plot is skipped with
a warning and the numbers in calibration.json are all there is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgekit import atomic

log = logging.getLogger(__name__)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def det_plot(result: dict[str, Any], path: Path) -> Path | None:
    """FRR against FA/h per patience (at the chosen refractory and VAD threshold); without positives,
    FA/h against threshold. Returns the path, or None when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        log.warning("matplotlib is not installed: skipped %s", path.name)
        return None
    choice, target, rows = result["choice"], result["target_fa_per_hour"], result["sweep"]
    ref = choice or rows[0]
    keep = [r for r in rows if r["refractory_s"] == ref["refractory_s"] and r["vad_threshold"] == ref["vad_threshold"]]
    has_pos = bool(result["data"]["positives"])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    # symlog keeps zero false accepts on the axis; linear below one false accept in the whole recording
    linthresh = min(target, 1 / max(result["data"]["ambient_hours"], 1e-9))
    for pat in sorted({r["patience"] for r in keep}):
        line = sorted((r for r in keep if r["patience"] == pat), key=lambda r: r["threshold"])
        fa = [r["fa_per_hour"] for r in line]
        if has_pos:
            ax.plot(fa, [r["frr"] for r in line], marker=".", label=f"patience {pat}")
        else:
            ax.plot([r["threshold"] for r in line], fa, marker=".", label=f"patience {pat}")
    if has_pos:
        ax.axvline(target, color="grey", ls="--", label=f"target {target:g}/h")
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set(xlabel="false accepts per hour (ambient)", ylabel="false-reject rate (positives)", ylim=(-0.03, 1.03))
        if choice:
            ax.plot([choice["fa_per_hour"]], [choice["frr"]], "r*", ms=14, label="chosen")
    else:
        ax.axhline(target, color="grey", ls="--", label=f"target {target:g}/h")
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set(xlabel="threshold", ylabel="false accepts per hour (ambient)")
        if choice:
            ax.plot([choice["threshold"]], [choice["fa_per_hour"]], "r*", ms=14, label="chosen")
    ax.set_title(f"{result['model']['name']}: refractory {ref['refractory_s']:g} s, "
                 f"VAD {ref['vad_threshold']:g}, {result['data']['ambient_hours'] * 60:.1f} min ambient", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def reliability_plot(confidences: Any, correct: Any, path: Path, bins: int = 10) -> Path | None:
    """Accuracy against confidence of the top class, in equal-width bins, with the bin counts."""
    import numpy as np

    plt = _pyplot()
    if plt is None:
        log.warning("matplotlib is not installed: skipped %s", path.name)
        return None
    conf, ok = np.asarray(confidences, float), np.asarray(correct, bool)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    centers = (edges[:-1] + edges[1:]) / 2
    counts = np.bincount(idx, minlength=bins)
    acc = np.array([ok[idx == b].mean() if counts[b] else np.nan for b in range(bins)])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.bar(centers, np.nan_to_num(acc), width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    for c, n, a in zip(centers, counts, acc, strict=True):
        if n:
            ax.text(c, min(a, 0.95) + 0.02, str(n), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence (top class)", ylabel="accuracy",
           title="reliability (numbers: images per bin)")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path
