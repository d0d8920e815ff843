"""What training shows: a transient Rich bar on a terminal, and one line per epoch everywhere.

The epoch line keeps the seed scripts' format, so logs of old and new runs read the same:
`Epoch [3/20] Train Loss: 0.3512, Acc: 89.7% | Val Loss: 0.2104, Acc: 91.9%`; further metrics from
the evaluation follow as `| name: value`. When stdout is not a terminal (a log file, nohup, a pipe),
the bar is not drawn; those lines are printed, and a long epoch logs its progress now and then
(`edgekit.progress`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from edgekit.progress import Progress

_SHOWN = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "batch_size", "time_s"}


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One epoch's history record as the seed-style line (accuracies are fractions in the record)."""
    parts = [f"Epoch [{record['epoch']}/{epochs}] " + _pair("Train", record, "train")]
    if record.get("val_loss") is not None or record.get("val_acc") is not None:
        parts.append(_pair("Val", record, "val"))
    parts += [f"{k}: {v:.4f}" for k, v in record.items() if k not in _SHOWN and isinstance(v, float)]
    return " | ".join(parts)


def _pair(title: str, record: dict[str, Any], split: str) -> str:
    bits = []
    if record.get(f"{split}_loss") is not None:
        bits.append(f"{title} Loss: {record[f'{split}_loss']:.4f}")
    if record.get(f"{split}_acc") is not None:
        bits.append(("Acc" if bits else f"{title} Acc") + f": {100 * record[f'{split}_acc']:.1f}%")
    return ", ".join(bits)


@dataclass
class EpochSums:
    """The epoch's running training numbers (finite-loss steps only) behind the bar and the epoch line."""

    loss: float = 0.0
    correct: int = 0
    n: int = 0
    has_acc: bool = False
    seconds: float = 0.0

    def add(self, loss: float, n: int, correct: int | None) -> None:
        """Count one step: its mean `loss` over `n` samples, `correct` of them (None: no accuracy)."""
        self.loss += loss * n
        self.n += n
        if correct is not None:
            self.correct += int(correct)
            self.has_acc = True

    def mean_loss(self) -> float:
        return self.loss / self.n if self.n else float("nan")

    def mean_acc(self) -> float | None:
        return self.correct / self.n if self.has_acc and self.n else None


class EpochProgress:
    """A bar per epoch (samples done, running loss and accuracy, ETA) that vanishes when the epoch line is printed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}{task.fields[acc]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.live,
            log_suffix=", loss {task.fields[loss]}{task.fields[acc]}",
        )
        self._task: Any = None

    def __enter__(self) -> EpochProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, done: int, total: int) -> None:
        """Show a fresh bar for `epoch` (0-based), starting at `done` of `total` samples."""
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(
            f"Epoch {epoch + 1}/{epochs}", total=total, completed=done, loss="-", acc=""
        )

    def advance(self, done: int, loss: float, acc: float | None = None) -> None:
        """Move the bar to `done` samples, showing the running loss and accuracy (a fraction)."""
        self._progress.update(
            self._task, completed=done, loss=f"{loss:.4f}", acc="" if acc is None else f", acc {100 * acc:.1f}%"
        )

    def print(self, line: str) -> None:
        """Print above the bar; never wrapped, so log files keep one line per epoch."""
        self.console.print(line, soft_wrap=True, markup=False, highlight=False)
