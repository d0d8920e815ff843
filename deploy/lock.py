"""The device lock: one deploy at a time per device folder.

The agent holds an flock on `<root>/.edgekit/lock` for as long as its stdin stays open. The lock is tied
to our connection: when a deploy ends it closes stdin; when a laptop drops off the network, sshd ends the
session once it notices, the agent exits and the kernel releases the lock. sshd notices a silent peer
only through TCP keepalive (about two hours with Linux's default keepalive time) unless the Pi's
sshd_config sets `ClientAliveInterval 15` (with the default ClientAliveCountMax 3, 45 s by sshd's
documentation; not measured here). A stale lock cannot outlive its owner's session, so there is nothing
to clean up by hand. A switch (`apply`) the laptop started still finishes on the device, rolling back by
itself if unhealthy, and the next lock waits for it.

Taking the lock also answers the device state (after removing what a dead deploy left behind), which
saves a round trip: every SSH command costs a login shell and a Python start on the device.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from edgekit.deploy.device import DeployError, Device

log = logging.getLogger(__name__)


@contextlib.contextmanager
def device_lock(device: Device, timeout: float) -> Iterator[dict]:
    """Hold the device lock and yield the device state; a second deploy waits up to `timeout` s, then fails."""
    answer, release = device.t.hold(device.command("lock", "--timeout", timeout), timeout)
    if not answer.get("ok"):
        raise DeployError(f"{device.label}: {answer.get('error', 'could not take the device lock')}.")
    log.debug("%s: locked (agent pid %s)", device.label, answer.get("pid"))
    try:
        yield answer
    finally:
        try:
            release()
        except Exception as e:  # the connection may already be gone; the lock went with it
            log.debug("%s: releasing the lock: %s", device.label, e)
