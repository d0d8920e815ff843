"""Progress bars that also reach log files.

Rich draws a live bar only on a terminal. Under nohup, a cloud VM's startup script, `docker logs` or CI
nothing is drawn, and a transient bar leaves no trace at all, so an hour of rendering clips reads like a
hang. `Progress` is Rich's bar plus, when its console is not a terminal, one log line per task at most
every `EDGEKIT_PROGRESS_EVERY` seconds (default 30; 0 logs every update). Tasks that finish sooner
log nothing, so short work stays quiet.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from rich import progress as rp

from edgekit.errors import UserError

log = logging.getLogger(__name__)

EVERY_ENV = "EDGEKIT_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0


def log_interval() -> float:
    """Seconds between progress lines in logs, from `EDGEKIT_PROGRESS_EVERY`."""
    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also catches nan
        raise UserError(f"{EVERY_ENV} must be a number of seconds (0 or more), not {raw!r}.")
    return value


def duration(seconds: float) -> str:
    """A short human duration: 42s, 3m10s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def describe(task: rp.Task, suffix: str = "") -> str:
    """One log line for `task`: what, how far, how long so far, and about how long is left."""
    parts = [f"{task.description}:"]
    if task.total is None:
        parts.append(f"{task.completed:g} done")
    elif task.total > 1:
        parts.append(f"{task.completed:g}/{task.total:g} ({task.percentage:.0f}%)")
    else:  # a fraction (recording time): the share is the only number that means something
        parts.append(f"{task.percentage:.0f}%")
    text = " ".join(parts) + f", {duration(task.elapsed or 0.0)} elapsed"
    if task.time_remaining is not None:
        text += f", about {duration(task.time_remaining)} left"
    return text + (suffix.format(task=task) if suffix else "")


class Progress(rp.Progress):
    """`rich.progress.Progress` that also logs each task now and then when the console is not a terminal.

    Args:
        *columns: Rich columns, as for Rich's `Progress`.
        log_suffix: appended to each log line, formatted with `task` like a Rich column
            (e.g. `", loss {task.fields[loss]}"`).
        **kwargs: as for Rich's `Progress` (console, transient, disable, ...).
    """

    def __init__(self, *columns: Any, log_suffix: str = "", **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._log_every = log_interval() if not self.console.is_terminal else None
        self._log_suffix = log_suffix
        self._logged_at: dict[rp.TaskID, float] = {}

    def add_task(self, *args: Any, **kwargs: Any) -> rp.TaskID:
        task_id = super().add_task(*args, **kwargs)
        self._logged_at[task_id] = time.monotonic()
        return task_id

    def advance(self, task_id: rp.TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log(task_id)

    def update(self, task_id: rp.TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._maybe_log(task_id)

    def _maybe_log(self, task_id: rp.TaskID) -> None:
        if self._log_every is None:
            return
        now = time.monotonic()
        if now - self._logged_at.get(task_id, now) < self._log_every:
            return
        task = next((t for t in self.tasks if t.id == task_id), None)
        if task is None or task.finished or not task.visible or not task.completed:
            return
        self._logged_at[task_id] = now
        log.info(describe(task, self._log_suffix))
