"""Deploy time to 1 vs N loopback SSH hosts, and what a redeploy sends.

Starts N real OpenSSH servers on 127.0.0.1 (the test helper `tests/sshd.py`), builds one bundle with a
model file the size of an int8 MobileNetV2 (3.5 MB), then measures in the same run:

- a fresh deploy to 1 host (the baseline) and to N hosts at once (`--parallel N`): target ratio ≤ 1.5×;
- a redeploy of the same bundle to the N hosts: target no model bytes (it should send nothing at all);
- a redeploy with one `.env` value changed: only the `.env` travels.

    python bench/deploy_fleet.py                 # 8 hosts, 3.5 MB model
    python bench/deploy_fleet.py --hosts 4 --model-mb 14

The hosts share this machine's CPUs, so N parallel deploys compete for the same cores that serve them;
on real Pis each host does its own work and the ratio is lower.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from sshd import SSHD, available, device_dir, keygen, make_bundle  # noqa: E402

from edgekit.console import console  # noqa: E402
from edgekit.deploy import api  # noqa: E402


def fleet(servers: list[SSHD], work: Path, tag: str) -> tuple[list[str], list[str]]:
    """Each server's address and its own device folder (they share one disk); `deploy_all` pairs them."""
    return [s.address for s in servers], [str(device_dir(work / f"{tag}-{i}")) for i in range(len(servers))]


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of this machine have used since boot (Linux /proc/stat), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def client_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def deploy_all(addresses: list[str], roots: list[str], bundle, opts: dict,
               cpu: list | None = None) -> tuple[float, list]:
    """Deploy to every host in parallel (one root per host via an inventory file).

    With `cpu`, appends (this client's CPU seconds, the whole machine's busy CPU seconds) for the deploy.
    """
    inv = Path(roots[0]).parent / f"hosts-{Path(roots[0]).name}.toml"
    lines = [f'[hosts.h{i}]\naddress = "{a}"\nroot = "{r}"\n' for i, (a, r) in enumerate(zip(addresses, roots,
                                                                                              strict=True))]
    inv.write_text("".join(lines) + "[groups]\nall = [" + ", ".join(f'"h{i}"' for i in range(len(roots))) + "]\n")
    client, machine = client_cpu_seconds(), busy_cpu_seconds()
    start = time.perf_counter()
    result = api.deploy(["all"], bundle, inventory=inv, parallel=len(roots), **opts)
    seconds = time.perf_counter() - start
    if cpu is not None:
        after = busy_cpu_seconds()
        cpu.append((client_cpu_seconds() - client, None if machine is None else after - machine))
    bad = [r for r in result.results if not r.ok]
    if bad:
        raise SystemExit(f"deploy failed: {[(r.target, r.reason) for r in bad]}")
    return seconds, result.results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--model-mb", type=float, default=3.5)
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the median is reported")
    p.add_argument("--login-rc", action="store_true",
                   help="let bash read ~/.bashrc for every command (see tests/sshd.py); off by default")
    a = p.parse_args()
    if why := available():
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        work = Path(tmp)
        key = keygen(work / "id_ed25519")
        servers = [SSHD(work / f"sshd{i}", key, login_rc=a.login_rc) for i in range(a.hosts)]
        known = work / "known_hosts"
        known.write_text("".join(s.known_hosts_line for s in servers))
        # The "service" restarts instantly and is healthy once the release is in place: what is timed is
        # edgekit's work (connect, lock, upload, verify, extract, switch), not a service's start-up.
        opts = {"identity": [str(key)], "known_hosts": str(known), "use_agent": False,
                "restart": "true", "health": "test -f current/.release.json"}
        bundle = make_bundle(work / "models", model_bytes=int(a.model_mb * 2**20))
        try:
            rows = measure(servers, work, bundle, opts, a.repeat)
        finally:
            for s in servers:
                s.stop()
    report(rows, a)


def measure(servers: list[SSHD], work: Path, bundle, opts: dict, repeat: int) -> dict:
    one, many, redeploy, cpu_one, cpu_many = [], [], [], [], []
    for r in range(repeat):
        addrs, roots = fleet(servers[:1], work, f"one{r}")
        one.append(deploy_all(addrs, roots, bundle, opts, cpu_one)[0])
        addrs, roots = fleet(servers, work, f"many{r}")
        seconds, results = deploy_all(addrs, roots, bundle, opts, cpu_many)
        many.append(seconds)
        first_bytes = [res.uploaded for res in results]
        seconds, results = deploy_all(addrs, roots, bundle, opts)
        redeploy.append(seconds)
        re_bytes = [res.uploaded for res in results]
        re_status = {res.status for res in results}
        seconds, results = deploy_all(addrs, roots, bundle, {**opts, "env": {"CAMERA_FPS": str(r + 2)}})
        env_bytes = [res.uploaded for res in results]
    return {"one": one, "many": many, "redeploy": redeploy, "cpu_one": cpu_one, "cpu_many": cpu_many,
            "first_bytes": first_bytes, "re_bytes": re_bytes,
            "re_status": re_status, "env_bytes": env_bytes,
            "model_size": (bundle.path / "model_int8.tflite").stat().st_size}


def report(m: dict, a) -> None:
    t1, tn, tr = (statistics.median(m[k]) for k in ("one", "many", "redeploy"))
    model_size = m["model_size"]
    table = Table(title=f"Deploy to loopback SSH hosts (median of {a.repeat})", title_justify="left")
    for col in ("measurement", "value", "target"):
        table.add_column(col)
    table.add_row("fresh deploy, 1 host", f"{t1:.2f} s", "baseline")
    table.add_row(f"fresh deploy, {a.hosts} hosts in parallel", f"{tn:.2f} s", "")
    table.add_row(f"ratio {a.hosts} hosts / 1 host", f"{tn / t1:.2f}x", "≤ 1.5x")
    for key, label in (("cpu_one", "1 host"), ("cpu_many", f"{a.hosts} hosts")):
        client = statistics.median(c for c, _ in m[key])
        machine = [b for _, b in m[key] if b is not None]
        busy = f", whole machine {statistics.median(machine):.2f} s" if machine else ""
        table.add_row(f"CPU used, {label}", f"client {client:.2f} s{busy}", "")
    if m["cpu_many"][0][1] is not None:
        floor = statistics.median(b for _, b in m["cpu_many"]) / (os.cpu_count() or 1)
        table.add_row(f"CPU floor for {a.hosts} hosts on {os.cpu_count()} CPUs", f"{floor:.2f} s = {floor / t1:.2f}x",
                      "the ratio cannot go below this here")
    table.add_row("bytes sent per host, fresh deploy", f"{statistics.median(m['first_bytes']):,.0f}",
                  f"model file {model_size:,}")
    table.add_row(f"redeploy same bundle, {a.hosts} hosts", f"{tr:.2f} s ({', '.join(sorted(m['re_status']))})", "")
    table.add_row("bytes sent per host, redeploy", f"{max(m['re_bytes']):,}", "0 model bytes")
    table.add_row("bytes sent per host, redeploy with one .env change", f"{max(m['env_bytes']):,}", ".env only")
    console.print(table)
    load = os.getloadavg()[0]
    console.print(f"{os.cpu_count()} CPUs here, load average {load:.1f} at the end: the hosts, their sshd and "
                  f"this client share them.")


if __name__ == "__main__":
    main()
