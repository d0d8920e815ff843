"""CSV frames → labeled windows, split by group, normalised on the training split only.

One CSV per recording, one row per frame: numeric feature columns and a label column (empty = not
labeled). A window is kept only when every frame in it carries the same label (label purity) and it
never crosses recordings or groups. Splits are made by group (recording or person), never by window.

This module imports only numpy and the standard library: the device side (`edgekit.edge.sequence`)
reads CSVs with the same `read_csv`.
"""

from __future__ import annotations

import csv
import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import UserError
from edgekit.paths import require

log = logging.getLogger(__name__)

TIME_RE = re.compile(r"^(t|time|timestamp|seconds|elapsed|elapsed_?time|(time|timestamp)_?(s|ms|us|ns)"
                     r"|[a-z]*_(time|timestamp))$")
"""Names of time columns (after lower-casing and dropping a unit in brackets, as in phyphox's `Time (s)`):
left out of the default feature set, since they count frames rather than describe motion, and used to
put the rows in time order."""


def is_time_column(name: str) -> bool:
    return TIME_RE.match(re.sub(r"\s*[(\[].*?[)\]]\s*$", "", name.strip().lower()).replace(" ", "_")) is not None


@dataclass
class Recording:
    """One CSV file: its frames, their labels and the group of each frame."""

    source: str
    """File name, e.g. `exp01_user01.csv`."""
    features: list[str]
    frames: np.ndarray
    """float32 [T, F] in `features` order."""
    labels: np.ndarray
    """str [T]; "" where the frame is not labeled."""
    groups: np.ndarray
    """str [T]; the split group of each frame (the file, a name part, or a column)."""


@dataclass
class Windows:
    """Fixed-length windows cut from recordings, one label each."""

    x: np.ndarray
    """float32 [N, window, F]."""
    y: np.ndarray
    """int64 [N], index into `labels`."""
    labels: list[str]
    groups: np.ndarray
    """str [N]: the group each window came from."""
    sources: np.ndarray
    """str [N]: the file each window came from."""
    starts: np.ndarray
    """int64 [N]: index of the window's first frame in its recording."""

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Windows:
        """The windows at `idx`, same label list."""
        return Windows(self.x[idx], self.y[idx], self.labels, self.groups[idx], self.sources[idx],
                       self.starts[idx])

    def counts(self) -> np.ndarray:
        """Windows per class, in `labels` order."""
        return np.bincount(self.y, minlength=len(self.labels))


def _group_fn(group_by: str):
    """How a file's frames get their group: `file`, `file:REGEX` (first capture of the name), or a column."""
    if group_by == "file":
        return "file", None
    if group_by.startswith("file:"):
        try:
            return "regex", re.compile(group_by[5:])
        except re.error as e:
            raise UserError(f"--group-by {group_by!r} is not a valid regular expression: {e}.")
    return "column", group_by


def default_features(header: Sequence[str], label_col: str, group_by: str) -> list[str]:
    """Every column but the label, the group column and time columns."""
    return [c for c in header if c not in (label_col, group_by) and not is_time_column(c)]


def read_csv(path: str | Path, label_col: str = "activity", features: Sequence[str] | None = None,
             group_by: str = "file", require_labels: bool = True) -> Recording:
    """Read one recording.

    Raises:
        UserError: one sentence naming the file (and the line) for a missing column, a non-numeric
            feature, a row with the wrong number of fields, or (with `require_labels`) no labeled frame.
    """
    path = Path(path)
    try:
        header, rows, lines = _read_rows(path)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: byte {e.start} is not UTF-8 text; save the file as UTF-8 CSV.")
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV ({e}).")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise UserError(f"{path}: line 1: column {dup[0]!r} appears more than once; give each column its own name.")
    kind, gkey = _group_fn(group_by)
    if require_labels and label_col not in header:
        raise UserError(f"{path}: line 1: there is no label column {label_col!r} "
                        f"(columns: {', '.join(header)}); name it with --label-col.")
    group_col = gkey if kind == "column" else ""
    feats = list(features) if features else default_features(header, label_col, group_col)
    missing = [c for c in feats if c not in header]
    if missing:
        raise UserError(f"{path}: line 1: feature column {missing[0]!r} is missing "
                        f"(columns: {', '.join(header)}).")
    if not feats:
        raise UserError(f"{path}: line 1: there are no feature columns besides {label_col!r}.")
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    frames = np.empty((len(rows), len(feats)), dtype=np.float32)
    for j, name in enumerate(feats):
        col = cols[header.index(name)]
        try:
            frames[:, j] = np.asarray(col, dtype=np.float32)
        except ValueError:
            i = next(i for i, v in enumerate(col) if not _is_number(v))
            raise UserError(f"{path}: line {lines[i]}: feature {name!r} has the value {col[i]!r}, "
                            "which is not a number.")
    bad = ~np.isfinite(frames)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise UserError(f"{path}: line {lines[i]}: feature {feats[j]!r} is {frames[i, j]}, "
                        "not a finite number.")
    labels = (np.array([v.strip() for v in cols[header.index(label_col)]], dtype=str)
              if label_col in header else np.full(len(rows), "", dtype=str))
    if require_labels and not (labels != "").any():
        raise UserError(f"{path} has no labeled frames: column {label_col!r} is empty on all "
                        f"{len(rows)} lines.")
    groups = _groups(path, header, cols, kind, gkey)
    order = _time_order(path, header, cols)
    if order is not None:
        frames, labels, groups = frames[order], labels[order], groups[order]
    return Recording(path.name, feats, frames, labels.astype(object), groups)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header and the non-empty rows (with their line numbers) of a UTF-8 CSV."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _first_row(reader)
        if not header:
            raise UserError(f"{path}: the file is empty; expected a header row.")
        header = [h.strip() for h in header]
        rows, lines = [], []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}: line {reader.line_num} has {len(row)} fields but the header has "
                                f"{len(header)}.")
            rows.append(row)
            lines.append(reader.line_num)
    return header, rows, lines


def _first_row(reader) -> list[str] | None:
    """The first row with any text: the header (blank lines may precede it)."""
    return next((row for row in reader if any(v.strip() for v in row)), None)


def _check_columns(folder: Path, files: list[Path], label_col: str, features: Sequence[str] | None,
                   group_by: str) -> None:
    """One error for a column or --group-by pattern that no file has (skipping each file would repeat the same
    warning per file first); a column that only some files lack still skips just those."""
    kind, key = _group_fn(group_by)  # a bad pattern fails here, once
    if kind == "regex" and not any(key.search(f.stem) for f in files):
        raise UserError(f"--group-by pattern '{key.pattern}' matches no file name (the first is {files[0].stem!r}).")
    headers = [(f.name, h) for f in files if (h := _header(f))]
    if not headers:  # no file opens: read_csv says why for each
        return
    wanted = [("label", label_col, "; name it with --label-col"), *(("feature", c, "") for c in features or []),
              *([("group", key, "; --group-by takes file, file:REGEX or a column")] if kind == "column" else [])]
    for what, col, hint in wanted:
        if not any(col in h for _, h in headers):
            raise UserError(f"No CSV in {folder} has a {what} column {col!r} (columns of {headers[0][0]}: "
                            f"{', '.join(headers[0][1])}){hint}.")


def _header(path: Path) -> list[str]:
    """The header row, or [] when the file cannot be read (`read_csv` then says why)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [h.strip() for h in _first_row(csv.reader(f)) or []]
    except (UnicodeDecodeError, csv.Error):
        return []


def _time_order(path: Path, header: list[str], cols: list) -> np.ndarray | None:
    """The row order that sorts a numeric time column, when the file's rows are not already in time order."""
    time_cols = [h for h in header if is_time_column(h)]
    if not time_cols or not cols or not len(cols[0]):
        return None
    try:
        t = np.asarray(cols[header.index(time_cols[0])], dtype=np.float64)
    except ValueError:
        return None
    if np.all(np.diff(t) >= 0):
        return None
    log.warning("%s: rows are not in %s order; sorted by it", path.name, time_cols[0])
    return np.argsort(t, kind="stable")


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _groups(path: Path, header: list[str], cols: list, kind: str, key) -> np.ndarray:
    n = len(cols[0]) if cols else 0
    if kind == "file":
        return np.full(n, path.stem, dtype=object)
    if kind == "regex":
        m = key.search(path.stem)
        if not m:
            raise UserError(f"{path}: the file name does not match --group-by pattern {key.pattern!r}.")
        return np.full(n, m.group(1) if m.groups() else m.group(0), dtype=object)
    if key not in header:
        raise UserError(f"{path}: line 1: there is no group column {key!r} (columns: {', '.join(header)}).")
    return np.array([v.strip() for v in cols[header.index(key)]], dtype=object)


def load_folder(folder: str | Path, label_col: str = "activity", features: Sequence[str] | None = None,
                group_by: str = "file") -> tuple[list[Recording], list[tuple[str, str]]]:
    """Read every `*.csv` under `folder`; broken files are skipped and returned with their reason.

    Returns:
        (recordings, skipped) where skipped is [(file name, one-sentence reason)].

    Raises:
        UserError: when the folder is missing, has no CSV, or no file could be read.
    """
    folder = require(folder, "Data folder")
    files = sorted(folder.rglob("*.csv"))
    if not files:
        raise UserError(f"{folder} has no .csv files; expected one CSV per recording.")
    _check_columns(folder, files, label_col, features, group_by)
    recs, skipped = [], []
    for f in files:
        try:
            rec = read_csv(f, label_col, features, group_by)
        except UserError as e:
            skipped.append((f.name, str(e)))
            continue
        if features is None and recs and rec.features != recs[0].features:
            why = f"{f}: its feature columns {rec.features} differ from {recs[0].features}."
            skipped.append((f.name, why))
            continue
        features = features or rec.features
        recs.append(rec)
    for name, why in skipped:
        log.warning("skipped %s: %s", name, why)
    if not recs:
        raise UserError(f"No usable CSV in {folder}: {skipped[0][1]}")
    return recs, skipped


def segments(rec: Recording, include: set[str] | None = None) -> list[tuple[int, int, str]]:
    """Runs of frames with one label and one group: [(start, end exclusive, label)], unlabeled left out."""
    lab, grp = rec.labels, rec.groups
    if len(lab) == 0:
        return []
    change = np.flatnonzero((lab[1:] != lab[:-1]) | (grp[1:] != grp[:-1])) + 1
    bounds = np.concatenate([[0], change, [len(lab)]])
    out = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        label = lab[s]
        if label and (include is None or label in include):
            out.append((int(s), int(e), str(label)))
    return out


def make_windows(recs: Sequence[Recording], window: int, stride: int,
                 include: Sequence[str] | None = None, labels: Sequence[str] | None = None) -> Windows:
    """Cut label-pure windows from each labeled run, never across recordings or groups.

    Windows start at the first frame of a run and every `stride` frames after it while they fit.
    `labels` fixes the class list (and order); by default it is every label that yields a window.
    """
    if window < 1 or stride < 1:
        raise UserError(f"--window ({window}) and --stride ({stride}) must be at least 1.")
    inc = set(include) if include else None
    parts = []
    for ri, rec in enumerate(recs):
        for s, e, label in segments(rec, inc):
            for start in range(s, e - window + 1, stride):
                parts.append((ri, start, label))
    classes = list(labels) if labels is not None else sorted({p[2] for p in parts})
    index = {c: i for i, c in enumerate(classes)}
    parts = [p for p in parts if p[2] in index]
    n_feat = len(recs[0].features) if recs else 0
    x = np.empty((len(parts), window, n_feat), dtype=np.float32)
    for k, (ri, start, _) in enumerate(parts):
        x[k] = recs[ri].frames[start:start + window]
    return Windows(
        x=x,
        y=np.array([index[p[2]] for p in parts], dtype=np.int64),
        labels=classes,
        groups=np.array([recs[p[0]].groups[p[1]] for p in parts], dtype=object),
        sources=np.array([recs[p[0]].source for p in parts], dtype=object),
        starts=np.array([p[1] for p in parts], dtype=np.int64),
    )


def _check_groups(asked: Sequence[str], known: list[str], flag: str) -> list[str]:
    for g in asked:
        if g not in known:
            near = difflib.get_close_matches(g, known, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else f" Groups: {', '.join(known)}."
            raise UserError(f"{flag} names group {g!r}, which has no windows.{hint}")
    return list(asked)


def _pick(groups: list[str], w: Windows, n: int, rng: np.random.Generator) -> list[str]:
    """`n` groups, preferring (in a seeded order) those that have every class."""
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_cls = len(w.labels)
    full = [g for g in order if len(np.unique(w.y[w.groups == g])) == n_cls]
    rest = [g for g in order if g not in full]
    return (full + rest)[:n]


def split_by_group(w: Windows, test_groups: Sequence[str] | None = None,
                   val_groups: Sequence[str] | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Assign whole groups to train / val / test.

    Unnamed test groups: about 20% of the groups (at least one). Unnamed val groups: one more group
    (about 15%) when at least two remain for training; otherwise validation watches the test groups.
    """
    known = sorted(set(w.groups))
    if len(known) < 2:
        only = known[0] if known else "none"
        raise UserError(f"All windows come from one group ({only}); a split by group needs two or more: "
                        "add a recording, or use --group-by with a column or name pattern.")
    rng = np.random.default_rng(seed)
    named_val = set(val_groups or [])  # the test groups are drawn from the others
    test = _check_groups(test_groups, known, "--test-groups") if test_groups else _pick(
        [g for g in known if g not in named_val], w, max(1, round(0.2 * len(known))), rng)
    rest = [g for g in known if g not in test]
    if val_groups:
        val = _check_groups(val_groups, known, "--val-groups")
        if set(val) & set(test) and set(val) != set(test):  # the same groups: validation watches the test
            both = sorted(set(val) & set(test))
            raise UserError(f"Groups {both} are in both --val-groups and --test-groups.")
    elif len(rest) >= 3:
        val = _pick(rest, w, max(1, round(0.15 * len(known))), rng)
    else:
        val = list(test)
    train = [g for g in rest if g not in val]
    if not train:
        raise UserError("No group is left for training; name fewer --test-groups/--val-groups.")
    return {"train": train, "val": val, "test": test}


def select(w: Windows, groups: Sequence[str]) -> Windows:
    """The windows whose group is in `groups`."""
    return w.take(np.flatnonzero(np.isin(w.groups, list(groups))))


@dataclass(frozen=True)
class Normaliser:
    """Per-feature (x - mean) / std, fitted on the training windows only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Normaliser:
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        std = flat.std(0)
        # a constant channel would divide by zero; leave it centred and unscaled
        return cls(flat.mean(0).astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights n / (k * count); a class with no sample gets 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)
