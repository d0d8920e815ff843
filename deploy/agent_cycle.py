"""The device side of a switch: run the restart command, poll the health check, judge the answer.

Shipped beside `agent.py` in `<root>/.edgekit/agent-<id>/` and imported by it; stdlib only, like the agent.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def run_sh(cmd: str, cwd: str, timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run `cmd` with sh: (exit code, or None on timeout; the end of its output, decoded leniently).

    The output goes to a temporary file, not a pipe: a restart that leaves a background process
    (`./service &`) would hold a pipe open and make the wait last until the timeout.
    """
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as out:
        try:
            rc = subprocess.run(["sh", "-c", cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
        out.seek(0)
        return rc, out.read().decode("utf-8", "replace").strip()[-300:]


def reports(body: str, expect: str) -> bool:
    """Whether a health answer names `expect` exactly: as a JSON string anywhere in it or, in an answer
    that is not JSON, as a whole word (`waste/v1` is not in `waste/v10`)."""
    try:
        stack = [json.loads(body)]
    except ValueError:
        import re

        return re.search(rf"(?<![\w./-]){re.escape(expect)}(?![\w./-])", body) is not None
    while stack:
        value = stack.pop()
        if value == expect:
            return True
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _healthy_url(url: str, expect: str) -> tuple[bool, str]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(url, timeout=5) as r:
            body = r.read().decode("utf-8", "replace")
    except Exception as e:  # any failure is "not healthy yet"
        return False, f"{url}: {e}"
    if expect and not reports(body, expect):
        return False, f"{url} does not report {expect}"
    return True, "ok"


def _healthy_cmd(cmd: str, root: str, expect: str) -> tuple[bool, str]:
    env = dict(os.environ, EDGEKIT_EXPECT_VERSION=expect, EDGEKIT_ROOT=root)
    rc, out = run_sh(cmd, root, 30.0, env)
    if rc is None:
        return False, "health command timed out"
    return rc == 0, out or f"exit {rc}"


def _poll(a, expect: str) -> tuple[bool, str]:
    """Poll a URL (must answer and name `expect`) or a command (exit 0) until healthy or timeout."""
    deadline = time.monotonic() + a.timeout
    while True:
        if a.check.startswith(("http://", "https://")):
            ok, why = _healthy_url(a.check, expect)
        else:
            ok, why = _healthy_cmd(a.check, a.root, expect)
        if ok or time.monotonic() > deadline:
            return ok, why
        time.sleep(a.interval)


def cycle(a, expect: str, prune: Callable[[], list]) -> dict:
    """Run the restart command (if any), poll the health check (if any), call `prune` when healthy.

    Anything that goes wrong, an exception included, is an unhealthy answer, never a lost rollback.
    """
    try:
        if a.restart:
            rc, out = run_sh(a.restart, a.root, a.restart_timeout)
            if rc is None:
                return {"healthy": False, "detail": f"restart timed out after {a.restart_timeout:g} s"}
            if rc != 0:
                return {"healthy": False, "detail": f"restart failed (exit {rc}): {out[-200:]}"}
        ok, why = _poll(a, expect) if a.check else (True, "restarted; no health check")
        return {"healthy": ok, "detail": why, "removed": prune() if ok else []}
    except Exception as e:  # a bug or an odd device: report it, and let the caller roll back
        return {"healthy": False, "detail": f"{type(e).__name__}: {e}"}
