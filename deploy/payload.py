"""What goes to the device for one bundle: the manifest and one model file, as a reproducible tarball.

The release's identity (`content`) is a hash over the shipped files' sha256s, so a redeploy of the same
bundle and format is recognised on the device without sending a byte of model data.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgekit import atomic
from edgekit.bundle import MANIFEST, Bundle
from edgekit.errors import UserError
from edgekit.trainer.formats import FORMATS

META = ".release.json"
# Preference when --format is not given: int8 first (what a Pi runs fastest), TFLite before ONNX.
FORMAT_ORDER = ("tflite-int8", "onnx-int8", "tflite", "onnx")
# The device runtime (MODEL_FRAMEWORK) of each deployable format, from the exporter's format table.
FRAMEWORK = {name: f.runtime for name, f in FORMATS.items()}


@dataclass
class Payload:
    """A bundle packed for one device format."""

    bundle: Bundle
    fmt: str
    model: str
    """The model file, relative to the release folder."""
    meta: dict
    tarball: Path
    sha256: str

    @property
    def release(self) -> str:
        return self.meta["release"]

    @property
    def expect(self) -> str:
        """What the device's /health reports when it runs this release: `name/version`."""
        return f"{self.bundle.name}/{self.bundle.version}"


def choose_format(bundle: Bundle, fmt: str | None, force: bool) -> tuple[str, str]:
    """The format to deploy and its file; refuses a gate-rejected file unless `force`."""
    models = {e.format: (rel, e) for rel, e in bundle.manifest.files.items() if e.role == "model"}
    deployable = {f: v for f, v in models.items() if f in FRAMEWORK}
    if fmt is None:
        usable = [f for f in FORMAT_ORDER if f in deployable and not deployable[f][1].refused]
        if not usable:
            have = ", ".join(models) or "none"
            raise UserError(f"Bundle {bundle.name}/{bundle.version} has no accepted device model "
                            f"(formats: {have}); run `edgekit export` first or pass --format with --force.")
        fmt = usable[0]
    if fmt not in deployable:
        raise UserError(f"Bundle {bundle.name}/{bundle.version} has no {fmt} model "
                        f"(it has: {', '.join(deployable) or 'none'}).")
    rel, entry = deployable[fmt]
    if entry.refused and not force:
        raise UserError(f"The {fmt} model of {bundle.name}/{bundle.version} {entry.refused}; "
                        f"pass --force to deploy it anyway.")
    return fmt, rel


def _threshold(bundle: Bundle) -> float | None:
    """The decision threshold the bundle recommends: `default`, then `threshold` (as the wake-word trainer
    writes it) like the export gate's `threshold_of`, then the first label's; None when there is none."""
    t = bundle.manifest.thresholds
    for key in ("default", "threshold", *bundle.manifest.labels):
        if isinstance(t.get(key), (int, float)) and not isinstance(t.get(key), bool):
            return float(t[key])
    return None


def build_meta(bundle: Bundle, fmt: str, model: str) -> dict:
    """The release record the device keeps beside the files (`.release.json`)."""
    files = [MANIFEST, model]
    manifest_sha = atomic.sha256_file(bundle.path / MANIFEST)
    ident = hashlib.sha256()
    for rel in files:
        ident.update(f"{rel}\0{manifest_sha if rel == MANIFEST else bundle.manifest.files[rel].sha256}\n".encode())
    return {
        "release": f"{bundle.name}-{bundle.version}-{fmt}", "name": bundle.name, "version": bundle.version,
        "task": bundle.manifest.task, "format": fmt, "model": model, "files": [model],
        "threshold": _threshold(bundle), "content": ident.hexdigest(),
    }


def env_for(meta: dict, root: str, slot: str) -> dict[str, str]:
    """The `.env` keys a release sets (the seeds' names), with paths through the slot symlink."""
    path = f"{root.rstrip('/')}/{slot}/{meta['model']}"
    # EDGEKIT_ROOT: where compose.yml mounts the device folder in the container, so these paths hold there
    env = {"EDGEKIT_ROOT": root.rstrip("/") or "/", "MODEL_FRAMEWORK": FRAMEWORK[meta["format"]]}
    if meta["task"] == "wakeword":
        env["OPENWAKEWORD_MODEL_PATHS"] = path
        if meta.get("threshold") is not None:
            env["OPENWAKEWORD_THRESHOLD"] = f"{meta['threshold']:g}"
    else:
        env["MODEL_PATH"] = path
    return env


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else path.stat().st_size
    info.mode, info.mtime, info.uname, info.gname = 0o644, 0, "", ""
    if data is not None:
        tar.addfile(info, io.BytesIO(data))
    else:
        with open(path, "rb") as f:
            tar.addfile(info, f)


def pack(bundle: Bundle, fmt: str | None, workdir: Path, force: bool = False) -> Payload:
    """Verify the bundle and write its release tarball (uncompressed: model files barely compress)."""
    fmt, model = choose_format(bundle, fmt, force)
    bundle.verify()
    meta = build_meta(bundle, fmt, model)
    tarball = Path(workdir) / f"{meta['release']}.tar"
    with atomic.atomic_path(tarball) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, path=bundle.path / MANIFEST)
        _add(tar, model, path=bundle.path / model)
        _add(tar, META, data=(json.dumps(meta, indent=2) + "\n").encode())
    return Payload(bundle, fmt, model, meta, tarball, atomic.sha256_file(tarball))
