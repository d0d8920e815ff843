"""`edgekit record`: chunked ambient recording that survives a power cut, trimmed prompted positives.

The microphone is the one thing that cannot exist here: a fake one is injected at the `MicFactory`
and plays real WAV audio; chunking, atomic writes and trimming above it are the real code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.edge.record import (
    FRAME,
    RATE,
    AmbientConfig,
    PositivesConfig,
    list_wavs,
    read_wav,
    record_ambient,
    record_positives,
    trim_speech,
)


def wav_mic(samples: np.ndarray):
    """A MicFactory playing `samples`; each open continues where the last one stopped."""
    pos = [0]

    def open_() -> object:
        while pos[0] + FRAME <= len(samples):
            pos[0] += FRAME
            yield samples[pos[0] - FRAME:pos[0]]

    return open_


@pytest.fixture(scope="module")
def noise(shared: Path) -> np.ndarray:
    p = shared / "data" / "background-noise" / "exercise_bike.wav"
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return read_wav(p)


@pytest.mark.parametrize("kind", ["ambient", "positives"])
def test_out_that_is_a_file_is_one_sentence_before_the_microphone_opens(tmp_path, capsys, kind):
    from edgekit.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as e:  # no microphone here: the check must come before it is opened
        main(["record", kind, "--out", str(tmp_path / "notes.txt")])
    assert e.value.code == 2
    assert "notes.txt, which is a file; give a folder" in " ".join(capsys.readouterr().err.split())
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_ambient_is_written_in_whole_chunks_in_order(noise, tmp_path):
    cfg = AmbientConfig(out=tmp_path, minutes=3.5 / 60, chunk_s=1.0)
    files = record_ambient(cfg, wav_mic(noise))
    assert [f.name for f in files] == [f"ambient-{i:05d}.wav" for i in range(1, 5)]
    chunks = [read_wav(f) for f in files]
    per_chunk = round(RATE / FRAME) * FRAME
    assert [len(c) for c in chunks[:3]] == [per_chunk] * 3 and 0 < len(chunks[3]) < per_chunk
    joined = np.concatenate(chunks)
    np.testing.assert_array_equal(joined, noise[:len(joined)])
    # a second session continues the numbering instead of overwriting
    more = record_ambient(AmbientConfig(out=tmp_path, minutes=1 / 60, chunk_s=1.0), wav_mic(noise))
    assert more[0].name == "ambient-00005.wav"


def test_microphone_errors_are_survived_and_counted(noise, tmp_path):
    calls = {"n": 0}
    inner = wav_mic(noise)

    def flaky():
        calls["n"] += 1
        for i, frame in enumerate(inner()):
            if calls["n"] == 1 and i == 5:
                raise OSError("device unplugged")
            yield frame

    files = record_ambient(AmbientConfig(out=tmp_path, minutes=2 / 60, chunk_s=1.0), flaky)
    assert calls["n"] == 2
    assert sum(len(read_wav(f)) for f in files) == round(2 * RATE / FRAME) * FRAME

    def dead():
        raise OSError("no such device")
        yield  # pragma: no cover

    from edgekit.errors import UserError

    with pytest.raises(UserError, match="The microphone failed 2 times"):
        record_ambient(AmbientConfig(out=tmp_path / "d", minutes=0.1, max_retries=1), dead)


POWER_CUT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pathlib import Path
    from edgekit.edge.record import AmbientConfig, record_ambient, FRAME

    def mic():
        rng = np.random.default_rng(0)
        while True:
            time.sleep(0.002)
            yield (rng.standard_normal(FRAME) * 3000).astype(np.int16)

    record_ambient(AmbientConfig(out=Path(sys.argv[1]), minutes=10, chunk_s=0.4), mic)
""")


def test_power_cut_loses_at_most_the_chunk_being_recorded(tmp_path):
    out = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-c", POWER_CUT, str(out)])
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("ambient-*.wav"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up code runs: like pulling the plug
        proc.wait()
    files = list_wavs([out], "ambient")
    assert len(files) >= 3
    per_chunk = round(0.4 * RATE / FRAME) * FRAME
    for f in files:  # every chunk on disk is whole; a half-written one exists only as a hidden temp file
        assert len(read_wav(f)) == per_chunk
    assert all(p.name.startswith(".") for p in out.iterdir() if p not in files)


def test_positives_are_trimmed_to_the_speech(shared, oww_dir, noise, tmp_path):
    word = read_wav(oww_dir / "alexa_test.wav")
    quiet = (noise[: 3 * RATE] * 0.05).astype(np.int16)
    take = quiet.copy()
    at = int(1.2 * RATE)
    take[at:at + len(word)] = np.clip(take[at:at + len(word)].astype(int) + word, -32768, 32767)
    silence = np.zeros(3 * RATE, np.int16)
    said = []
    # the first prompt hears only silence and is asked again; the second hears the word
    mic = wav_mic(np.concatenate([silence, take]))
    files = record_positives(PositivesConfig(out=tmp_path, prompt="say: alexa", count=1, seconds=3.0), mic,
                             say=said.append)
    assert said == ["[1/1] say: alexa", "[1/1] say: alexa (again, try 2)"]
    assert len(files) == 1
    clip = read_wav(files[0])
    assert 0.5 * RATE <= len(clip) <= len(word) + 0.6 * RATE  # the word plus padding, not the 3 s window
    assert np.abs(clip.astype(int)).max() >= 0.9 * np.abs(word.astype(int)).max()  # the word is in it


def test_trim_finds_nothing_in_steady_noise(noise):
    assert trim_speech(noise[: 2 * RATE]) is None
    assert trim_speech(np.zeros(RATE, np.int16)) is None


def test_ctrl_c_while_the_microphone_reopens_keeps_the_audio(noise, tmp_path, monkeypatch):
    from edgekit.edge import record

    inner = wav_mic(noise)

    def fails_after_half_a_second():
        for i, frame in enumerate(inner()):
            if i == 6:
                raise OSError("device unplugged")
            yield frame

    def interrupted(seconds):
        raise KeyboardInterrupt  # the user gives up while edgekit waits to reopen the microphone

    monkeypatch.setattr(record.time, "sleep", interrupted)
    files = record_ambient(AmbientConfig(out=tmp_path, minutes=1, chunk_s=10.0), fails_after_half_a_second)
    assert sum(len(read_wav(f)) for f in files) == 6 * FRAME


def test_calibration_counts_the_audio_a_wav_holds_not_its_header(tmp_path):
    import soundfile as sf

    from edgekit.edge.record import wav_samples

    x = (np.random.default_rng(0).standard_normal(10 * RATE) * 1000).astype(np.int16)
    sf.write(tmp_path / "full.wav", x, RATE, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 2 * RATE * 2 + 1])  # a killed recorder: 2 s and a half sample
    assert wav_samples(tmp_path / "cut.wav") == 2 * RATE
    np.testing.assert_array_equal(read_wav(tmp_path / "cut.wav"), x[: 2 * RATE])
    sf.write(tmp_path / "ext.wav", x, RATE, subtype="PCM_16", format="WAVEX")  # WAVE_FORMAT_EXTENSIBLE header
    np.testing.assert_array_equal(read_wav(tmp_path / "ext.wav"), x)
