"""Wake-word quality on real audio: FRR at 0.1 / 0.5 / 1 false accepts per hour, and a DET plot.

Any openWakeWord-compatible model (.onnx / .tflite head, or an edgekit bundle) runs inside the real
`openwakeword.Model`, streamed 80 ms at a time as on the device; scores go through the device's
detector (`edgekit.edge.detector`) via the trainer's sweep. Positives: every file of --positives, each
with 2 s of quiet noise before (so no earlier audio is in the window) and 1 s after. Negatives: every
file of the --negatives folders, concatenated into one stream.

Arguments: MODEL (the subject), --positives DIR, --negatives DIR (repeatable), --baseline MODEL
(repeatable: scored on the same audio in the same run; the table ends with the subject's FRR relative to
the best baseline at each operating point), --out PNG for the DET plot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME = 1280


def onnx_of(model: str, tmp: Path) -> tuple[Path, dict, str]:
    """A model file for openwakeword, the bundle's decision settings (if a bundle), and a display name."""
    p = Path(model)
    if p.suffix in (".onnx", ".tflite") and p.is_file():
        return p, {}, p.name
    from edgekit.bundle import resolve

    b = resolve(model)
    existing = b.model_file("onnx")
    if existing is not None:
        return existing, b.manifest.thresholds, f"{b.name}/{b.version}"
    import torch

    from edgekit.trainer.models import load_from_bundle

    out = tmp / f"{b.name}.onnx"
    torch.onnx.export(load_from_bundle(b), torch.zeros(1, 16, 96), str(out), input_names=["x"],
                      output_names=["score"], opset_version=13, dynamo=False)
    return out, b.manifest.thresholds, f"{b.name}/{b.version}"


def stream(oww, audio: np.ndarray) -> np.ndarray:
    """openwakeword scores, one per 80 ms frame, for int16 `audio`, from the state the device starts in.

    `oww.reset()` refills the feature history with random noise, which scores like a wake word on the
    first second; `silence_history` restores the silent start that `make_model` and the device use.
    """
    from edgekit.edge.oww import silence_history
    from edgekit.edge.wakeword import score_stream

    oww.reset()
    silence_history(oww)
    frames = (audio[i * FRAME:(i + 1) * FRAME] for i in range(len(audio) // FRAME))
    return next(iter(score_stream(oww, frames).values()))


def load_folder(folders: list[str]) -> list[np.ndarray]:
    from edgekit.trainer.wakeword.negatives import audio_files, read_audio

    return [read_audio(f) for f in audio_files([Path(f) for f in folders])]


def pad(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from edgekit.trainer.wakeword.negatives import colored_noise

    pre, post = colored_noise(32000, "pink", rng) * 0.003, colored_noise(16000, "pink", rng) * 0.003
    return np.concatenate([pre, x, post])


def to16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def score_model(path: Path, feature_dir: Path, positives: list[np.ndarray], negatives: np.ndarray):
    from edgekit.edge.oww import make_model

    framework = "tflite" if path.suffix == ".tflite" else "onnx"
    oww = make_model([path], framework, feature_dir)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    pos = [stream(oww, to16(pad(x, rng))) for x in positives]
    width = max(len(s) for s in pos)
    pos_m = np.stack([np.pad(s, (0, width - len(s))) for s in pos])
    neg = stream(oww, to16(negatives))
    frames = sum(len(s) for s in pos) + len(neg)
    return pos_m, neg, frames / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="bundle, or openWakeWord .onnx/.tflite head")
    ap.add_argument("--positives", required=True, help="folder of real wake-word recordings")
    ap.add_argument("--negatives", action="append", required=True, help="folder of negative audio (repeat)")
    ap.add_argument("--baseline", action="append", default=[], help="another model to score on the same audio")
    ap.add_argument("--feature-models", default=None, help="folder with melspectrogram/embedding .onnx")
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--refractory-s", type=float, default=None)
    ap.add_argument("--out", default="runs/bench/wakeword_det.png", help="DET plot (PNG)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from edgekit.paths import openwakeword_assets
    from edgekit.trainer.wakeword import evaluate as ev

    feature_dir = Path(args.feature_models) if args.feature_models else openwakeword_assets()
    positives = load_folder([args.positives])
    negatives = np.concatenate(load_folder(args.negatives))
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(f"{len(positives)} positives, negative stream {len(negatives) / 16000 / 60:.1f} min "
                  f"(1 false accept = {3600 / (len(negatives) / 16000):.2f} FA/h)")
    curves, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate([args.model, *args.baseline]):
            path, th, label = onnx_of(m, Path(tmp))
            patience = args.patience or th.get("patience", 1)
            refractory = args.refractory_s if args.refractory_s is not None else th.get("refractory_s", 2.0)
            pos, neg, fps = score_model(path, feature_dir, positives, negatives)
            pts = ev.sweep(pos, neg, patience, refractory)
            name = label if i else f"{label} (subject)"
            curves[name] = pts
            own = None
            if "threshold" in th:
                own = ev.sweep(pos, neg, patience, refractory, thresholds=[th["threshold"]])[0]
            rows.append((name, [ev.frr_at(pts, fa) for fa in (0.1, 0.5, 1.0)], own, fps))
    t = Table(title="FRR on real recordings at a false-accept budget")
    for col in ("model", "FRR@0.1FA/h", "FRR@0.5FA/h", "FRR@1FA/h", "at bundle threshold", "frames/s"):
        t.add_column(col, justify="right" if col != "model" else "left")
    for name, frrs, own, fps in rows:
        at = f"t={own.threshold:g}: FRR {100 * own.frr:.0f}%, {own.fa_per_hour:.1f} FA/h" if own else "-"
        t.add_row(name, *(f"{100 * f:.0f}%" for f in frrs), at, f"{fps:.0f}")
    if len(rows) > 1:
        base = [min(r[1][k] for r in rows[1:]) for k in range(3)]
        ratios = (f"{rows[0][1][k] / b:.2f}" if b > 0 else "-" for k, b in enumerate(base))
        t.add_row("subject / best baseline", *ratios, "", "")
    console.print(t)
    out = Path(args.out)
    ev.det_plot(curves, out, 0.5, title="DET on real recordings")
    console.print(f"DET plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
