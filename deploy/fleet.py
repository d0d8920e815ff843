"""Many devices at once: a bounded pool or a canary first; partial failure is data, not an exception."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from edgekit.console import console
from edgekit.deploy.device import Device
from edgekit.deploy.releases import HostResult, timed
from edgekit.deploy.targets import Target
from edgekit.deploy.transport import SSHOptions, Transport, connect

log = logging.getLogger(__name__)
Work = Callable[[Device, Callable[[int, int], None]], HostResult]
Connect = Callable[[Target, SSHOptions], Transport]
STYLE = {"ok": "green", "skipped-identical": "cyan", "rolled-back": "yellow", "failed": "red", "not-run": "dim"}


@dataclass
class FleetResult:
    """One result per target, in the order the targets were given."""

    results: list[HostResult] = field(default_factory=list)

    @property
    def succeeded(self) -> list[HostResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[HostResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __getitem__(self, label: str) -> HostResult:
        return next(r for r in self.results if r.target == label)


def _one(target: Target, work: Work, ssh: SSHOptions, conn: Connect, progress: Progress) -> HostResult:
    task = progress.add_task(target.label, total=None)
    holder: dict[str, Transport] = {}

    def go() -> HostResult:
        holder["t"] = conn(target, ssh)
        return work(Device(holder["t"], target.root), lambda done, total: progress.update(task, completed=done,
                                                                                         total=total))

    res = timed(go, target.label)
    if "t" in holder:
        res.uploaded = holder["t"].bytes_sent
        try:
            holder["t"].close()
        except Exception as e:  # a dead connection may not close cleanly; the result already says so
            log.debug("%s: close: %s", target.label, e)
    progress.update(task, visible=False)
    return res


def run_fleet(targets: list[Target], work: Work, ssh: SSHOptions, parallel: int = 4, canary: bool = False,
              conn: Connect = connect) -> FleetResult:
    """Run `work` on every target, at most `parallel` at a time; with `canary`, the first one alone first."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        results: dict[Target, HostResult] = {}
        rest = list(targets)
        if canary and len(targets) > 1:
            first = rest.pop(0)
            results[first] = _one(first, work, ssh, conn, progress)
            if not results[first].ok:
                for t in rest:
                    results[t] = HostResult(t.label, "not-run", f"canary {first.label} did not pass")
                rest = []
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for t, res in zip(rest, pool.map(lambda t: _one(t, work, ssh, conn, progress), rest), strict=True):
                results[t] = res
    return FleetResult([results[t] for t in targets])


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def render(result: FleetResult, title: str) -> None:
    """Print the per-host table."""
    table = Table(title=title, title_justify="left")
    for col in ("host", "status", "release", "previous", "sent", "time", "reason"):
        table.add_column(col, overflow="fold", justify="right" if col in ("sent", "time") else "left")
    for r in result.results:
        table.add_row(r.target, f"[{STYLE.get(r.status, '')}]{r.status}[/]", r.release or "-", r.previous or "-",
                      _size(r.uploaded), f"{r.seconds:.1f} s", r.reason)
    console.print(table)
