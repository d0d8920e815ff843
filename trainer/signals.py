"""Stop training cleanly on SIGINT (Ctrl+C) or SIGTERM (a cloud VM being preempted, ~30 s warning).

The first signal only sets a flag: the engine finishes the current step, writes a checkpoint and
stops with exit code 128 + signal (130 for SIGINT, 143 for SIGTERM). A second signal means "now":
SIGINT raises KeyboardInterrupt at once and SIGTERM ends the process with the default action.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager that turns SIGINT/SIGTERM into a request the training loop polls.

    Outside the main thread Python cannot install signal handlers; there it does nothing and
    `requested` stays False.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The conventional exit status for the received signal (128 + its number)."""
        return 128 + (self.signum or 0)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: stop waiting for the step to finish
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum
        log.warning(
            "%s received: finishing this step, writing a checkpoint, then stopping (send it again to stop at once).",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in HANDLED:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()
