"""Progress in log files: a bar on a terminal, a line now and then everywhere else."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from edgekit.errors import UserError
from edgekit.progress import EVERY_ENV, Progress, duration, log_interval


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgekit.progress"]


def _console(terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal)


@pytest.fixture
def logs(edgekit_logs: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    edgekit_logs.set_level(logging.INFO, logger="edgekit.progress")
    return edgekit_logs


def test_not_a_terminal_logs_how_far(monkeypatch, logs):
    monkeypatch.setenv(EVERY_ENV, "0")
    with Progress(console=_console(False), transient=True, log_suffix=", loss {task.fields[loss]}") as bar:
        task = bar.add_task("Rendering clips", total=10, loss="-")
        bar.advance(task, 3)
        bar.update(task, advance=2, loss="0.25")
        bar.update(task, completed=10)  # finished: the caller logs its own closing line
    lines = _lines(logs)
    assert len(lines) == 2, lines
    assert lines[0].startswith("Rendering clips: 3/10 (30%), 0s elapsed")
    assert lines[0].endswith(", loss -")
    assert lines[1].startswith("Rendering clips: 5/10 (50%)") and lines[1].endswith(", loss 0.25")


def test_interval_keeps_short_work_quiet(monkeypatch, logs):
    monkeypatch.delenv(EVERY_ENV, raising=False)
    with Progress(console=_console(False)) as bar:
        task = bar.add_task("Caching photos", total=100)
        for _ in range(99):
            bar.advance(task)
    assert _lines(logs) == []


def test_terminal_draws_the_bar_and_logs_nothing(monkeypatch, logs):
    monkeypatch.setenv(EVERY_ENV, "0")
    with Progress(console=_console(True)) as bar:
        task = bar.add_task("Caching photos", total=4)
        bar.advance(task)
    assert _lines(logs) == []


def test_unknown_total_and_fractions(monkeypatch, logs):
    monkeypatch.setenv(EVERY_ENV, "0")
    with Progress(console=_console(False)) as bar:
        headers = bar.add_task("Reading image headers", total=None)
        bar.advance(headers, 7)
        rec = bar.add_task("recording", total=1.0)
        bar.update(rec, completed=0.25)
    assert [line.split(",")[0] for line in _lines(logs)] == ["Reading image headers: 7 done", "recording: 25%"]


@pytest.mark.parametrize("raw", ["often", "-1", "nan"])
def test_bad_interval_is_one_sentence(monkeypatch, raw):
    monkeypatch.setenv(EVERY_ENV, raw)
    with pytest.raises(UserError, match=EVERY_ENV):
        log_interval()


def test_duration():
    assert [duration(s) for s in (0.4, 42, 190, 3725)] == ["0s", "42s", "3m10s", "1h02m"]


def _photos(root):
    rng = np.random.default_rng(0)
    for cls in ("glass", "paper"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")


def _edgekit(*args: str, every: str) -> subprocess.CompletedProcess:
    env = {**os.environ, EVERY_ENV: every, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_cli_into_a_pipe_logs_progress(tmp_path):
    _photos(tmp_path / "data")
    out = _edgekit("data", "analyze", str(tmp_path / "data"), every="0")
    assert out.returncode == 0, out.stderr  # warnings (few photos) exit 0
    assert "Reading image headers: 1" in out.stderr, out.stderr


def test_cli_rejects_a_bad_interval_before_any_work(tmp_path):
    _photos(tmp_path / "data")
    out = _edgekit("data", "analyze", str(tmp_path / "data"), "--json", str(tmp_path / "a.json"), every="soon")
    assert out.returncode == 2
    assert f"{EVERY_ENV} must be a number of seconds" in out.stderr
    assert not (tmp_path / "a.json").exists()


def test_a_long_epoch_logs_its_running_loss(monkeypatch, logs):
    from edgekit.trainer.progress import EpochProgress

    monkeypatch.setenv(EVERY_ENV, "0")
    with EpochProgress(_console(False)) as bar:
        bar.start_epoch(2, 20, 0, 288)
        bar.advance(96, 0.4312, 0.801)
    (line,) = _lines(logs)
    assert line.startswith("Epoch 3/20: 96/288 (33%)") and line.endswith(", loss 0.4312, acc 80.1%"), line
