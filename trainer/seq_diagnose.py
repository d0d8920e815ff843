"""Up-front diagnosis of a sequence dataset, printed before any training starts.

The seed trainer's first run scored 0% with 91 windows and one class dominating; nothing told the
user why. Here the windows per class and per group, the imbalance ratio and every problem we can
see are printed first, each problem with what to do about it. Problems that make training
meaningless (no window, one class) stop the run with a `UserError`.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from edgekit.console import console
from edgekit.errors import UserError
from edgekit.trainer.seq_data import Recording, Windows, segments

log = logging.getLogger(__name__)


def check_labels(recs: Sequence[Recording], include: Sequence[str] | None) -> None:
    """Refuse an `--include-labels` entry that no recording contains (a typo would silently drop a class)."""
    present = sorted({str(v) for r in recs for v in set(r.labels) if v})
    for label in include or []:
        if label not in present:
            near = difflib.get_close_matches(label, present, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else f" Labels: {', '.join(present)}."
            raise UserError(f"--include-labels names {label!r}, which no recording contains.{hint}")


PERSON_RE = re.compile(r"(?:user|subject|person|participant|subj|id)[_-]?(\d+)", re.IGNORECASE)


def warn_shared_person(recs: Sequence[Recording]) -> None:
    """With one group per file, recordings of one person can land on both sides of the split (the model
    is then tested on people it trained on): say so when the file names name fewer people than files."""
    people = {}
    for r in recs:
        m = PERSON_RE.search(Path(r.source).stem)
        if m is None:
            return
        people.setdefault(m.group(0), []).append(r.source)
    if len(people) < len(recs):
        key = next(k for k, v in people.items() if len(v) > 1)
        log.warning("%d files name %d people (%s: %s): grouping by file lets one person's recordings reach "
                    "both training and test; pass --group-by 'file:%s' to keep each person on one side.",
                    len(recs), len(people), key, ", ".join(people[key]), PERSON_RE.pattern)


MIN_WINDOWS = 200
"""Fewer training windows than this rarely trains a recurrent model."""
MIN_CLASS_WINDOWS = 20
"""A class with fewer training windows than this is mostly guessed."""
MAX_IMBALANCE = 3.0
"""Largest/smallest class ratio above which the imbalance is called out."""


@dataclass
class Diagnosis:
    """What the data looks like and what is wrong with it."""

    counts: dict[str, np.ndarray]
    """Split name → windows per class (in `labels` order)."""
    labels: list[str]
    groups: dict[str, tuple[str, int]]
    """Group → (split, windows)."""
    imbalance: float
    """Largest / smallest training class (inf when a class has no training window)."""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "labels": self.labels,
            "windows": {k: dict(zip(self.labels, v.tolist(), strict=True)) for k, v in self.counts.items()},
            "groups": {g: {"split": s, "windows": n} for g, (s, n) in self.groups.items()},
            "imbalance": self.imbalance,
            "warnings": self.warnings,
        }


def _runs(recs: Sequence[Recording], include: set[str] | None) -> dict[str, int]:
    """Longest labeled run per label."""
    longest: dict[str, int] = {}
    for rec in recs:
        for s, e, label in segments(rec, include):
            longest[label] = max(longest.get(label, 0), e - s)
    return longest


def check_windows(recs: Sequence[Recording], w: Windows, window: int, include: Sequence[str] | None = None) -> None:
    """Say why no window could be cut; run before the split, which would only see that no group has any."""
    if len(w):
        return
    frames = max((len(r.frames) for r in recs), default=0)
    if window > frames:
        raise UserError(f"--window {window} is longer than every recording (the longest has {frames} frames); "
                        "lower --window.")
    top = max(_runs(recs, set(include) if include else None).values(), default=0)
    raise UserError(f"No window of {window} frames has a single label (the longest labeled run is {top} "
                    "frames); lower --window or check the label column.")


def diagnose(recs: Sequence[Recording], w: Windows, split: dict[str, list[str]], window: int, stride: int,
             include: Sequence[str] | None = None, class_weights: str = "auto") -> Diagnosis:
    """Count, judge and explain; raise a `UserError` when training cannot make sense.

    Args:
        recs: the recordings the windows were cut from.
        w: all windows.
        split: train/val/test → group names (from `split_by_group`).
    """
    check_windows(recs, w, window, include)
    longest = _runs(recs, set(include) if include else None)
    counts = {name: np.bincount(w.y[np.isin(w.groups, g)], minlength=len(w.labels)) for name, g in split.items()}
    train = counts["train"]
    if (train > 0).sum() < 2:
        raise UserError(f"The training groups {split['train']} hold windows of "
                        f"{(train > 0).sum()} class(es); a classifier needs two or more.")
    warnings = _warnings(w, split, counts, longest, window, stride, class_weights)
    present = train[train > 0]
    imbalance = float("inf") if (train == 0).any() else float(present.max() / present.min())
    where = {g: s for s in ("train", "val", "test") for g in split[s]}
    groups = {g: (where.get(g, "-"), int((w.groups == g).sum())) for g in sorted(set(w.groups))}
    return Diagnosis(counts, list(w.labels), groups, imbalance, warnings)


def _warnings(w: Windows, split: dict[str, list[str]], counts: dict[str, np.ndarray], longest: dict[str, int],
              window: int, stride: int, class_weights: str) -> list[str]:
    out = []
    train = counts["train"]
    if train.sum() < MIN_WINDOWS:
        out.append(f"Only {train.sum()} training windows (want {MIN_WINDOWS}+): record more, or lower --stride "
                   f"(now {stride}) so windows overlap more.")
    for label, n in zip(w.labels, train, strict=True):
        if n == 0:
            out.append(f"Class {label} has no training window: it cannot be learned; record it in a training "
                       "group or leave it out with --include-labels.")
        elif n < MIN_CLASS_WINDOWS:
            out.append(f"Class {label} has only {n} training windows (want {MIN_CLASS_WINDOWS}+): record more "
                       "of it, lower --window/--stride, or leave it out with --include-labels.")
    for label, top in sorted(longest.items()):
        if label not in w.labels and top < window:
            out.append(f"Label {label} never runs {window} frames in a row (longest run {top}): it gets no "
                       f"window; lower --window to {top} or less to keep it.")
    present = train[train > 0]
    if len(present) and present.max() / present.min() > MAX_IMBALANCE:
        big, small = w.labels[int(np.argmax(train))], w.labels[int(np.argmin(np.where(train > 0, train, 1 << 30)))]
        fix = "class weights (--class-weights auto) compensate" if class_weights == "auto" else \
            "use --class-weights auto"
        out.append(f"Classes are imbalanced {present.max() / present.min():.1f}:1 ({big} vs {small}): {fix}; "
                   f"more recordings of {small} help most.")
    for name in ("val", "test"):
        missing = [lab for lab, n in zip(w.labels, counts[name], strict=True) if n == 0]
        if missing and (name == "test" or set(split["val"]) != set(split["test"])):
            out.append(f"The {name} groups {split[name]} have no window of {', '.join(missing)}: its accuracy "
                       f"cannot be measured; choose --{name}-groups that contain it.")
    if set(split["val"]) == set(split["test"]):
        out.append(f"Only {len(set(w.groups))} groups: early stopping watches the test groups, so the reported "
                   "accuracy is optimistic; add recordings or name --val-groups.")
    return out


def print_diagnosis(d: Diagnosis) -> None:
    """The diagnosis as two short tables and the warnings, before training."""
    t = Table(title="Windows per class", title_justify="left")
    t.add_column("class")
    for name in d.counts:
        t.add_column(name, justify="right")
    for i, label in enumerate(d.labels):
        t.add_row(label, *[str(int(c[i])) for c in d.counts.values()])
    t.add_row("[b]total[/b]", *[f"[b]{int(c.sum())}[/b]" for c in d.counts.values()])
    console.print(t)
    g = Table(title="Windows per group", title_justify="left")
    g.add_column("group")
    g.add_column("split")
    g.add_column("windows", justify="right")
    for name, (split, n) in d.groups.items():
        g.add_row(name, split, str(n))
    console.print(g)
    ratio = "∞" if d.imbalance == float("inf") else f"{d.imbalance:.1f}:1"
    console.print(f"Imbalance (largest/smallest training class): {ratio}")
    for msg in d.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), msg))
