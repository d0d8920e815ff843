"""The wake-word bundle and the closing table.

The bundle holds what the exporter and the device need: `model.pt` (state_dict, rebuilt through
`extra.arch`), the decision settings under the names of `edge.detector.DetectorConfig`, `eval_data.npz`
(feature windows the exporter calibrates int8 with and gates on), the DET curve, history and curves.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import atomic
from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess, Provenance, git_commit
from edgekit.trainer.wakeword import evaluate as ev
from edgekit.trainer.wakeword.config import WakewordConfig
from edgekit.trainer.wakeword.dataset import WakewordData

if TYPE_CHECKING:
    import torch

EVAL_MAX = 1500
"""Windows per class and split in eval_data.npz (a few thousand at most)."""


def eval_arrays(data: WakewordData, seed: int) -> dict[str, np.ndarray]:
    """Balanced samples of training and validation windows with labels (1 = wake word)."""
    from edgekit.trainer.wakeword.features import windows

    rng = np.random.default_rng(seed)

    def pick(x: np.ndarray, n: int) -> np.ndarray:
        idx = np.sort(rng.choice(len(x), size=min(n, len(x)), replace=False))
        return np.asarray(x[idx], dtype=np.float32)

    val_pos = np.asarray(data.val_pos[:, :16], dtype=np.float32)  # window 0: aligned like training
    val_neg = windows(data.val_stream, stride=3)
    parts = {"train": (pick(data.x_pos, EVAL_MAX // 2), pick(data.x_neg, EVAL_MAX // 2)),
             "val": (pick(val_pos, EVAL_MAX // 2), pick(val_neg, EVAL_MAX // 2))}
    out = {}
    for split, (p, n) in parts.items():
        out[f"x_{split}"] = np.concatenate([p, n])
        out[f"y_{split}"] = np.concatenate([np.ones(len(p), np.int64), np.zeros(len(n), np.int64)])
    return out


def write_bundle(cfg: WakewordConfig, model: torch.nn.Module, data: WakewordData, result: Any,
                 points: list[ev.Point], chosen: ev.Point, met: bool, near_miss_rate: float) -> Bundle:
    import torch

    from edgekit.trainer.plots import plot_curves
    from edgekit.trainer.wakeword.train import arch_kwargs

    w = BundleWriter(cfg.name)
    try:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic.write_bytes(w.add("model.pt", "pytorch", "checkpoint"), buf.getvalue())
        buf = io.BytesIO()
        np.savez_compressed(buf, **eval_arrays(data, cfg.seed))
        atomic.write_bytes(w.add("eval_data.npz", "npz", "data"), buf.getvalue())
        ev.det_plot({cfg.name: points}, w.add("det.png", "png", "plot"), cfg.data.target_fpr, chosen,
                    title=f"{cfg.name}: held-out voices")
        history = json.loads(json.dumps(result.history, default=float))
        atomic.write_json(w.add("history.json", "json", "report"), history)
        if history:
            plot_curves(history, w.add("curves.png", "png", "plot"))
        atomic.write_json(w.add("det.json", "json", "report"), ev.points_json(points))
        metrics = {"FRR": round(chosen.frr, 4), "FA/h": round(chosen.fa_per_hour, 3), "F1": round(chosen.f1, 4),
                   "target_fa_per_hour": cfg.data.target_fpr, "target_frr": cfg.data.target_fnr,
                   "target_met": bool(met and chosen.frr <= cfg.data.target_fnr),
                   "near_miss_accept_rate": round(near_miss_rate, 4), "val_positive_clips": chosen.positives,
                   "val_stream_hours": round(data.stats["windows"]["val_stream_minutes"] / 60, 4),
                   "best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
        return w.commit(
            task="wakeword",
            labels=[cfg.name],
            input=InputSpec(shape=[1, 16, 96], layout="NTF",
                            preprocess=Preprocess(sample_rate=16000, frame_size=1280, window=16)),
            metrics=metrics,
            thresholds={"threshold": chosen.threshold, "patience": cfg.detector.patience,
                        "refractory_s": cfg.detector.refractory_s},
            training_config=cfg.model_dump(mode="json"),
            provenance=Provenance(git_commit=git_commit(), torch=torch.__version__),
            extra={"arch": {"name": cfg.model.arch, "kwargs": arch_kwargs(cfg)}, "output": "probs",
                   "phrases": cfg.data.phrases, "lang": cfg.data.lang,
                   "features": "openwakeword melspectrogram + embedding_model", "data": data.stats},
        )
    except BaseException:
        w.abort()
        raise


def print_result(cfg: WakewordConfig, bundle: Bundle, chosen: ev.Point, met: bool) -> None:
    from rich.table import Table

    from edgekit.console import console

    t = Table(title=f"wake word {cfg.name!r} (held-out voices)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("target", justify="right")
    t.add_row("threshold", f"{chosen.threshold:g}", "")
    t.add_row("false rejects", f"{100 * chosen.frr:.1f}% of {chosen.positives}", f"≤{100 * cfg.data.target_fnr:g}%")
    t.add_row("false accepts / hour", f"{chosen.fa_per_hour:.2f} ({chosen.false_accepts})",
              f"≤{cfg.data.target_fpr:g}" + ("" if met else " (missed)"))
    t.add_row("F1", f"{chosen.f1:.3f}", "")
    t.add_row("near-misses that fire", f"{100 * bundle.manifest.metrics['near_miss_accept_rate']:.1f}%", "")
    stats = bundle.manifest.extra["data"]
    t.add_row("negative stream", f"{stats['windows']['val_stream_minutes']:.1f} min", "")
    tts, feats = stats["tts"], stats["features"]
    t.add_row("TTS clips (new)", f"{tts['clips']} ({tts['new']}, {tts['clips_per_s'] or '-'} /s)", "")
    t.add_row("feature clips (new)", f"{feats['clips']} ({feats['new']}, {feats['clips_per_s'] or '-'} /s)", "")
    console.print(t)
    console.print(f"Bundle: {bundle.path}")
