"""Supervised source loops: a device error is logged, reported and retried with backoff, never fatal.

Modelled on how a satellite keeps its microphone task alive: open, read until it breaks, log the
exception, wait (0.5 s doubling to 30 s), reopen. `SourceStatus` is what /health and /metrics show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

State = Literal["starting", "up", "down", "finished", "stopped"]


@dataclass
class SourceStatus:
    """What a supervised source is doing now."""

    name: str
    kind: str
    """Table row it came from (mic, wav, picamera2, ...)."""
    state: State = "starting"
    restarts: int = 0
    errors: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.time)
    items: int = 0
    """Frames delivered since start."""

    def set(self, state: State, error: str | None = None) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()
        if error is not None:
            self.last_error = error

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": self.state, "restarts": self.restarts, "errors": self.errors,
                "last_error": self.last_error, "since": self.since, "frames": self.items}


@dataclass(frozen=True)
class Backoff:
    """Delay before reopening a failed source: `first`, doubling up to `cap`."""

    first: float = 0.5
    cap: float = 30.0

    def delays(self) -> Iterator[float]:
        d = self.first
        while True:
            yield d
            d = min(d * 2, self.cap)


def supervise(status: SourceStatus, open_source: Callable[[], Iterator[Any]], handle: Callable[[Any], None],
              stop: threading.Event, finite: bool, on_event: Callable[[str, SourceStatus], None] | None = None,
              backoff: Backoff = Backoff(), first: Iterator[Any] | None = None, tried: bool = False) -> None:
    """Run `handle(item)` for every item of the source until `stop` is set or a finite source ends.

    Args:
        status: updated in place (up/down/finished, restarts, last error).
        open_source: opens the source and returns its item iterator; called again after each failure.
        handle: processes one item; its exceptions count as a source failure too.
        stop: set by the service on shutdown; waits are cut short by it.
        finite: the source ends by itself (files); ending is then `finished`, not a failure. A source
            object with its own `finite` attribute (an OpenCV camera on a video file) decides for itself.
        on_event: called with ("down" | "restart" | "up", status) for metrics.
        first: an iterator already opened by the caller (so start-up errors surface at start).
        tried: the caller already tried to open the source (and failed): the next open is a restart.
    """
    notify = on_event or (lambda what, st: None)
    delays = backoff.delays()
    source, opened = first, first is not None or tried
    while not stop.is_set():
        try:
            if source is None:
                if opened:
                    status.restarts += 1
                    notify("restart", status)
                opened = True
                source = open_source()
            for item in source:
                if stop.is_set():
                    break
                handle(item)
                status.items += 1
                if status.state != "up":
                    status.set("up")
                    notify("up", status)
                    delays = backoff.delays()  # healthy again: the next failure starts from `first`
            else:
                if stop.is_set():
                    break
                if getattr(source, "finite", finite):
                    status.set("finished")
                    log.info("%s source finished after %d frames", status.name, status.items)
                    return
                raise OSError(f"{status.kind} source ended unexpectedly")
        except Exception as e:  # a device error must not end the service
            status.errors += 1
            status.set("down", f"{type(e).__name__}: {e}")
            notify("down", status)
            delay = next(delays)
            log.exception("%s source failed; reopening in %.1f s", status.name, delay)
            stop.wait(delay)
        finally:
            _close(source)
            source = None
    status.set("stopped")


def _close(source: Any) -> None:
    close = getattr(source, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.debug("closing a source failed", exc_info=True)
