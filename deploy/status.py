"""`edgekit status`: what each device runs, what it ran before, its `.env` decisions, its health."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from edgekit.console import console
from edgekit.deploy import envfile
from edgekit.deploy.device import Device
from edgekit.deploy.releases import DeployOptions, HostResult, expect_of, meta_of, slot_of


@dataclass
class DeviceStatus(HostResult):
    """A device's state, as a `HostResult` so fleets handle it like the other commands."""

    arch: str = ""
    formats: str = ""
    env: dict | None = None
    health: str = ""
    releases: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "empty")


def device_status(dev: Device, opts: DeployOptions) -> DeviceStatus:
    """Read the device's releases, slot, `.env` and a single health check (no lock: read only)."""
    dev.install_agent()
    state = dev.call("state")
    slot = slot_of(state, opts.slot)
    env = envfile.parse(state["env"])
    res = DeviceStatus(dev.label, "ok", release=slot["current"], previous=slot["previous"], arch=state["arch"],
                       env={k: v for k, v in env.items() if "THRESHOLD" in k or k == "MODEL_FRAMEWORK"},
                       releases=len(state["releases"]))
    metas = [meta_of(state, slot["current"]), meta_of(state, slot["previous"])]
    res.formats = " / ".join(m["format"] if m else "-" for m in metas)
    if metas[0]:
        answer = dev.call("apply", f"--check={opts.health}", f"--expect={expect_of(metas[0])}",
                          "--timeout=0", timeout=60)
        res.health = "healthy" if answer["healthy"] else f"unhealthy: {answer.get('detail', '')}"
        if not answer["healthy"]:
            res.status = "unhealthy"
    else:
        res.health, res.status = "nothing deployed", "empty"
    return res


def render_status(results: list[HostResult]) -> None:
    table = Table(title="Devices", title_justify="left")
    for col in ("host", "arch", "current", "previous", "formats", ".env", "health"):
        table.add_column(col, overflow="fold")
    for r in results:
        if not isinstance(r, DeviceStatus):
            table.add_row(r.target, "-", "-", "-", "-", "-", f"[red]unreachable: {r.reason}[/]")
            continue
        env = " ".join(f"{k}={v}" for k, v in (r.env or {}).items()) or "-"
        style = "green" if r.health == "healthy" else "red"
        table.add_row(r.target, r.arch, r.release or "-", r.previous or "-", r.formats, env,
                      f"[{style}]{r.health}[/]")
    console.print(table)
