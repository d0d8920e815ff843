"""Library chatter (Python prints and C++ writes to file descriptor 2) goes to the debug log."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from edgekit.trainer.chatter import to_debug_log


@pytest.fixture
def logs(edgekit_logs: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    edgekit_logs.set_level(logging.DEBUG, logger="edgekit.trainer.chatter")
    return edgekit_logs


def _talk() -> None:
    print("Collecting tensor data and making histogram ...")
    print("50%|#####     |\r100%|##########|", file=sys.stderr)
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")


def test_prints_and_native_lines_become_debug_records(capfd, logs):
    with to_debug_log("converter"):
        _talk()
    print("after")
    os.write(2, b"ours\n")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == "ours\n"  # nothing leaked, and both streams work again afterwards
    records = [(r.levelno, r.getMessage()) for r in logs.records if r.name == "edgekit.trainer.chatter"]
    assert records == [(logging.DEBUG, "converter: Collecting tensor data and making histogram ..."),
                       (logging.DEBUG, "converter: 50%|#####     |"),
                       (logging.DEBUG, "converter: 100%|##########|"),
                       (logging.DEBUG, "converter: I0000 port.cc:153] oneDNN custom operations are on.")]


def test_a_failure_replays_the_chatter_as_warnings(capfd, logs):
    with pytest.raises(RuntimeError, match="conversion failed"), to_debug_log("converter"):
        os.write(2, b"error: op FOO is not supported\n")
        raise RuntimeError("conversion failed")
    assert capfd.readouterr().err == ""
    warned = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert warned == ["converter: error: op FOO is not supported"]
