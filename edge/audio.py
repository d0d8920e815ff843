"""Audio sources: 16 kHz mono int16 in frames of 1280 samples (80 ms), which is what openWakeWord eats.

One table, `AUDIO_SOURCES`: `mic` (pyaudio, imported only when chosen), `wav` (files or folders,
resampled when needed), `stdin` (raw 16 kHz int16). Each opens to an iterator of frames; a finite
source simply ends.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.edge.sources import SourceSpec, optional_module
from edgekit.errors import UserError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME = 1280
"""Samples per frame: 80 ms at 16 kHz, one openWakeWord score."""


# --- wav ---------------------------------------------------------------------------------------

def wav_files(paths: list[Path]) -> list[Path]:
    """The WAV files named by `paths` (files as given, folders searched recursively, sorted)."""
    if not paths:
        raise UserError("The wav audio source needs EDGEKIT_AUDIO_PATH (a WAV file or a folder of them).")
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() == ".wav")
            if not found:
                raise UserError(f"Audio folder {p} has no .wav files.")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"Audio file {p} does not exist.")
    return out


def read_wav(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A whole audio file as mono int16 at `rate` (averaging channels, polyphase resampling).

    Raises:
        UserError: when the file cannot be read as audio.
    """
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise UserError(f"Cannot read {path} as audio: {e}.")
    mono = data.mean(axis=1)
    if sr != rate:
        from scipy.signal import resample_poly

        g = math.gcd(int(sr), rate)
        mono = resample_poly(mono, rate // g, int(sr) // g).astype(np.float32)
    return (np.clip(mono, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def frames_of(samples: np.ndarray, frame: int = FRAME) -> Iterator[np.ndarray]:
    """Consecutive frames of `samples`; the last one is zero-padded."""
    for start in range(0, len(samples), frame):
        chunk = samples[start:start + frame]
        if len(chunk) < frame:
            chunk = np.pad(chunk, (0, frame - len(chunk)))
        yield chunk


def open_wav(settings: Any, on_drop: Any = None) -> Iterator[np.ndarray]:
    import soundfile as sf

    files = wav_files(list(settings.audio_path))
    for f in files:  # fail at open, not halfway through the list
        try:
            sf.info(str(f))
        except (RuntimeError, sf.LibsndfileError, OSError) as e:
            raise UserError(f"Cannot read {f} as audio: {e}.")
    return _wav_frames(files, realtime=settings.audio_realtime)


def _wav_frames(files: list[Path], realtime: bool) -> Iterator[np.ndarray]:
    t0, n = time.monotonic(), 0
    for f in files:
        log.debug("audio: playing %s", f)
        try:
            samples = read_wav(f)
        except UserError as e:  # broken past its header: skip it rather than restart the whole list
            log.warning("audio: skipping %s", e)
            continue
        for frame in frames_of(samples):
            if realtime:
                delay = t0 + n * FRAME / SAMPLE_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            n += 1
            yield frame


# --- stdin -------------------------------------------------------------------------------------

def open_stdin(settings: Any, on_drop: Any = None, stream: Any = None) -> Iterator[np.ndarray]:
    stream = stream if stream is not None else sys.stdin.buffer
    return _raw_frames(stream)


def _raw_frames(stream: Any) -> Iterator[np.ndarray]:
    need = FRAME * 2
    buf = b""
    while True:
        chunk = stream.read(need - len(buf))
        if not chunk:
            if buf:
                yield from frames_of(np.frombuffer(buf[: len(buf) // 2 * 2], dtype="<i2").astype(np.int16))
            return
        buf += chunk
        if len(buf) == need:
            yield np.frombuffer(buf, dtype="<i2").astype(np.int16)
            buf = b""


# --- mic ---------------------------------------------------------------------------------------

def pyaudio_module() -> Any:
    """The pyaudio module: the single place tests replace with a fake microphone."""
    return optional_module("pyaudio", "The mic audio source needs PyAudio: sudo apt install portaudio19-dev && "
                                      "pip install pyaudio.")


def _device_index(pa: Any, device: str | None) -> int | None:
    if device is None:
        return None
    if device.isdigit():
        return int(device)
    names = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if info.get("maxInputChannels", 0) > 0:
            names.append(info["name"])
            if device.lower() in info["name"].lower():
                return i
    raise UserError(f"Setting EDGEKIT_AUDIO_DEVICE is {device!r}, which matches no input device "
                    f"(inputs: {', '.join(names) or 'none'}).")


def open_mic(settings: Any, on_drop: Any = None) -> Iterator[np.ndarray]:
    pyaudio = pyaudio_module()
    pa = pyaudio.PyAudio()
    try:
        index = _device_index(pa, settings.audio_device)
        stream = pa.open(format=pyaudio.paInt16, channels=1, rate=SAMPLE_RATE, input=True,
                         frames_per_buffer=FRAME, input_device_index=index)
    except BaseException:
        pa.terminate()
        raise
    return _mic_frames(pa, stream, on_drop or (lambda n=1: None))


PA_INPUT_OVERFLOWED = -9981
"""PortAudio's error code when the input buffer overflowed: samples were lost while we were busy."""


def _mic_frames(pa: Any, stream: Any, on_drop: Any) -> Iterator[np.ndarray]:
    try:
        while True:
            try:
                data = stream.read(FRAME, exception_on_overflow=True)
            except OSError as e:
                if not e.args or e.args[-1] != PA_INPUT_OVERFLOWED:
                    raise
                on_drop(1)  # we fell behind; count it and keep listening
                continue
            yield np.frombuffer(data, dtype="<i2").astype(np.int16)
    finally:
        stream.stop_stream()
        stream.close()
        pa.terminate()


AUDIO_SOURCES: dict[str, SourceSpec] = {
    "mic": SourceSpec("mic", open_mic, "microphone through PyAudio (EDGEKIT_AUDIO_DEVICE: index or name)"),
    "wav": SourceSpec("wav", open_wav, "WAV files or folders (EDGEKIT_AUDIO_PATH), resampled to 16 kHz",
                      finite=True),
    "stdin": SourceSpec("stdin", open_stdin, "raw 16 kHz mono int16 on standard input", finite=True),
}
