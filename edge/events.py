"""Events on the device: a JSONL log and a SQLite table of captures, with retention.

SQLite runs in WAL mode with `synchronous=FULL`, and each JSONL line is fsynced, so an event that was
reported as written survives a power cut; a half-written last line is skipped when reading.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import atomic

log = logging.getLogger(__name__)

JSONL = "events.jsonl"
DB = "events.sqlite"
FRAMES = "frames"
JSONL_MAX_BYTES = 20 * 1024 * 1024
"""The JSONL log rotates to events.jsonl.1 above this size (SQLite is the queryable copy)."""
PRUNE_EVERY = 50

SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    label TEXT,
    score REAL,
    model_version TEXT,
    image_path TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS captures_time ON captures(time);
"""


@dataclass(frozen=True)
class Retention:
    """How much history the device keeps."""

    max_count: int = 100_000
    max_age_s: float = 30 * 86400.0
    min_free_bytes: int = 200 * 1024 * 1024


class EventStore:
    """Append events; query them by time; prune by count, age and free disk."""

    def __init__(self, folder: str | Path, retention: Retention | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.retention = retention or Retention()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.folder / DB, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._jsonl = open(self.folder / JSONL, "a", encoding="utf-8")  # noqa: SIM115 (lives with the store)
        self._added = 0
        self.prune()

    def add(self, kind: str, label: str | None = None, score: float | None = None,
            model_version: str | None = None, image: np.ndarray | None = None,
            data: dict[str, Any] | None = None, when: float | None = None) -> dict[str, Any]:
        """Record one event (and its frame, when given) and return it as stored."""
        when = time.time() if when is None else when
        image_path = None
        if image is not None:
            try:
                image_path = self._save_frame(image, when, kind)
            except OSError as e:  # a full disk (filled by anything): free what retention may, keep the event
                log.warning("could not save the frame of a %s event (%s); recording it without", kind, e)
                self.prune()
        row = (when, kind, label, score, model_version, image_path, json.dumps(data or {}))
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO captures (time, kind, label, score, model_version, image_path, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            event = _row_dict((cur.lastrowid, *row))
            self._append_jsonl(event)
            self._added += 1
            due = self._added % PRUNE_EVERY == 0
        if due:
            self.prune()
        return event

    def since(self, since: float = 0.0, limit: int = 1000, kind: str | None = None,
              after: int = 0) -> list[dict[str, Any]]:
        """Events strictly after `since` (unix seconds) and after event id `after`, in the order they were
        recorded. Page with `after` = the last id seen: events that share a timestamp are never skipped."""
        sql = ("SELECT id, time, kind, label, score, model_version, image_path, data FROM captures "
               "WHERE time > ? AND id > ?")
        args: list[Any] = [since, after]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_row_dict(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0])

    def prune(self) -> int:
        """Apply the retention rules; returns how many events were deleted or lost their saved frame."""
        r = self.retention
        with self._lock:
            doomed = self._db.execute("SELECT id, image_path FROM captures WHERE time < ?",
                                      (time.time() - r.max_age_s,)).fetchall()
            excess = self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0] - r.max_count
            if excess > 0:
                doomed += self._db.execute("SELECT id, image_path FROM captures ORDER BY time, id LIMIT ?",
                                           (excess,)).fetchall()
            n = self._delete(doomed)
            frames = self._free_disk()
        if n:
            log.info("retention: deleted %d old events", n)
        if frames:
            log.warning("retention: the data disk is low on space; removed the %d oldest saved frames "
                        "(their events stay)", frames)
        return n + frames

    def close(self) -> None:
        with self._lock:
            self._jsonl.close()
            self._db.close()

    # --- internals ---

    def _unlink_frames(self, rows: list[tuple[int, str | None]]) -> None:
        for _, image in rows:
            if image:
                (self.folder / image).unlink(missing_ok=True)

    def _delete(self, rows: list[tuple[int, str | None]]) -> int:
        ids = sorted({row[0] for row in rows})
        self._unlink_frames(rows)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self._db.execute(f"DELETE FROM captures WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return len(ids)

    def _free_disk(self) -> int:
        """Remove the oldest saved frames while the disk is low; their events stay, without `image_path`."""
        removed = 0
        while shutil.disk_usage(self.folder).free < self.retention.min_free_bytes:
            rows = self._db.execute("SELECT id, image_path FROM captures WHERE image_path IS NOT NULL "
                                    "ORDER BY time, id LIMIT 100").fetchall()
            if not rows:
                break
            self._unlink_frames(rows)
            ids = [row[0] for row in rows]
            self._db.execute(f"UPDATE captures SET image_path = NULL WHERE id IN ({','.join('?' * len(ids))})", ids)
            removed += len(ids)
        return removed

    def _save_frame(self, image: np.ndarray, when: float, kind: str) -> str:
        from PIL import Image

        stamp = _dt.datetime.fromtimestamp(when, _dt.timezone.utc)
        rel = Path(FRAMES) / stamp.strftime("%Y%m%d") / f"{stamp.strftime('%H%M%S_%f')}_{kind}.jpg"
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        atomic.write_bytes(self.folder / rel, buf.getvalue())
        return rel.as_posix()

    def _append_jsonl(self, event: dict[str, Any]) -> None:
        if self._jsonl.tell() > JSONL_MAX_BYTES:
            self._jsonl.close()
            os.replace(self.folder / JSONL, self.folder / f"{JSONL}.1")
            self._jsonl = open(self.folder / JSONL, "a", encoding="utf-8")  # noqa: SIM115
        self._jsonl.write(json.dumps(event) + "\n")
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())


def _row_dict(row: tuple) -> dict[str, Any]:
    id_, when, kind, label, score, version, image, data = row
    return {"id": id_, "time": when,
            "iso": _dt.datetime.fromtimestamp(when, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "kind": kind, "label": label, "score": score, "model_version": version, "image_path": image,
            "data": json.loads(data) if data else {}}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Events of a JSONL log; a torn last line (power cut mid-write) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s", path)
    return out
