"""Helpers for the runtime tests: `edgekit serve` as a real subprocess, polled over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess

LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError) as e:
            last_error = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


@dataclass
class ServiceProc:
    proc: subprocess.Popen
    url: str
    log: Path
    headers: dict[str, str]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=10, **kw)

    def health(self) -> dict[str, Any]:
        return self.get("/health").json()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"kind": kind} if kind else {}
        return self.get("/events", params=params).json()["events"]

    def wait_source(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (h := self.health())["sources"][name]["state"] == state and h,
                        timeout, f"source {name} to be {state}\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running_service(tmp: Path, env: dict[str, str], args: list[str] | None = None,
                    startup_s: float = 60) -> Iterator[ServiceProc]:
    """Start `python -m edgekit serve` with `env` on a free port; SIGTERM it at the end (exit 0 expected)."""
    port = free_port()
    full_env = {**os.environ, "EDGEKIT_API_PORT": str(port), "EDGEKIT_DATA_DIR": str(tmp / "data"),
                "COLUMNS": "200", **env}
    log = tmp / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", *(args or [])], env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    token = env.get("EDGEKIT_API_TOKEN")
    svc = ServiceProc(proc, f"http://127.0.0.1:{port}", log, {"Authorization": f"Bearer {token}"} if token else {})
    try:
        wait_for(lambda: proc.poll() is not None or svc.get("/health").status_code in (200, 503), startup_s,
                 "the service to answer /health")
        assert proc.poll() is None, f"service exited with {proc.returncode}:\n{svc.output()}"
        yield svc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"service did not stop on SIGTERM:\n{svc.output()}")


def export_tiny_classifier(root: Path, waste_mini: Path, name: str = "tiny-waste") -> Bundle:
    """A small CNN bundle (waste-mini labels and split) exported to ONNX by `edgekit export`'s own code."""
    pytest.importorskip("torch")
    import export_helpers as h

    from edgekit import atomic
    from edgekit.trainer.export import ExportConfig, export_bundle

    labels, split = h.waste_split(waste_mini, val_per_class=2)
    assert labels == LABELS
    w = BundleWriter(name, root=root)
    atomic.write_bytes(w.add("model.pt", "pytorch", "checkpoint"), h._state_bytes(h.tiny_cnn(len(LABELS))))
    atomic.write_json(w.add("split.json", "json", "data"), {"root": str(waste_mini), **split})
    pre = Preprocess(color="RGB", resize=(64, 64), scale=1 / 127.5, offset=-1.0)
    bundle = w.commit(task="image-classification", labels=LABELS, thresholds={"default": 0.0},
                      input=InputSpec(shape=[1, 3, 64, 64], layout="NCHW", preprocess=pre),
                      extra={"arch": {"name": "test_tiny_cnn", "kwargs": {"num_classes": len(LABELS)}},
                             "output": "logits"})
    with pytest.MonkeyPatch.context() as mp:
        h.register_test_archs(mp)
        # An untrained model: the gate's accuracy is meaningless here, only the ONNX file matters.
        export_bundle(ExportConfig(bundle=str(bundle.path), formats=["onnx"], max_drop=100.0, latency_runs=2))
    return Bundle.load(bundle.path)
