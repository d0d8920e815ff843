"""Why calibration sweeps stored scores: the sweep vs re-running the detector state machine per setting.

Part 1 scores real ambient audio (the shared background noise) once through openWakeWord, as
`edgekit calibrate wakeword` does, and reports the speed against real time. Part 2 sweeps the default
grid (19 thresholds x 4 patience x 4 refractory = 304 settings) over one hour of scores, built by
repeating the real scores, with `detector_sweep.sweep`, and times the baseline, `run_detector` on every
frame, for a sample of the same settings in the same run; their detections are compared too.

    python bench/calibrate_sweep.py
    python bench/calibrate_sweep.py --seconds 120 --baseline-settings 40
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from edgekit.console import console
from edgekit.edge.calibrate_wakeword import WakewordCalibration, open_model, score_chunks
from edgekit.edge.detector import run_detector
from edgekit.edge.detector_sweep import ScoreTrack, fires, sweep
from edgekit.edge.record import RATE, list_wavs, read_wav
from edgekit.paths import openwakeword_assets, shared_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="Seconds of real ambient audio to score.")
    ap.add_argument("--baseline-settings", type=int, default=20, help="Settings re-run frame by frame.")
    args = ap.parse_args()
    shared, oww = shared_dir(required=True), openwakeword_assets()
    files = list_wavs([shared / "data" / "background-noise"], "ambient")
    audio = np.concatenate([read_wav(f) for f in files])[: int(args.seconds * RATE)]

    model, name = open_model(Path(oww) / "alexa_v0.1.onnx", "onnx", Path(oww), vad=False)
    t0 = time.perf_counter()
    track = score_chunks(model, name, [audio], warmup_s=2.0)
    score_s = time.perf_counter() - t0

    frames_per_hour = int(3600 / 0.08)
    hour = ScoreTrack(np.resize(track.scores, frames_per_hour))
    cfg = WakewordCalibration(model="alexa", ambient=[shared])
    t0 = time.perf_counter()
    rows = sweep(hour, [], cfg.thresholds, cfg.patiences, cfg.refractories, [0.0])
    sweep_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    sample = [rows[i] for i in rng.choice(len(rows), min(args.baseline_settings, len(rows)), replace=False)]
    t0 = time.perf_counter()
    same = 0
    for r in sample:
        times = [d.time_s for d in run_detector(hour.scores, r.setting.detector())]
        same += times == [(i + 1) * 0.08 for i in fires(hour, r.setting)]
    base_per = (time.perf_counter() - t0) / len(sample)

    t = Table(title="calibration: score once, sweep from stored scores", title_justify="left")
    for col in ("step", "work", "time", "per setting", "ratio"):
        t.add_column(col, justify="left" if col in ("step", "work") else "right")
    t.add_row("score ambient (openWakeWord)", f"{len(audio) / RATE:.0f} s audio", f"{score_s:.1f} s", "-",
              f"{len(audio) / RATE / score_s:.0f}x real time")
    t.add_row("sweep stored scores", f"{len(rows)} settings x 1 h", f"{sweep_s:.2f} s",
              f"{sweep_s / len(rows) * 1000:.1f} ms", "1.0")
    t.add_row("baseline: run_detector per frame", f"{len(sample)} settings x 1 h", f"{base_per * len(sample):.1f} s",
              f"{base_per * 1000:.1f} ms", f"{base_per / (sweep_s / len(rows)):.0f}x slower")
    console.print(t)
    console.print(f"identical detections at {same}/{len(sample)} sampled settings; the full grid frame by frame "
                  f"would take ~{base_per * len(rows):.0f} s")


if __name__ == "__main__":
    main()
