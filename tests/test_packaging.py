"""Packaging: every package is installed under `edgekit`, the wheel works, the edge side needs no torch."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
SIDES = {"core": "edgekit", "trainer": "edgekit.trainer", "edge": "edgekit.edge", "deploy": "edgekit.deploy"}


def _declared() -> tuple[list[str], dict[str, str]]:
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return conf["packages"], conf["package-dir"]


def test_every_package_folder_is_declared():
    packages, dirs = _declared()
    for folder in SIDES:
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO).as_posix()
            name = next((pkg for pkg, d in dirs.items() if d == rel), None)
            assert name is not None, f"{rel} has an __init__.py but no package-dir entry in pyproject.toml"
            assert name in packages, f"{name} ({rel}) is not in [tool.setuptools] packages"


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'tensorflow', 'fabric', 'invoke', 'paramiko', 'matplotlib', 'onnx'}:
            raise ImportError('blocked on the device: ' + name)
sys.meta_path.insert(0, Block())
import importlib, pkgutil, edgekit.edge, edgekit.cli
for m in pkgutil.iter_modules(edgekit.edge.__path__):
    importlib.import_module('edgekit.edge.' + m.name)
import edgekit.bundle, edgekit.doctor
edgekit.cli.main(['--help'])
"""


def test_edge_imports_without_torch_tensorflow_fabric():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "serve" in out.stdout


@pytest.mark.slow
def test_wheel_contains_only_the_edgekit_namespace_and_imports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgekit"}
    assert "edgekit/deploy/docker/compose.yml" in names or not (REPO / "deploy/docker/compose.yml").exists()
    for folder, pkg in SIDES.items():
        for py in (REPO / folder).rglob("*.py"):
            rel = pkg.replace(".", "/") + "/" + py.relative_to(REPO / folder).as_posix()
            assert rel in names, f"{rel} missing from the wheel"
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = ("import edgekit, edgekit.trainer, edgekit.edge, edgekit.deploy, edgekit.cli; "
            "print(edgekit.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith(str(unpacked))
