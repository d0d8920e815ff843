"""The device's event store: JSONL + SQLite (WAL), retention, survival of a killed writer; thresholds."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import edgekit.edge.events as events_module
from edgekit.edge.classify import UNKNOWN, Classifier, bundle_thresholds
from edgekit.edge.events import DB, JSONL, EventStore, Retention, read_jsonl
from edgekit.edge.metrics import Metrics
from edgekit.errors import UserError


def test_events_go_to_jsonl_and_sqlite_with_frames(tmp_path):
    store = EventStore(tmp_path)
    frame = np.full((24, 32, 3), 200, np.uint8)
    a = store.add("wakeword", label="alexa", score=0.9, model_version="alexa/v1", data={"stream_s": 1.2})
    b = store.add("classification", label="paper", score=0.7, model_version="waste/v3", image=frame)
    store.close()
    lines = read_jsonl(tmp_path / JSONL)
    assert [e["id"] for e in lines] == [a["id"], b["id"]] and lines[0]["data"] == {"stream_s": 1.2}
    db = sqlite3.connect(tmp_path / DB)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT kind, label, score, model_version, image_path FROM captures ORDER BY id").fetchall()
    assert rows[0] == ("wakeword", "alexa", 0.9, "alexa/v1", None)
    assert rows[1][:4] == ("classification", "paper", 0.7, "waste/v3") and (tmp_path / rows[1][4]).is_file()
    again = EventStore(tmp_path)  # reopening keeps history
    assert [e["label"] for e in again.since(0)] == ["alexa", "paper"]
    assert [e["id"] for e in again.since(a["time"])] == [b["id"]]


def test_retention_by_count_and_age_removes_frames(tmp_path):
    store = EventStore(tmp_path, Retention(max_count=5, max_age_s=3600, min_free_bytes=0))
    old = store.add("classification", label="old", image=np.zeros((8, 8, 3), np.uint8), when=time.time() - 7200)
    for i in range(8):
        store.add("classification", label=f"e{i}", when=time.time() + i * 1e-3)
    deleted = store.prune()
    assert deleted == 4  # the 2-hour-old event and the 3 oldest beyond max_count
    assert [e["label"] for e in store.since(0)] == [f"e{i}" for i in range(3, 8)]
    assert not (tmp_path / old["image_path"]).exists()


def test_retention_frees_disk_by_dropping_oldest_frames(tmp_path):
    store = EventStore(tmp_path, Retention(min_free_bytes=0))
    for i in range(3):
        store.add("classification", label=f"e{i}", image=np.zeros((8, 8, 3), np.uint8), when=1e9 + i)
    store.retention = Retention(max_age_s=1e12, min_free_bytes=10**18)  # "the disk is full"
    assert store.prune() == 3
    assert list((tmp_path / "frames").rglob("*.jpg")) == []
    events = store.since(0)  # the history stays: only the pictures went
    assert [e["label"] for e in events] == ["e0", "e1", "e2"] and all(e["image_path"] is None for e in events)


def test_a_frame_that_cannot_be_written_leaves_the_event(tmp_path, monkeypatch):
    store = EventStore(tmp_path, Retention(min_free_bytes=0))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(events_module.atomic, "write_bytes", disk_full)
    event = store.add("classification", label="glass", image=np.zeros((8, 8, 3), np.uint8))
    assert event["image_path"] is None and [e["label"] for e in store.since(0)] == ["glass"]


WRITER = """
import os, sys
from edgekit.edge.events import EventStore
store = EventStore(sys.argv[1])
for i in range(50):
    store.add("wakeword", label=f"e{i}", score=0.5)
print("written", flush=True)
os._exit(9)  # no close(), no flush by the interpreter: like pulling the plug after the writes returned
"""


def test_events_survive_a_killed_writer_and_a_torn_line(tmp_path):
    out = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 9 and "written" in out.stdout
    with open(tmp_path / JSONL, "a") as f:
        f.write('{"id": 51, "kind": "wakew')  # a write cut off by the power cut
    assert len(read_jsonl(tmp_path / JSONL)) == 50
    assert len(EventStore(tmp_path).since(0)) == 50


class FakePredictor:
    """Stands in for the Predictor's outputs only; the Predictor itself is tested over HTTP."""

    labels = ["paper", "plastic"]
    version = "waste/v2"
    latency_ms = 1.5

    def __init__(self, probs):
        self.probs = np.asarray([probs], np.float32)

    def predict_image(self, image):
        return self.probs


def test_per_class_thresholds_and_unknown():
    th = bundle_thresholds({"default": 0.6, "labels": {"plastic": 0.9}, "paper": 0.5, "noise": 1}, ["paper", "plastic"])
    assert th == {"default": 0.6, "plastic": 0.9, "paper": 0.5}
    assert Classifier(FakePredictor([0.55, 0.45]), th).classify(None).label == "paper"
    c = Classifier(FakePredictor([0.2, 0.8]), th).classify(None)
    assert (c.label, c.top, c.score) == (UNKNOWN, "plastic", pytest.approx(0.8))
    assert Classifier(FakePredictor([0.2, 0.8]), {"default": 0.5}).classify(None).label == "plastic"
    with pytest.raises(UserError, match="glas"):
        Classifier(FakePredictor([0.5, 0.5]), {"glas": 0.5})


def test_metrics_text_format():
    m = Metrics()
    m.inc("edgekit_classifications_total", label='pa"per', source="api")
    for s in (0.002, 0.03, 3.0):
        m.observe_latency(s, task="classify")
    text = m.render()
    assert 'edgekit_classifications_total{label="pa\\"per",source="api"} 1' in text
    assert 'edgekit_inference_latency_seconds_bucket{task="classify",le="0.0025"} 1' in text
    assert 'edgekit_inference_latency_seconds_bucket{task="classify",le="+Inf"} 3' in text
    assert 'edgekit_inference_latency_seconds_count{task="classify"} 3' in text
    assert "# TYPE edgekit_inference_latency_seconds histogram" in text


def test_paging_by_id_never_skips_events_that_share_a_time(tmp_path):
    store = EventStore(tmp_path, Retention(min_free_bytes=0))
    for i in range(5):
        store.add("wakeword", label=f"w{i}", when=1e9)  # one timestamp (a coarse clock, or a clock step)
    seen, after = [], 0
    while page := store.since(0, limit=2, after=after):
        seen += [e["label"] for e in page]
        after = page[-1]["id"]
    assert seen == [f"w{i}" for i in range(5)]
