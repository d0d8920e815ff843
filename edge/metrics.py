"""The few Prometheus metrics the device exposes, rendered as text exposition format 0.0.4.

Small enough to write by hand, which keeps prometheus_client off the Pi.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds; Raspberry Pi inference sits between a few ms (wake word) and a few hundred (images)."""

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters, gauges and one latency histogram family, keyed by sorted label tuples."""

    HELP = {
        "edgekit_wakeword_detections_total": ("counter", "Wake-word detections."),
        "edgekit_classifications_total": ("counter", "Images classified (camera and API)."),
        "edgekit_dropped_frames_total": ("counter", "Frames lost because processing fell behind the source."),
        "edgekit_source_restarts_total": ("counter", "Times a source was reopened after an error."),
        "edgekit_source_up": ("gauge", "1 while a source is delivering, 0 while it is down."),
        "edgekit_uptime_seconds": ("gauge", "Seconds since the service started."),
        "edgekit_inference_latency_seconds": ("histogram", "Model inference time per call."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[Labels, list[float]] = {}
        self.started = time.time()

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def observe_latency(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            h = self._hist.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))  # buckets..., count, sum
            for i, edge in enumerate(LATENCY_BUCKETS):
                if seconds <= edge:
                    h[i] += 1
            h[-2] += 1
            h[-1] += seconds

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        self.set("edgekit_uptime_seconds", time.time() - self.started)
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_) in self.HELP.items():
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    lines += self._render_hist(name)
                for key, v in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {_num(v)}")
        return "\n".join(lines) + "\n"

    def _render_hist(self, name: str) -> list[str]:
        out = []
        for key, h in sorted(self._hist.items()):
            for i, edge in enumerate((*LATENCY_BUCKETS, "+Inf")):
                le = 'le="' + str(edge) + '"'
                count = h[-2] if edge == "+Inf" else h[i]
                out.append(f"{name}_bucket{_labels(key, le)} {_num(count)}")
            out.append(f"{name}_count{_labels(key)} {_num(h[-2])}")
            out.append(f"{name}_sum{_labels(key)} {h[-1]!r}")
        return out


def _num(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else repr(v)
