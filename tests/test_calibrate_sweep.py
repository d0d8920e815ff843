"""The sweep replays `run_detector` exactly, and the choice rules pick what they say, on synthetic scores."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest

from edgekit.edge.calibrate_wakeword import WakewordCalibration, choose
from edgekit.edge.detector import DetectorConfig, run_detector
from edgekit.edge.detector_sweep import ScoreTrack, Setting, SweepRow, fire_frames, hot_runs, longest_run, sweep


def _bursty(n: int, seed: int) -> np.ndarray:
    """Mostly quiet float32 scores with bursts of every length, as a model's output looks."""
    rng = np.random.default_rng(seed)
    x = (rng.random(n) ** 6).astype(np.float32)
    for start in rng.integers(0, n - 40, n // 60):
        x[start:start + rng.integers(1, 30)] = rng.uniform(0.2, 1.0)
    return x


@pytest.mark.parametrize("rearm", [True, False])
def test_fire_frames_equal_the_state_machine(rearm):
    x = _bursty(6000, seed=3)
    grid = itertools.product([0.05, 0.3, 0.5, 0.7, 0.95], [1, 2, 3, 5], [0.0, 0.08, 0.24, 1.0, 2.0])
    for thr, pat, refr in grid:
        cfg = DetectorConfig(threshold=thr, patience=pat, refractory_s=refr, rearm=rearm)
        expected = [d.time_s for d in run_detector(x, cfg)]
        got = fire_frames(hot_runs(x, thr), len(x), cfg)
        assert [(i + 1) * cfg.frame_s for i in got] == expected, (thr, pat, refr)


def test_float32_scores_compare_like_the_detector():
    """float32(0.7) is just below 0.7: `Detector` (float64) calls it cold, a float32 comparison would not."""
    thr = 0.7
    x = np.array([0, np.float32(thr), 0], dtype=np.float32)
    assert float(x[1]) < thr and x[1] >= np.float32(thr)
    assert run_detector(x, DetectorConfig(threshold=thr)) == []
    assert len(hot_runs(x, thr)[0]) == 0


def test_sweep_counts_match_per_setting_replays():
    amb = ScoreTrack(_bursty(3000, 5).astype(np.float64))
    pos = [ScoreTrack(_bursty(60, s).astype(np.float64)) for s in range(8)]
    rows = sweep(amb, pos, [0.2, 0.5, 0.8], [1, 3], [0.5, 2.0], [0.0])
    assert len(rows) == 3 * 2 * 2
    for r in rows:
        cfg = r.setting.detector()
        assert r.false_accepts == len(run_detector(amb.scores, cfg))
        assert r.detected == sum(bool(run_detector(p.scores, cfg)) for p in pos)
        assert r.detected == sum(longest_run(p.scores, r.setting.threshold) >= r.setting.patience for p in pos)


def _row(thr, pat, refr, fa, det) -> SweepRow:
    return SweepRow(Setting(thr, pat, refr), fa, det)


def test_choice_with_positives_prefers_recall_then_fewer_false_accepts_then_middle_threshold(tmp_path: Path):
    cfg = WakewordCalibration(model="m.onnx", ambient=[tmp_path], target_fa_per_hour=1.0)
    rows = [_row(0.3, 1, 2.0, 5, 10),  # best recall but 5/h: over the target
            _row(0.4, 1, 2.0, 1, 9), _row(0.5, 1, 2.0, 0, 9), _row(0.6, 1, 2.0, 0, 9), _row(0.7, 1, 2.0, 0, 9),
            _row(0.8, 1, 2.0, 0, 7), _row(0.5, 2, 2.0, 0, 9)]
    row, rule = choose(rows, 10, hours=1.0, cfg=cfg)
    assert row.setting == Setting(0.6, 1, 2.0)  # 9/10 detected, 0 FA, patience 1: the middle of 0.5-0.7
    assert "lowest false-reject rate" in rule
    assert choose([_row(0.5, 1, 2.0, 3, 10)], 10, hours=1.0, cfg=cfg)[0] is None


def test_choice_without_positives_is_lowest_passing_threshold_plus_margin(tmp_path: Path):
    cfg = WakewordCalibration(model="m.onnx", ambient=[tmp_path], target_fa_per_hour=1.0,
                              thresholds=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], margin=0.2)
    fa = {0.1: 9, 0.2: 4, 0.3: 0, 0.4: 2, 0.5: 0, 0.6: 0, 0.7: 0}  # 0.3 passes, but 0.4 above it does not
    rows = [_row(t, 1, 2.0, n, None) for t, n in fa.items()]
    row, rule = choose(rows, 0, hours=1.0, cfg=cfg)
    assert row.setting.threshold == 0.7  # 0.5 is the lowest from which all pass; + 0.2
    assert "(0.5) plus a safety margin of 0.2" in rule


def test_plots_are_skipped_with_a_warning_without_matplotlib(monkeypatch, tmp_path, caplog):
    """The Pi's `edge` extra has no matplotlib: calibration still works, the PNG is skipped."""
    import sys

    from edgekit.edge.calibration_plots import det_plot, reliability_plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(logging.getLogger("edgekit"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        assert det_plot({}, tmp_path / "det.png") is None
        assert reliability_plot([0.9], [True], tmp_path / "rel.png") is None
    assert not list(tmp_path.iterdir())
    assert "matplotlib is not installed: skipped det.png" in caplog.text
