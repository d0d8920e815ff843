"""Image datasets laid out as `DIR/<class>/<photo>`: scanning, header checks and `edgekit data analyze`.

Only headers are read (PIL opens lazily and reads the size without decoding pixels) plus the last bytes
of JPEG/PNG files, which catches the usual corruption (truncated uploads, HTML saved as .jpg) on
thousands of photos in seconds. Anything the header check misses is caught at decode time by the image
cache, which skips and reports the file instead of crashing mid-epoch.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.edge.preprocess import IMAGE_SUFFIXES
from edgekit.errors import UserError
from edgekit.paths import require

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset(IMAGE_SUFFIXES)
"""What training reads: the same suffixes as evaluation, calibration and the device."""
CLASS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MIN_PER_CLASS = 100
MIN_TOTAL = 500
MAX_RATIO = 1.5
"""Largest/smallest class count above which the dataset counts as imbalanced."""

# Bytes a complete file of each format ends with (JPEG EOI marker, PNG IEND chunk + CRC).
_TRAILERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}


@dataclass(frozen=True)
class ImageInfo:
    """What a header read found out about one file."""

    rel: str
    """Path relative to the dataset root, with '/' separators."""
    label: str
    size: tuple[int, int] | None = None
    """(width, height) when readable."""
    problem: str | None = None
    """Why the file is unusable, or None."""


@dataclass
class Dataset:
    """A scanned dataset: the class names (sorted) and every candidate file."""

    root: Path
    classes: list[str]
    files: list[ImageInfo]
    skipped: list[ImageInfo] = field(default_factory=list)
    """Files that are not images at all (by extension) or hidden."""

    @property
    def good(self) -> list[ImageInfo]:
        return [f for f in self.files if f.problem is None]

    @property
    def bad(self) -> list[ImageInfo]:
        return [f for f in self.files if f.problem is not None] + self.skipped

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for f in self.good:
            out[f.label] += 1
        return out


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def list_classes(root: Path) -> list[str]:
    """The class folders of `root`, sorted, after checking the layout.

    Raises:
        UserError: the folder is missing, has images directly inside, has no class folders, or a class
            name has spaces or special characters.
    """
    require(root, "Dataset folder")
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    loose = sorted(p.name for p in entries if p.is_file() and _is_image_name(p))
    if loose:
        raise UserError(
            f"{len(loose)} image(s) lie directly in {root} (e.g. {loose[0]}); move each into {root}/<class>/."
        )
    classes = sorted(p.name for p in entries if p.is_dir())
    if not classes:
        raise UserError(f"{root} has no class subfolders; put images in {root}/<class>/ (one folder per class).")
    bad = [c for c in classes if not CLASS_RE.match(c)]
    if bad:
        raise UserError(
            f"Class folder name(s) {', '.join(repr(c) for c in bad)} have spaces or special characters; "
            "use letters, digits, '_' and '-' only (e.g. 'plastic_bottle')."
        )
    return classes


def check_header(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Read an image's size from its header and check its file ends completely.

    Returns:
        ((width, height), None) for a usable file, else (None, reason).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
    except UnidentifiedImageError:
        return None, "not a readable image (unknown or damaged header)"
    except Image.DecompressionBombError:
        return None, "too large (more pixels than Pillow opens safely)"
    except OSError as e:
        return None, f"unreadable ({e})"
    if size[0] < 1 or size[1] < 1:
        return None, f"empty image ({size[0]}x{size[1]})"
    trailers = _TRAILERS.get(fmt or "")
    if trailers and not _ends_whole(path, trailers):
        return None, f"truncated {fmt} (the file ends before the image does)"
    return size, None


def _ends_whole(path: Path, trailers: tuple[bytes, ...]) -> bool:
    """Whether the image's end marker is in the file: at its end (read first, 64 bytes), or earlier, as in
    phone photos that carry more after the image (a Motion Photo's video, a maker's trailer)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64))
        if f.read().rstrip(b"\x00\r\n ").endswith(trailers):
            return True
        f.seek(0)
        data = f.read()
    return any(t in data for t in trailers)


def scan(root: str | os.PathLike, workers: int | None = None,
         progress: Callable[[int], None] | None = None,
         on_total: Callable[[int], None] | None = None) -> Dataset:
    """Scan `root/<class>/*` with header reads in parallel threads.

    Args:
        root: dataset folder.
        workers: threads for header reads (default: min(8, 2 x CPUs)).
        progress: called with 1 after each file is checked (drives a progress bar).
        on_total: called once, before the checks, with the number of files to check (the bar's total).

    Raises:
        UserError: on the structural errors of `list_classes`, or a class without any image.
    """
    root = Path(root).resolve()
    classes = list_classes(root)
    candidates: list[tuple[Path, str]] = []
    skipped: list[ImageInfo] = []
    for c in classes:
        for p in sorted((root / c).rglob("*")):
            rel = p.relative_to(root)
            if not p.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            if _is_image_name(p):
                candidates.append((p, c))
            else:
                skipped.append(ImageInfo(rel.as_posix(), c,
                                         problem=f"not an image file (extension {p.suffix or 'none'!r})"))
    with_images = {label for _, label in candidates}
    empty = [c for c in classes if c not in with_images]
    if empty:
        raise UserError(f"Class folder(s) {', '.join(empty)} contain no images; add photos or remove the folder.")
    if on_total:
        on_total(len(candidates))

    def check(item: tuple[Path, str]) -> ImageInfo:
        size, problem = check_header(item[0])
        if progress:
            progress(1)
        return ImageInfo(item[0].relative_to(root).as_posix(), item[1], size, problem)

    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        files = list(pool.map(check, candidates))
    return Dataset(root, classes, files, skipped)


@dataclass
class Analysis:
    """The verdict of `analyze`: numbers, problems and advice."""

    root: str
    counts: dict[str, int]
    total: int
    size_min: tuple[int, int] | None
    size_median: tuple[int, int] | None
    size_max: tuple[int, int] | None
    bad: list[tuple[str, str]]
    """(relative path, reason) for every unusable file."""
    balance_ratio: float
    balanced: bool
    recommendations: list[str]

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _size_stats(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], ...] | tuple[None, None, None]:
    if not sizes:
        return None, None, None
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    return by_area[0], by_area[(len(by_area) - 1) // 2], by_area[-1]


def _recommend(counts: dict[str, int], total: int, ratio: float, n_bad: int, smin: tuple[int, int] | None) -> list[str]:
    recs = []
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        recs.append(f"{', '.join(empty)}: no usable photo; fix or replace the files listed above, or the class "
                    "cannot be trained.")
    small = [c for c, n in counts.items() if 0 < n < MIN_PER_CLASS]
    if small:
        recs.append(f"Add photos to {', '.join(small)}: aim for at least {MIN_PER_CLASS} per class.")
    if total < MIN_TOTAL:
        recs.append(f"Collect at least {MIN_TOTAL} images in total (now {total}).")
    if ratio > MAX_RATIO:
        low = min(counts, key=counts.get)
        recs.append(f"Classes are imbalanced ({ratio:.1f}x); add photos to {low} or train with --balance.")
    if n_bad:
        recs.append(f"Remove or replace the {n_bad} unusable file(s) listed above (training skips them).")
    if smin and min(smin) < 224:
        recs.append(f"The smallest image is {smin[0]}x{smin[1]}; photos of at least 224 px per side train best.")
    recs.append("Vary angles, backgrounds and lighting within each class, as the camera will see them on site.")
    return recs


def analyze(root: str | os.PathLike, workers: int | None = None,
            progress: Callable[[int], None] | None = None,
            on_total: Callable[[int], None] | None = None) -> Analysis:
    """Scan a dataset and judge it: counts, sizes, unusable files, balance, recommendations."""
    ds = scan(root, workers=workers, progress=progress, on_total=on_total)
    counts = ds.counts()
    total = sum(counts.values())
    nonzero = [n for n in counts.values() if n > 0]
    ratio = max(nonzero) / min(nonzero) if nonzero else float("inf")
    smin, smed, smax = _size_stats([f.size for f in ds.good if f.size])
    bad = [(f.rel, f.problem or "") for f in ds.bad]
    return Analysis(
        root=str(ds.root), counts=counts, total=total, size_min=smin, size_median=smed, size_max=smax,
        bad=bad, balance_ratio=round(ratio, 3), balanced=ratio <= MAX_RATIO and 0 not in counts.values(),
        recommendations=_recommend(counts, total, ratio, len(bad), smin),
    )


def render(a: Analysis) -> None:
    """Print an analysis as Rich tables: classes, sizes, unusable files, verdict and advice."""
    from rich.table import Table

    from edgekit.console import console

    t = Table(title=f"Dataset {a.root}", show_footer=True)
    t.add_column("class", footer="total")
    t.add_column("images", justify="right", footer=str(a.total))
    t.add_column("share", justify="right", footer="100%")
    for c, n in a.counts.items():
        style = "yellow" if n < MIN_PER_CLASS else ""
        t.add_row(c, f"[{style}]{n}[/]" if style else str(n), f"{100 * n / max(a.total, 1):.0f}%")
    console.print(t)
    if a.size_min:
        fmt = "{0[0]}x{0[1]}".format
        console.print(f"Image sizes (WxH): min {fmt(a.size_min)}, median {fmt(a.size_median)}, max {fmt(a.size_max)}")
    if a.bad:
        b = Table(title=f"{len(a.bad)} unusable file(s)")
        b.add_column("file")
        b.add_column("reason")
        for rel, why in a.bad:
            b.add_row(rel, why)
        console.print(b)
    verdict = "[green]balanced[/]" if a.balanced else "[yellow]imbalanced[/]"
    console.print(f"Balance: largest/smallest class = {a.balance_ratio:.2f} → {verdict}")
    console.print("Recommendations:")
    for r in a.recommendations:
        console.print(f"  • {r}")


def run_analyze(root: str | os.PathLike, workers: int | None = None, json_path: str | None = None) -> Analysis:
    """`edgekit data analyze`: scan with a progress bar, print the verdict, optionally save it as JSON."""
    from edgekit import atomic
    from edgekit.console import console
    from edgekit.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("Reading image headers", total=None)
        result = analyze(root, workers=workers, progress=lambda n: bar.advance(task, n),
                         on_total=lambda n: bar.update(task, total=n))
    render(result)
    if json_path:
        atomic.write_json(json_path, result.to_dict())
        console.print(f"Saved the analysis to {json_path}")
    return result
