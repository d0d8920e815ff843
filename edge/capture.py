"""`edgekit data capture`: photograph labeled examples class by class from a camera source.

Keys (window): SPACE capture, ↑/↓ brightness, D info overlay, Q next class, ESC stop. The terminal UI
(for a Pi over SSH, no display) reads the same commands as lines: empty line or `c` capture, `+`/`-`
brightness, `d`, `q`, `x`. Photos go to `OUT/<class>/<class>_NNNN.jpg`, numbering continues after what
is already there, and the overlay shows existing/target counts.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekit import atomic
from edgekit.errors import UserError

log = logging.getLogger(__name__)

BRIGHTNESS_STEP = 0.1
BRIGHTNESS_RANGE = (0.2, 3.0)
ACTIONS = ("capture", "brighter", "darker", "info", "next", "stop")


class CaptureConfig(BaseModel):
    """What `edgekit data capture` does."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] = Field(min_length=1)
    """Class names, captured in this order, each into its own sub-folder."""
    out: Path
    """Dataset folder; photos go to OUT/<class>/."""
    target: int = Field(100, ge=1)
    """Photos wanted per class (shown as existing/target)."""
    camera_source: str = "picamera2"
    """Row of the camera sources table: picamera2, opencv, folder."""
    camera: str | None = None
    """Camera number, OpenCV index/video file, or image folder."""
    ui: str = "window"
    """window (OpenCV preview, keys) or terminal (commands on stdin, for SSH sessions)."""
    quality: int = Field(95, ge=50, le=100)
    """JPEG quality of saved photos."""

    @field_validator("classes")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        v = [c.strip() for c in v if c.strip()]
        if not v:
            raise ValueError("give at least one class name, e.g. glass,metal,paper")
        bad = [c for c in v if not re.fullmatch(r"[\w.-]+", c)]
        if bad:
            raise ValueError(f"class names must be letters, digits, '_', '-', '.': {', '.join(bad)}")
        if len(set(v)) != len(v):
            raise ValueError("class names repeat")
        return v


def existing(folder: Path, label: str) -> tuple[int, int]:
    """(number of photos in `folder`, next free number for `label_NNNN.jpg`)."""
    if not folder.is_dir():
        return 0, 1
    photos = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    numbers = [int(m.group(1)) for p in photos if (m := re.fullmatch(rf"{re.escape(label)}_(\d+)", p.stem))]
    return len(photos), max(numbers, default=0) + 1


@dataclass
class CaptureSession:
    """The capture state machine: actions in, photos out. No camera or window code here."""

    config: CaptureConfig
    brightness: float = 1.0
    overlay: bool = True
    index: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.config.classes:
            n, nxt = existing(self.config.out / c, c)
            self.counts[c], self.before[c], self._next[c] = n, n, nxt

    @property
    def label(self) -> str | None:
        return self.config.classes[self.index] if self.index < len(self.config.classes) else None

    @property
    def done(self) -> bool:
        return self.label is None

    def adjust(self, frame: np.ndarray) -> np.ndarray:
        """The frame with the brightness gain applied (what gets saved)."""
        if abs(self.brightness - 1.0) < 1e-6:
            return frame
        return np.clip(frame.astype(np.float32) * self.brightness, 0, 255).astype(np.uint8)

    def handle(self, action: str, frame: np.ndarray | None) -> Path | None:
        """Apply one action; returns the saved photo's path for `capture`."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        label = self.label
        if label is None:
            return None
        if action == "capture" and frame is not None:
            return self._save(label, self.adjust(frame))
        if action in ("brighter", "darker"):
            step = BRIGHTNESS_STEP if action == "brighter" else -BRIGHTNESS_STEP
            self.brightness = round(min(max(self.brightness + step, BRIGHTNESS_RANGE[0]), BRIGHTNESS_RANGE[1]), 2)
        elif action == "info":
            self.overlay = not self.overlay
        elif action == "next":
            self.index += 1
        elif action == "stop":
            self.index = len(self.config.classes)
        return None

    def status(self) -> str:
        label = self.label or "-"
        n = self.counts.get(label, 0)
        return (f"{label}: {n}/{self.config.target}{' done' if n >= self.config.target else ''}  "
                f"brightness {self.brightness:.1f}  [{self.index + 1}/{len(self.config.classes)}]")

    def _save(self, label: str, frame: np.ndarray) -> Path:
        from PIL import Image

        path = self.config.out / label / f"{label}_{self._next[label]:04d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=self.config.quality)
        atomic.write_bytes(path, buf.getvalue())
        self._next[label] += 1
        self.counts[label] += 1
        return path


# --- user interfaces: a table, like the camera sources ----------------------------------------------

def terminal_actions(stream: Any = None, echo: Callable[[str], None] = print) -> Callable[..., str | None]:
    """Commands typed as lines (for SSH without a display); None at end of input."""
    stream = stream if stream is not None else sys.stdin
    table = {"": "capture", "c": "capture", "+": "brighter", "u": "brighter", "-": "darker",
             "b": "darker", "d": "info", "q": "next", "x": "stop"}

    def next_action(session: CaptureSession, frame: np.ndarray) -> str | None:
        while True:
            echo(session.status())
            line = stream.readline()
            if not line:
                return None
            cmd = line.strip().lower()
            if cmd in table:
                return table[cmd]
            echo("commands: Enter/c capture, + brighter, - darker, d info, q next class, x stop")

    return next_action


WINDOW_KEYS = {32: "capture", 2490368: "brighter", 65362: "brighter", 2621440: "darker", 65364: "darker",
               ord("d"): "info", ord("D"): "info", ord("q"): "next", ord("Q"): "next", 27: "stop"}
"""cv2.waitKeyEx codes: arrow keys differ between GTK (6536x) and Windows (2490368...)."""


def window_actions() -> Callable[..., str | None]:
    """An OpenCV preview window with the overlay; keys map through WINDOW_KEYS."""
    from edgekit.edge.camera import cv2_module

    # the window needs OpenCV's GUI build (the headless wheel has no imshow), whatever the camera source is
    cv2 = cv2_module("The capture window (--ui window) needs OpenCV with its GUI: pip install opencv-python "
                     "(or apt install python3-opencv); --ui terminal needs none.")

    def next_action(session: CaptureSession, frame: np.ndarray) -> str | None:
        shown = session.adjust(frame)
        if session.overlay:
            shown = draw_overlay(shown, session.status())
        cv2.imshow("edgekit capture", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        return WINDOW_KEYS.get(cv2.waitKeyEx(30))

    return next_action


def draw_overlay(frame: np.ndarray, text: str) -> np.ndarray:
    """The frame with `text` on a dark band at the top."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(frame)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, im.width, 22), fill=(0, 0, 0))
    draw.text((6, 5), text, fill=(255, 255, 255))
    return np.asarray(im)


UIS: dict[str, Callable[[], Callable[..., str | None]]] = {"window": window_actions, "terminal": terminal_actions}


def frames(camera: Any) -> Iterator[np.ndarray]:
    while (frame := camera.read()) is not None:
        yield frame


def run_capture(config: CaptureConfig, actions: Callable[..., str | None] | None = None) -> CaptureSession:
    """Capture until every class is done, the user stops, or the input/camera ends."""
    from types import SimpleNamespace

    from edgekit.edge.camera import open_camera
    from edgekit.edge.sources import pick

    if actions is None:
        actions = pick("--ui", config.ui, UIS)()
    session = CaptureSession(config)
    camera = open_camera(SimpleNamespace(camera_source=config.camera_source, camera=config.camera), loop=True)
    try:
        for frame in frames(camera):
            action = actions(session, frame)
            if action is None:
                if config.ui == "terminal":
                    break  # end of input
                continue
            if action == "capture" and config.ui == "terminal":
                # the terminal waited for the user's Enter: the frame read before the prompt is stale by now
                fresh = camera.read()
                frame = fresh if fresh is not None else frame
            saved = session.handle(action, frame)
            if saved is not None:
                log.info("saved %s", saved)
            if session.done:
                break
    finally:
        camera.close()
    return session


def summary_rows(session: CaptureSession) -> list[tuple[str, int, int, int, int]]:
    """(class, before, captured, now, target) per class."""
    t = session.config.target
    return [(c, session.before[c], session.counts[c] - session.before[c], session.counts[c], t)
            for c in session.config.classes]


def capture_config(classes: str, out: Path, target: int, source: str, camera: str | None,
                   ui: str) -> CaptureConfig:
    """The config from CLI options; a bad value is one sentence naming the option."""
    from pydantic import ValidationError

    from edgekit.edge.camera import CAMERA_SOURCES
    from edgekit.edge.sources import pick
    from edgekit.paths import check_output

    pick("--source", source, CAMERA_SOURCES)
    pick("--ui", ui, UIS)
    check_output(out, "--out")
    try:
        return CaptureConfig(classes=classes.split(","), out=out, target=target, camera_source=source,
                             camera=camera, ui=ui)
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"Option --{err['loc'][0]} is invalid: {err['msg'].removeprefix('Value error, ')}.")


def print_summary(session: CaptureSession) -> None:
    """The per-class result as a Rich table."""
    from rich.table import Table

    from edgekit.console import console

    table = Table(title=f"Captured into {session.config.out}")
    for col in ("class", "before", "captured", "now", "target"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, before, captured, now, target in summary_rows(session):
        table.add_row(c, str(before), str(captured), f"[green]{now}[/]" if now >= target else str(now), str(target))
    console.print(table)
