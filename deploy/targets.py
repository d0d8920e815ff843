"""Where a deploy goes: `user@host[:port]`, `local:PATH`, or a group from an inventory `hosts.toml`.

Inventory example:

    root = "/opt/edgekit"            # optional: the device folder for every host
    [hosts.shed]                     # optional: a named host with its own folder
    address = "pi@10.0.0.7"
    root = "/srv/edgekit"
    [groups]
    kitchen = ["pi@10.0.0.5", "pi@10.0.0.6:2222", "shed"]
    lab = ["pi@lab-pi", "local:/tmp/fake-pi"]
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekit.errors import UserError
from edgekit.paths import require

DEFAULT_ROOT = "/opt/edgekit"
_SSH_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class Target:
    """One device: reached over SSH, or a local folder laid out like a device."""

    kind: str
    """`ssh` or `local` (a key of the transport table)."""
    host: str = ""
    """SSH host name or address (empty for local)."""
    user: str | None = None
    """SSH user; None uses the SSH config / current user."""
    port: int | None = None
    """SSH port; None uses the SSH config's `Port` for the host, else 22."""
    root: str = DEFAULT_ROOT
    """The device folder holding releases/, current and .env."""

    @property
    def label(self) -> str:
        if self.kind == "local":
            return f"local:{self.root}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{self.host}{port}"


class Host(BaseModel):
    """A named host of the inventory."""

    model_config = ConfigDict(extra="forbid")

    address: str
    """`user@host[:port]` or `local:PATH`."""
    root: str | None = None
    """This host's device folder, when it differs from the inventory's."""


class Inventory(BaseModel):
    """A `hosts.toml`: named hosts and groups of targets."""

    model_config = ConfigDict(extra="forbid")

    root: str | None = None
    """Device folder for every SSH host in the inventory (default /opt/edgekit)."""
    hosts: dict[str, Host] = {}
    """Host name → address and folder."""
    groups: dict[str, list[str]] = {}
    """Group name → targets (`user@host[:port]`, `local:PATH` or host names)."""


def load_inventory(path: str | Path | None) -> Inventory:
    """Read and validate an inventory file; no path means an empty inventory."""
    if path is None:
        return Inventory()
    p = require(path, "Inventory", "file")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return Inventory.model_validate(tomllib.loads(p.read_text()))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"Inventory {p} is not valid TOML: {e}.")
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"Inventory {p}: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}.")


def parse_target(text: str, root: str | None = None) -> Target:
    """Parse one `user@host[:port]` or `local:PATH`."""
    if text.startswith("local:"):
        path = text[len("local:"):]
        if not path:
            raise UserError("local: needs a folder, e.g. local:.demo/device.")
        return Target(kind="local", root=str(Path(path).expanduser().resolve()))
    m = _SSH_RE.match(text)
    if not m:
        raise UserError(f"{text!r} is not a target: use user@host[:port], local:PATH or an inventory group.")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise UserError(f"Port {port} in {text!r} is out of range.")
    return Target(kind="ssh", host=m.group("host").strip("[]"), user=m.group("user"), port=port,
                  root=root or DEFAULT_ROOT)


def expand(items: list[str], inventory: Inventory, root: str | None = None) -> list[Target]:
    """Targets from what the user typed: group names expand to their members; duplicates are dropped."""
    default_root = root or inventory.root
    names = [*inventory.groups, *inventory.hosts]
    out: list[Target] = []
    for item in items:
        if item in inventory.groups:
            members = inventory.groups[item]
        elif item in inventory.hosts or "@" in item or ":" in item or "." in item or not names:
            members = [item]
        else:
            close = difflib.get_close_matches(item, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known: {', '.join(names)}."
            raise UserError(f"{item!r} is neither a target nor a group or host of the inventory.{hint}")
        for m in members:
            host = inventory.hosts.get(m)
            if host:
                t = parse_target(host.address, root or host.root or inventory.root)
            else:
                t = parse_target(m, default_root)
            if t not in out:
                out.append(t)
    if not out:
        raise UserError("No targets given.")
    return out
