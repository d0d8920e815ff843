"""The model bundle: the unit that moves from the trainer to the Pi.

A bundle is a folder `models/<name>/<version>/` holding `manifest.json` and the files it lists. The
manifest is a versioned pydantic schema; every file carries its size and sha256 so a bundle can be
verified anywhere (after a copy, after an upload, on the device).

Bundles are created in a hidden staging folder and renamed into place, and the manifest is rewritten
atomically, so a crash never leaves a half-written bundle or manifest behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit import __version__, atomic
from edgekit.errors import UserError, VerificationError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
Task = Literal["image-classification", "wakeword", "sequence-classification"]
TASKS: tuple[str, ...] = get_args(Task)
ImageFit = Literal["stretch", "pad", "crop"]
"""How a photo becomes the model's (height, width); the functions are `edgekit.edge.preprocess.FITS`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Preprocess(_Strict):
    """How raw input becomes the model's input tensor. Fields that do not apply to a task stay None."""

    color: Literal["RGB", "BGR", "L"] | None = None
    """Image channel order the model expects."""
    resize: tuple[int, int] | None = None
    """Image (height, width) the model takes."""
    fit: ImageFit | None = None
    """Images: how a photo of another aspect ratio becomes (height, width) (`edgekit.edge.preprocess.FITS`);
    None is stretch, what bundles made before this field did."""
    scale: float | None = None
    """Images: value = pixel_uint8 * scale + offset, then (value - mean) / std."""
    offset: float | None = None
    """Images: added after `scale`."""
    mean: list[float] | None = None
    """Per-channel mean subtracted after scale/offset (images) or per-feature mean (sequences)."""
    std: list[float] | None = None
    """Per-channel std divided by after the mean (images) or per-feature std (sequences)."""
    sample_rate: int | None = None
    """Audio: samples per second the model's front end expects (16000 for openWakeWord)."""
    frame_size: int | None = None
    """Audio: samples per frame fed to the model (1280 = 80 ms for openWakeWord)."""
    window: int | None = None
    """Sequences: frames per window; audio: feature frames per model input (16 for openWakeWord)."""
    stride: int | None = None
    """Sequences: frames between window starts."""
    features: list[str] | None = None
    """Sequences: names of the feature columns, in model order."""


class InputSpec(_Strict):
    """The model's input tensor."""

    shape: list[int]
    """Input shape with the batch dimension first (1 for a single sample)."""
    dtype: str = "float32"
    """Element type of the float model's input."""
    layout: str = "NCHW"
    """Axis order of the PyTorch model's input: NCHW/NHWC for images, NTF for sequences and wake words."""
    preprocess: Preprocess = Field(default_factory=Preprocess)
    """What the device does to raw input before inference."""


class FileEntry(_Strict):
    """One file of the bundle."""

    format: str
    """What the file is: pytorch, onnx, onnx-int8, tflite, tflite-int8, json, png, ..."""
    role: Literal["model", "checkpoint", "report", "plot", "data", "other"] = "other"
    """Why it is there: `model` files are what a device runs."""
    size: int
    """Size in bytes."""
    sha256: str
    """Hex sha256 of the content."""
    layout: str | None = None
    """For model files: the input axis order of this file, when it differs from `input.layout`."""
    status: Literal["accepted", "rejected", "unchecked"] | None = None
    """For exported models: the accuracy gate's verdict; `unchecked` until the gate has run (an export that
    stopped half-way leaves it). Deploy and the device refuse rejected and unchecked files unless forced."""
    gate: dict[str, Any] | None = None
    """For exported models: what the accuracy gate measured (accuracy, agreement, latency, size...)."""

    @property
    def refused(self) -> str | None:
        """Why deploy and the device will not run this file unless forced, or None when they may."""
        return REFUSED.get(self.status or "")


REFUSED = {"rejected": "was rejected by the export gate",
           "unchecked": "was never checked by the export gate (its export stopped); run `edgekit export` again"}
"""Gate statuses a model file is not run with, and why in words."""


class Provenance(_Strict):
    """Where and how the bundle was made."""

    edgekit_version: str = __version__
    git_commit: str | None = None
    host: str = Field(default_factory=socket.gethostname)
    device: str | None = None
    python: str = Field(default_factory=platform.python_version)
    torch: str | None = None


class Manifest(_Strict):
    """Everything a device or a tool needs to know about a bundle."""

    schema_version: int = SCHEMA_VERSION
    name: str
    task: Task
    version: str
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    labels: list[str]
    input: InputSpec
    files: dict[str, FileEntry] = Field(default_factory=dict)
    """Relative path → entry."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Validation metrics of the trained model (accuracy, F1, FA/h, ...)."""
    thresholds: dict[str, Any] = Field(default_factory=dict)
    """Recommended decision settings: `default`, per-label thresholds, wake-word patience/refractory."""
    training_config: dict[str, Any] = Field(default_factory=dict)
    """The full training configuration, as run."""
    provenance: Provenance = Field(default_factory=Provenance)
    extra: dict[str, Any] = Field(default_factory=dict)
    """Task-specific data that does not fit above (split files, calibration records)."""

    @field_validator("files")
    @classmethod
    def _inside_the_bundle(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        """A listed path must stay in the bundle folder: verification and deploy read what it names."""
        for rel in files:
            parts = rel.replace("\\", "/").split("/")
            if rel.startswith("/") or os.path.isabs(rel) or ".." in parts or not rel.strip():
                raise ValueError(f"file path {rel!r} leaves the bundle folder")
        return files


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str) -> str:
    """Validate a bundle name (letters, digits, `_`, `-`, `.`)."""
    if not NAME_RE.match(name):
        raise UserError(
            f"Bundle name {name!r} must start with a letter or digit and use only letters, digits, '_', '-', '.'."
        )
    return name


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current git commit of `cwd`, or None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def next_version(root: Path, name: str) -> str:
    """The next free version `vN` under `root/name`."""
    numbers = [int(m.group(1)) for p in (root / name).glob("v*") if (m := re.fullmatch(r"v(\d+)", p.name))]
    return f"v{max(numbers, default=0) + 1}"


class Bundle:
    """A bundle on disk: its folder and its manifest."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | os.PathLike) -> Bundle:
        """Read and validate `path/manifest.json`."""
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise UserError(f"{path} is not a bundle: it has no {MANIFEST}.")
        try:
            manifest = Manifest.model_validate_json(mpath.read_text())
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise UserError(f"{mpath} is not a valid manifest: {where}: {first['msg']}.")
        if manifest.schema_version > SCHEMA_VERSION:
            raise UserError(
                f"{mpath} uses manifest schema {manifest.schema_version}; this edgekit reads up to {SCHEMA_VERSION}."
            )
        return cls(path, manifest)

    @classmethod
    def containing(cls, path: str | os.PathLike, levels: int = 3) -> Bundle | None:
        """The bundle a model file sits in (its folder or up to `levels` folders above), or None."""
        for parent in list(Path(path).resolve().parents)[:levels]:
            if (parent / MANIFEST).is_file():
                return cls.load(parent)
        return None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def model_file(self, fmt: str) -> Path | None:
        """The model file of format `fmt` (e.g. `onnx-int8`), or None."""
        for rel, entry in self.manifest.files.items():
            if entry.role == "model" and entry.format == fmt:
                return self.path / rel
        return None

    def formats(self) -> list[str]:
        """The model formats present in the bundle."""
        return [e.format for e in self.manifest.files.values() if e.role == "model"]

    def verify(self) -> None:
        """Check every listed file exists with its recorded size and sha256.

        Raises:
            VerificationError: naming each file that is missing or altered.
        """
        problems = []
        for rel, entry in self.manifest.files.items():
            p = self.path / rel
            if not p.is_file():
                problems.append(f"{rel} is missing")
            elif p.stat().st_size != entry.size or atomic.sha256_file(p) != entry.sha256:
                problems.append(f"{rel} does not match its sha256")
        if problems:
            raise VerificationError(f"Bundle {self.path} failed verification: {'; '.join(problems)}.")

    @contextlib.contextmanager
    def editing(self) -> Iterator[Manifest]:
        """Change the manifest as it is on disk now, then save it: under a lock on the bundle folder and
        from a fresh read, so two processes (two exports of one bundle) never overwrite each other's
        entries with a stale copy."""
        with open(self.path / ".manifest.lock", "a") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except ImportError:  # no fcntl (Windows): the last writer wins, as without the lock
                pass
            self.manifest = Bundle.load(self.path).manifest
            yield self.manifest
            self.save()

    def add_file(self, rel: str, fmt: str, role: str = "other", **fields: Any) -> FileEntry:
        """Record a file already written under the bundle folder, and save the manifest atomically."""
        entry = entry_for(self.path / rel, fmt, role, **fields)
        with self.editing() as m:
            m.files[rel] = entry
        return entry

    def update(self, **changes: Any) -> None:
        """Change top-level manifest fields (validated) and save atomically."""
        with self.editing() as m:
            data = m.model_dump()
            data.update(changes)
            self.manifest = Manifest.model_validate(data)

    def save(self) -> None:
        atomic.write_text(self.path / MANIFEST, self.manifest.model_dump_json(indent=2) + "\n")

    def __repr__(self) -> str:
        return f"Bundle({self.name}/{self.version} at {self.path})"


def entry_for(path: Path, fmt: str, role: str = "other", **fields: Any) -> FileEntry:
    return FileEntry(format=fmt, role=role, size=path.stat().st_size, sha256=atomic.sha256_file(path), **fields)


class BundleWriter:
    """Builds a new bundle in a staging folder; `commit()` renames it into place.

    Example:
        w = BundleWriter("waste", root=Path("models"))
        torch.save(state, w.dir / "model.pt"); w.add("model.pt", "pytorch", "model")
        bundle = w.commit(task="image-classification", labels=[...], input=InputSpec(...))
    """

    def __init__(self, name: str, root: Path | None = None, version: str | None = None):
        from edgekit.paths import models_dir

        self.name = check_name(name)
        self.root = Path(root) if root is not None else models_dir()
        self._auto_version = version is None
        self.version = version or next_version(self.root, name)
        self.final = self.root / name / self.version
        if self.final.exists():
            raise UserError(f"Bundle {self.final} already exists; choose another version.")
        # unique per writer: two bundles staged by one process (or a reused pid) never share a folder
        self.dir = self.root / name / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self._entries: dict[str, tuple[str, str, dict[str, Any]]] = {}

    def add(self, rel: str, fmt: str, role: str = "other", **fields: Any) -> Path:
        """Declare a file (written, or to be written before commit) at `dir/rel`."""
        self._entries[rel] = (fmt, role, fields)
        return self.dir / rel

    def copy_in(self, src: str | os.PathLike, rel: str, fmt: str, role: str = "other", **fields: Any) -> Path:
        """Copy `src` into the bundle as `rel`."""
        dst = self.add(rel, fmt, role, **fields)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        return dst

    def commit(self, **manifest_fields: Any) -> Bundle:
        """Hash the files, write the manifest and move the bundle into place."""
        files = {rel: entry_for(self.dir / rel, fmt, role, **f) for rel, (fmt, role, f) in self._entries.items()}
        manifest_fields.setdefault("provenance", Provenance(git_commit=git_commit()))
        while True:
            manifest = Manifest(name=self.name, version=self.version, files=files, **manifest_fields)
            atomic.write_text(self.dir / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
            try:
                os.rename(self.dir, self.final)  # fails if another writer took the version meanwhile
                return Bundle(self.final, manifest)
            except OSError as e:
                if not self._auto_version or e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                log.info("version %s of %s was taken meanwhile; using the next one", self.version, self.name)
                self.version = next_version(self.root, self.name)
                self.final = self.root / self.name / self.version

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _version_key(p: Path) -> tuple[int, str]:
    m = re.fullmatch(r"v(\d+)", p.name)
    return (int(m.group(1)) if m else -1, p.name)


def resolve(arg: str | os.PathLike) -> Bundle:
    """Find a bundle from what a user typed.

    Accepts a version folder (`models/waste/v3`), a name folder (`models/waste`: its newest version),
    or a bare name looked up under the models folder (`waste`, `waste/v3`).
    """
    from edgekit.paths import models_dir

    p = Path(arg)
    for cand in (p, models_dir() / p):
        if (cand / MANIFEST).is_file():
            return Bundle.load(cand)
        if cand.is_dir():
            versions = sorted((c for c in cand.iterdir() if (c / MANIFEST).is_file()), key=_version_key)
            if versions:
                return Bundle.load(versions[-1])
    raise UserError(f"No bundle found at {arg!s} (looked for {MANIFEST} there and under {models_dir()}).")
