"""CPU cost per 80 ms frame of edgekit's wake-word path vs raw `openwakeword.Model.predict`, on one core.

Both run the same audio (noise and speech from the shared data with "alexa" clips mixed in) in the
same process, interleaved frame by frame with alternating order and timed by thread CPU time, so
machine load hits both alike. edgekit's path is what the service
does per frame: `WakewordListener.process` (predict + one detector per model) plus the metrics.
Target: edgekit / raw <= 1.05. The real-time factor is CPU seconds per second of audio (lower is better).

    python bench/wakeword_runtime.py                      # onnx, 60 s of audio, 3 rounds
    python bench/wakeword_runtime.py --framework tflite --seconds 120 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from edgekit.console import console
from edgekit.edge.audio import SAMPLE_RATE, frames_of, read_wav
from edgekit.edge.detector import DetectorConfig
from edgekit.edge.metrics import Metrics
from edgekit.edge.oww import make_model
from edgekit.edge.wakeword import WakewordListener
from edgekit.paths import shared_dir

TARGET = 1.05


def test_audio(shared: Path, seconds: float) -> np.ndarray:
    """Noise and spoken words, with the alexa clip every ~10 s, `seconds` long."""
    parts = [read_wav(shared / "data" / "background-noise" / "doing_the_dishes.wav")]
    parts += [read_wav(p) for p in sorted((shared / "data" / "speech-commands-mini").rglob("*.wav"))[:60]]
    clip = read_wav(shared / "assets" / "openwakeword" / "alexa_test.wav")
    audio = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)].copy()
    for start in range(2 * SAMPLE_RATE, len(audio) - len(clip), 10 * SAMPLE_RATE):
        audio[start:start + len(clip)] = clip
    return audio


def _model(oww: Path, framework: str):
    return make_model([oww / f"alexa_v0.1.{framework}"], framework, oww)  # history starts silent


def run_interleaved(oww: Path, framework: str, frames: list[np.ndarray]) -> dict[str, np.ndarray | int]:
    """Per-frame CPU time of both paths, interleaved frame by frame (order alternating), so load hits both."""
    raw = _model(oww, framework)
    listener = WakewordListener(_model(oww, framework), {"alexa_v0.1": DetectorConfig()}, {"alexa_v0.1": "bench"})
    metrics = Metrics()
    t_raw, t_ours = np.zeros(len(frames)), np.zeros(len(frames))
    hot = detections = 0

    def ours(f: np.ndarray) -> int:
        s = time.perf_counter()  # what Service._on_audio_frame does per frame
        found = listener.process(f)
        metrics.observe_latency(time.perf_counter() - s, task="wakeword")
        return len(found)

    for i, f in enumerate(frames):
        for which in ((0, 1) if i % 2 else (1, 0)):
            t0 = time.thread_time()
            if which == 0:
                hot += raw.predict(f)["alexa_v0.1"] >= 0.5
                t_raw[i] = time.thread_time() - t0
            else:
                detections += ours(f)
                t_ours[i] = time.thread_time() - t0
    return {"raw": t_raw, "ours": t_ours, "hot": int(hot), "detections": detections}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=["onnx", "tflite"], default="onnx")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    shared = shared_dir(required=True)
    oww = shared / "assets" / "openwakeword"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, like a busy Pi
    frames = list(frames_of(test_audio(shared, args.seconds)))
    audio_s = len(frames) * 0.08
    raw, ours = [], []
    for _ in range(args.rounds):
        res = run_interleaved(oww, args.framework, frames)
        raw.append(float(res["raw"].sum()))
        ours.append(float(res["ours"].sum()))
    r, e = statistics.median(raw), statistics.median(ours)
    table = Table(title=f"wake word per 80 ms frame, {args.framework}, {audio_s:.0f} s audio, median of {args.rounds}")
    for col in ("path", "ms/frame (CPU)", "real-time factor", "result"):
        table.add_column(col)
    table.add_row("openwakeword Model.predict", f"{1000 * r / len(frames):.3f}", f"{r / audio_s:.4f}",
                  f"{res['hot']} frames >= 0.5")
    table.add_row("edgekit listener + detector + metrics", f"{1000 * e / len(frames):.3f}", f"{e / audio_s:.4f}",
                  f"{res['detections']} detections")
    console.print(table)
    ratio = e / r
    verdict = "meets" if ratio <= TARGET else "misses"
    console.print(f"edgekit / raw = {ratio:.3f} ({verdict} the <= {TARGET} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
