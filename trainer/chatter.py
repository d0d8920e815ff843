"""Library chatter goes to the debug log, not into the user's output.

The converters and quantizers under `edgekit export` print as they work: tqdm bars, onnxruntime's
histogram notes (on stdout, in the middle of the result table), and TensorFlow/LiteRT C++ info lines
(oneDNN, XNNPACK, absl's "before InitializeLog" warning). The C++ lines go straight to file descriptor
2, where Python's `redirect_stderr` cannot reach and `TF_CPP_MIN_LOG_LEVEL` no longer applies.
`to_debug_log` catches both kinds, logs them at debug level (`edgekit -v` shows them) and, when the
wrapped code raises, at warning level, since then they may be the explanation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def to_debug_log(source: str) -> Iterator[None]:
    """Capture Python's stdout/stderr and the process's file descriptor 2 while the block runs.

    Meant for short calls on the main thread: anything another thread writes to stderr meanwhile is
    captured too.

    Args:
        source: who is talking, prefixed to each logged line.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(2)
    failed = False
    py_out, py_err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as native:
        os.dup2(native.fileno(), 2)
        try:
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_err):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            native.seek(0)
            text = py_out.getvalue() + py_err.getvalue() + native.read().decode("utf-8", "replace")
            level = logging.WARNING if failed else logging.DEBUG
            for line in text.splitlines():  # tqdm's \r redraws become lines of their own
                if line.strip():
                    log.log(level, "%s: %s", source, line.rstrip())
