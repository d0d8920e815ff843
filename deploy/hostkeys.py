"""Host-key checking for SSH targets: known_hosts by default, `accept-new` on request.

Like `ssh -o StrictHostKeyChecking=yes`, an unknown host is refused with the command to trust it;
with `--accept-new-host-key` its key is recorded on first contact (`StrictHostKeyChecking=accept-new`).
A key that differs from the recorded one is always refused (paramiko raises BadHostKeyException).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

import paramiko

log = logging.getLogger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_port(hostname: str) -> tuple[str, str]:
    if hostname.startswith("[") and "]:" in hostname:
        host, port = hostname[1:].split("]:", 1)
        return host, port
    return hostname, "22"


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a host that is not in known_hosts, naming the command that trusts it."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key) -> None:
        host, port = _host_port(hostname)
        err = paramiko.SSHException(f"unknown host {hostname}")
        port_opt = f"-p {port} " if port != "22" else ""
        err.edgekit_message = (
            f"{hostname} is not in {self.known_hosts} (its {key.get_name()} key is {fingerprint(key)}); "
            f"after checking that fingerprint, trust it with `ssh-keyscan {port_opt}{host} >> {self.known_hosts}` "
            f"or rerun with --accept-new-host-key."
        )
        raise err


class AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record a first-seen host key in known_hosts and go on."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.info("Added %s (%s %s) to %s", hostname, key.get_name(), fingerprint(key), self.known_hosts)


def policy_for(client: paramiko.SSHClient, opts) -> paramiko.MissingHostKeyPolicy:
    """Load known_hosts into `client` and return the policy for hosts missing from it."""
    known = Path(opts.known_hosts).expanduser()
    if known.is_file():
        client.load_host_keys(str(known))
    return AcceptNew(known) if opts.accept_new_host_key else RefuseUnknown(known)
