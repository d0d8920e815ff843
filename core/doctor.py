"""`edgekit doctor`: what is installed here and whether it is usable.

One table of checks; each check is a small function returning (status, detail). A check never raises:
a broken install is something to report, not a crash.
"""

from __future__ import annotations

import importlib
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table

from edgekit.console import console

OK, MISSING, BROKEN = "ok", "missing", "broken"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    what: str
    run: Callable[[], tuple[str, str]]
    needed_for: str


def _import(module: str) -> tuple[str, object | None]:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return MISSING, None
    except Exception as e:  # imports that crash (e.g. binary wheels built for numpy 1)
        return f"{BROKEN}: {type(e).__name__}: {e}", None
    return OK, mod


def check_python() -> tuple[str, str]:
    return OK, f"{platform.python_version()} on {platform.machine()} ({platform.system()})"


def check_torch() -> tuple[str, str]:
    status, torch = _import("torch")
    if torch is None:
        return status, "pip install 'edgekit[train]' (torch==2.13.0)"
    detail = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        devices = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append(f"cuda:{i} {p.name} {p.total_memory / 2**30:.1f} GiB")
        detail += "; " + ", ".join(devices)
    else:
        detail += "; no CUDA device (training runs on CPU, slower)"
    return OK, detail


def check_onnxruntime() -> tuple[str, str]:
    status, ort = _import("onnxruntime")
    if ort is None:
        return status, "pip install onnxruntime"
    return OK, f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}"


def check_tflite() -> tuple[str, str]:
    status, mod = _import("ai_edge_litert.interpreter")
    if mod is None:
        return status, "pip install ai-edge-litert"
    from importlib.metadata import version

    return OK, f"ai-edge-litert {version('ai-edge-litert')}"


def check_openwakeword() -> tuple[str, str]:
    status, oww = _import("openwakeword")
    if oww is None:
        return status, "pip install openwakeword==0.6.0"
    from edgekit.paths import FEATURE_DIR_ENV, openwakeword_assets

    folder = openwakeword_assets()
    if folder is None or not (folder / "melspectrogram.onnx").exists():
        return MISSING, f"feature models not found: set {FEATURE_DIR_ENV} or run openwakeword.utils.download_models()"
    return OK, f"feature models in {folder}"


def _tool(cmd: str, args: list[str], hint: str) -> Callable[[], tuple[str, str]]:
    def run() -> tuple[str, str]:
        path = shutil.which(cmd)
        if path is None:
            return MISSING, hint
        try:
            out = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
            text = (out.stdout or out.stderr).strip()
            found = re.search(r"\d+\.\d+(\.\d+)?", text)
            return OK, f"{cmd} {found.group(0)}" if found else path
        except (OSError, subprocess.SubprocessError) as e:
            return f"{BROKEN}: {e}", path

    return run


def check_docker() -> tuple[str, str]:
    path = shutil.which("docker")
    if path is None:
        return MISSING, "install Docker (the device service runs in it)"
    try:
        out = subprocess.run([path, "version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{BROKEN}: {e}", path
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) < 2:
        client = parts[0] if parts else "?"
        return OK, f"client {client}; no engine reachable (fine on a training machine)"
    return OK, f"client {parts[0]}, engine {parts[1]}"


def _module(module: str, hint: str) -> Callable[[], tuple[str, str]]:
    def run() -> tuple[str, str]:
        status, mod = _import(module)
        if mod is None:
            return status, hint
        return OK, str(getattr(mod, "__version__", "installed"))

    return run


CHECKS: list[Check] = [
    Check("python", check_python, "everything"),
    Check("torch", check_torch, "train, export"),
    Check("onnxruntime", check_onnxruntime, "export, device"),
    Check("tflite interpreter", check_tflite, "export, device"),
    Check("openwakeword", check_openwakeword, "wake word"),
    Check("espeak-ng", _tool("espeak-ng", ["--version"], "apt install espeak-ng"), "wake-word training"),
    Check("festival", _tool("festival", ["--version"], "apt install festival festvox-kallpc16k"), "wake-word training"),
    Check("flite", _tool("flite", ["--version"], "apt install flite"), "wake-word training"),
    Check("piper", _tool("piper", ["--help"], "pip install piper-tts (and a voice model file)"), "wake-word training"),
    Check("fabric", _module("fabric", "pip install 'edgekit[deploy]'"), "deploy"),
    Check("ssh", _tool("ssh", ["-V"], "apt install openssh-client"), "deploy"),
    Check("docker", check_docker, "device service"),
]


def run_doctor() -> list[tuple[str, str, str]]:
    """Print the table and return its rows (what, status, detail)."""
    table = Table(title="edgekit doctor")
    for col in ("component", "status", "detail", "needed for"):
        table.add_column(col)
    rows = []
    for check in CHECKS:
        try:
            status, detail = check.run()
        except Exception as e:  # a check must never take the doctor down
            status, detail = f"{BROKEN}: {type(e).__name__}", str(e)
        style = "green" if status == OK else ("yellow" if status == MISSING else "red")
        table.add_row(check.what, f"[{style}]{status}[/]", detail, check.needed_for)
        rows.append((check.what, status, detail))
    console.print(table)
    return rows
