"""The wake-word detection state machine, driven with scores directly."""

from __future__ import annotations

import pytest

from edgekit.edge.detector import Detector, DetectorConfig, run_detector


def frames(*runs: tuple[float, int]) -> list[float]:
    out: list[float] = []
    for score, n in runs:
        out += [score] * n
    return out


def test_one_utterance_gives_one_detection_even_when_longer_than_refractory():
    scores = frames((0.0, 5), (0.9, 40), (0.0, 5))  # 3.2 s above threshold, refractory 2 s
    dets = run_detector(scores, DetectorConfig(threshold=0.5, patience=1, refractory_s=2.0))
    assert len(dets) == 1
    assert dets[0].time_s == pytest.approx(6 * 0.08)


def test_patience_needs_consecutive_hot_frames():
    cfg = DetectorConfig(threshold=0.5, patience=3, refractory_s=0.0)
    assert run_detector(frames((0.9, 2), (0.1, 1), (0.9, 2)), cfg) == []
    dets = run_detector(frames((0.9, 2), (0.1, 1), (0.9, 3)), cfg)
    assert [round(d.time_s / 0.08) for d in dets] == [6]


def test_refractory_blocks_a_second_word_too_soon_and_allows_it_later():
    cfg = DetectorConfig(threshold=0.5, patience=1, refractory_s=1.0)
    soon = frames((0.9, 2), (0.0, 5), (0.9, 2))  # second word 0.56 s after the first fired
    assert len(run_detector(soon, cfg)) == 1
    later = frames((0.9, 2), (0.0, 15), (0.9, 2))
    assert len(run_detector(later, cfg)) == 2


def test_without_rearm_a_long_run_fires_again_after_refractory():
    cfg = DetectorConfig(threshold=0.5, patience=1, refractory_s=1.0, rearm=False)
    times = [round(d.time_s, 2) for d in run_detector(frames((0.9, 40)), cfg)]
    assert times == [0.08, 1.12, 2.16, 3.2]  # 40 frames = 3.2 s, one detection per second


def test_threshold_is_inclusive_and_peak_is_reported():
    det = Detector(DetectorConfig(threshold=0.5, patience=2))
    assert det.update(0.5, 0.08) is None
    hit = det.update(0.7, 0.16)
    assert hit is not None and hit.score == 0.7 and hit.peak == 0.7
    falling = Detector(DetectorConfig(threshold=0.5, patience=3))  # the peak is the run's, not the firing frame's
    assert falling.update(0.9, 0.08) is None and falling.update(0.6, 0.16) is None
    hit = falling.update(0.55, 0.24)
    assert hit is not None and hit.score == 0.55 and hit.peak == 0.9


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(patience=0), dict(refractory_s=-1)])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DetectorConfig(**bad)
