"""Decode and resize every image once; keep the pixels as a uint8 memory-mapped array on disk.

One store per target size and fit, `<cache>/images-v<N>-<H>x<W>[-<fit>]/`: `pixels.u8` holds rows of
H*W*3 bytes (RGB, HWC) appended as new images arrive, and `index.json` maps each image's content hash to its row, so a
renamed or copied photo is not decoded again and an edited one is. Later epochs and later runs read
the memmap; no JPEG is decoded twice. Files that fail to decode are remembered with the reason.

Decoding and the fit to (H, W) (stretch, pad or crop; PIL's bilinear filter) are those of
`edgekit.edge.preprocess`, the code the export gate, calibration and the device run, so training sees
the same pixels they do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.errors import UserError

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEKIT_CACHE"
_CHUNK = 128
"""Images decoded per append: bounds memory on datasets of any size."""


DECODE_VERSION = 2
"""Bump when `decode` changes (2: EXIF orientation applied by edge.preprocess), so old rows are not reused."""


def cache_dir() -> Path:
    """`$EDGEKIT_CACHE`, else `.cache/edgekit` in the working directory."""
    return Path(os.environ.get(CACHE_ENV) or Path(".cache") / "edgekit")


def content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def decode(path: Path, size: tuple[int, int], fit: str = "stretch") -> np.ndarray:
    """An image as uint8 RGB HWC (upright per EXIF), brought to `size` = (H, W) by `fit`, as the device does."""
    from edgekit.edge.preprocess import fit_image, load_image

    return fit_image(load_image(path, "RGB"), size, fit)


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive lock between processes sharing the store (no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class CachedImages:
    """Pixels for a list of files: `pixels[rows[i]]` is file i, or rows[i] == -1 when it failed."""

    pixels: np.ndarray
    """Memory-mapped uint8 [rows, H, W, 3], read-only."""
    rows: np.ndarray
    errors: dict[int, str]
    """Index into the requested list → why that file could not be used."""
    hashes: list[str] = field(default_factory=list)
    """Content hash of each requested file (equal hashes: the same photo)."""

    def get(self, idx: np.ndarray) -> np.ndarray:
        """The images at positions `idx` of the requested list, as one uint8 [N, H, W, 3] array."""
        rows = self.rows[idx]
        order = np.argsort(rows)  # ascending rows read the memmap sequentially
        out = np.empty((len(rows), *self.pixels.shape[1:]), dtype=np.uint8)
        out[order] = self.pixels[rows[order]]
        return out


class ImageCache:
    """The on-disk store for one image size and fit (`edgekit.edge.preprocess.FITS`)."""

    def __init__(self, size: tuple[int, int], root: Path | None = None, workers: int | None = None,
                 fit: str = "stretch"):
        from edgekit.edge.preprocess import fit_spec

        fit_spec(fit)  # an unknown name fails here, not as a decode error recorded against every photo
        self.size = (int(size[0]), int(size[1]))
        self.fit = fit
        name = f"images-v{DECODE_VERSION}-{self.size[0]}x{self.size[1]}" + ("" if fit == "stretch" else f"-{fit}")
        self.dir = (root or cache_dir()) / name
        self.workers = workers or min(8, 2 * (os.cpu_count() or 1))
        self.row_bytes = self.size[0] * self.size[1] * 3

    @property
    def _data(self) -> Path:
        return self.dir / "pixels.u8"

    @property
    def _index(self) -> Path:
        return self.dir / "index.json"

    def _read_index(self) -> dict:
        try:
            return json.loads(self._index.read_text())
        except (OSError, ValueError):
            return {"rows": {}, "errors": {}, "stats": {}}

    def _hashes(self, paths: list[Path], index: dict) -> tuple[list[str], bool]:
        """Content hashes, skipping the read for files whose (size, mtime) are unchanged since last time.

        Returns:
            the hashes, and whether any file was read (then `index["stats"]` has news worth saving).
        """
        stats = index.setdefault("stats", {})
        read: list[str] = []

        def one(p: Path) -> str:
            st = p.stat()
            # ctime and inode too: an edit that restores the mtime (exiftool -P) still changes the ctime
            key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
            known = stats.get(str(p))
            if known and known[0] == key:
                return known[1]
            h = content_hash(p)
            stats[str(p)] = [key, h]
            read.append(h)
            return h

        with ThreadPoolExecutor(self.workers) as pool:
            hashes = list(pool.map(one, paths))
        return hashes, bool(read)

    def _try_decode(self, p: Path) -> np.ndarray | str:
        try:
            return decode(p, self.size, self.fit)
        except Exception as e:  # any decoder failure is a property of the file, not a bug here
            return str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"

    def _append(self, todo: dict[str, Path], index: dict, progress: Callable[[int], None] | None) -> None:
        """Decode the images in `todo` (hash → path) and append their rows; caller holds the lock."""
        n_valid = max(index["rows"].values(), default=-1) + 1
        with open(self._data, "ab") as f:
            f.truncate(n_valid * self.row_bytes)  # drop rows a crashed run wrote but never indexed
        items = list(todo.items())
        with ThreadPoolExecutor(self.workers) as pool, open(self._data, "ab") as f:
            for start in range(0, len(items), _CHUNK):
                chunk = items[start:start + _CHUNK]
                for (h, p), img in zip(chunk, pool.map(self._try_decode, [p for _, p in chunk]), strict=True):
                    if isinstance(img, str):
                        index["errors"][h] = img
                        log.warning("skipping %s: %s", p, img)
                    else:
                        f.write(np.ascontiguousarray(img).tobytes())
                        index["rows"][h] = n_valid
                        n_valid += 1
                    if progress:
                        progress(1)
                f.flush()
            os.fsync(f.fileno())
        atomic.write_json(self._index, index)

    def load(self, paths: list[Path], progress: Callable[[int], None] | None = None) -> CachedImages:
        """Pixels for `paths`, decoding only the images the store has not seen.

        Args:
            paths: image files, in the order the caller indexes them.
            progress: called with 1 per image decoded now (cached ones are not reported).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / ".lock"):
            index = self._read_index()
            index.setdefault("rows", {})
            index.setdefault("errors", {})
            have = self._data.stat().st_size if self._data.exists() else 0
            if have < (max(index["rows"].values(), default=-1) + 1) * self.row_bytes:
                log.warning("image cache %s lost its pixel file; rebuilding it", self.dir)
                index = {"rows": {}, "errors": {}, "stats": {}}
            hashes, rehashed = self._hashes([Path(p) for p in paths], index)
            todo = {h: Path(p) for h, p in zip(hashes, paths, strict=True)
                    if h not in index["rows"] and h not in index["errors"]}
            if todo:
                log.info("decoding %d image(s) into the cache at %s", len(todo), self.dir)
                self._append(todo, index, progress)
            elif rehashed or not self._index.exists():  # e.g. the same photos at a new path: hash them once
                atomic.write_json(self._index, index)
        n_rows = max(index["rows"].values(), default=-1) + 1
        pixels = (np.memmap(self._data, dtype=np.uint8, mode="r", shape=(n_rows, *self.size, 3))
                  if n_rows else np.zeros((0, *self.size, 3), np.uint8))
        rows = np.array([index["rows"].get(h, -1) for h in hashes], dtype=np.int64)
        errors = {i: index["errors"].get(h, "not decoded") for i, h in enumerate(hashes) if rows[i] < 0}
        return CachedImages(pixels, rows, errors, hashes)
