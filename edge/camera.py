"""Camera sources: each opens to an object whose `read()` gives an RGB uint8 HxWx3 array (None at the end).

One table, `CAMERA_SOURCES`: `picamera2` (the Pi camera; imported only when chosen), `opencv` (a USB
camera index or a video file), `folder` (images, for tests and replays).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.edge.preprocess import IMAGE_SUFFIXES
from edgekit.edge.sources import SourceSpec, optional_module, pick
from edgekit.errors import UserError

log = logging.getLogger(__name__)

CAPTURE_SIZE = (640, 480)


class FolderCamera:
    """Images of a folder in name order, as if a camera took them."""

    finite = True

    def __init__(self, folder: str | Path | None, loop: bool = False):
        if folder is None:
            raise UserError("The folder camera source needs EDGEKIT_CAMERA (a folder of images).")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"Setting EDGEKIT_CAMERA names {self.folder}, which is not a folder.")
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise UserError(f"Image folder {self.folder} has no images ({', '.join(IMAGE_SUFFIXES)}).")
        self.loop = loop
        self.index = 0
        self.last_path: Path | None = None

    def read(self) -> np.ndarray | None:
        """The next image; an unreadable one is logged and skipped (a replay never restarts from the top
        because of one broken file). None at the end, or when looping over a folder with no readable image."""
        from PIL import Image

        for _ in range(2 * len(self.files)):
            if self.index >= len(self.files):
                if not self.loop:
                    return None
                self.index = 0
            self.last_path = self.files[self.index]
            self.index += 1
            try:
                with Image.open(self.last_path) as im:
                    return np.asarray(im.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                log.warning("camera folder: skipping %s, which cannot be read as an image (%s)", self.last_path, e)
        return None

    def close(self) -> None:
        pass


def cv2_module(install: str | None = None) -> Any:
    """OpenCV, imported only when the opencv source (or the capture window) is chosen; `install`: what to
    say when it is missing (default: the opencv camera source's words)."""
    return optional_module("cv2", install or "The opencv camera source needs OpenCV: pip install "
                                             "opencv-python-headless (or apt install python3-opencv).")


class OpenCVCamera:
    """A USB camera by index, or a video file, through `cv2.VideoCapture`."""

    def __init__(self, spec: str | None):
        cv2 = cv2_module()
        self._cv2 = cv2
        target: int | str = 0 if spec is None else (int(spec) if spec.isdigit() else spec)
        # a video file ends; a camera index, a device node (/dev/video0) or a stream URL is retried
        self.finite = isinstance(target, str) and Path(target).is_file()
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise OSError(f"OpenCV cannot open camera {target!r}")

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok:
            if self.finite:
                return None
            raise OSError("OpenCV camera returned no frame (unplugged or busy?)")
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


def picamera2_class() -> Any:
    """`picamera2.Picamera2`: the single place tests replace with a fake Pi camera."""
    return optional_module("picamera2", "The picamera2 camera source needs Picamera2: sudo apt install "
                                        "python3-picamera2 (create the venv with --system-site-packages).").Picamera2


class PiCamera:
    """The Raspberry Pi camera through Picamera2/libcamera."""

    finite = False

    def __init__(self, spec: str | None):
        cls = picamera2_class()
        self.cam = cls(int(spec)) if spec and spec.isdigit() else cls()
        # A preview configuration streams continuously; `capture_array` then just takes the latest frame.
        try:
            config = self.cam.create_preview_configuration(main={"format": "RGB888", "size": CAPTURE_SIZE})
            self.cam.configure(config)
            self.cam.start()
        except BaseException:
            self.cam.close()  # else the next open finds the camera "in use"
            raise

    def read(self) -> np.ndarray | None:
        # libcamera's "RGB888" is stored B, G, R in memory; flip to RGB.
        return np.ascontiguousarray(self.cam.capture_array("main")[..., :3][..., ::-1])

    def close(self) -> None:
        self.cam.stop()
        self.cam.close()


def open_camera(settings: Any, loop: bool = False) -> Any:
    """Open the configured camera source (its row of `CAMERA_SOURCES`)."""
    spec = pick("EDGEKIT_CAMERA_SOURCE", settings.camera_source or "", CAMERA_SOURCES)
    if spec.name == "folder":
        return FolderCamera(settings.camera, loop=loop)
    return spec.open(settings.camera)


CAMERA_SOURCES: dict[str, SourceSpec] = {
    "picamera2": SourceSpec("picamera2", PiCamera, "the Pi camera (EDGEKIT_CAMERA: camera number)"),
    "opencv": SourceSpec("opencv", OpenCVCamera, "USB camera index or video file (EDGEKIT_CAMERA)"),
    "folder": SourceSpec("folder", FolderCamera, "images of a folder in name order (EDGEKIT_CAMERA)",
                         finite=True),
}
