"""Training and validation data for a wake word: recipes → cached TTS clips → cached features.

Sets (all deterministic by seed):
  * positives (training voices): the phrase ending in the last 0–0.25 s of a 2 s clip → one window;
  * near-misses (training voices): parts and phoneme edits of the phrase, placed the same way;
  * lone words (training voices): one or two everyday words, placed the same way;
  * speech: 10 s chunks of everyday sentences → every other window;
  * noise, synthetic everyday sounds, and the user's own negative audio: 10 s chunks → windows;
  * validation positives (held-out voices): a 3 s clip whose first 2 s are aligned like a training
    positive, then 1 s more: 13 windows, scored as the device would stream them;
  * validation near-misses (held-out voices): placed like the validation positives; the share that
    fires is reported (they are far denser than in real speech, so they stay out of FA/h);
  * validation stream (held-out voices): sentences, noise, sounds and held-out user audio, scored at every
    80 ms frame for false accepts per hour.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import atomic
from edgekit.trainer.wakeword import corpus, features, negatives, tts
from edgekit.trainer.wakeword.augment import MixSpec, room_impulse_responses
from edgekit.trainer.wakeword.config import WakewordConfig
from edgekit.trainer.wakeword.features import FeatureSource, Recipe

log = logging.getLogger(__name__)

CLIP = 32000  # 2 s: exactly 16 embedding frames
VAL_CLIP = 48000  # 3 s: 28 frames, 13 windows
CHUNK = 160000  # 10 s stream chunks
END_JITTER = 4000  # the phrase ends 0–0.25 s before the clip end
SENTENCE_S = 3.5


@dataclass
class WakewordData:
    """Feature arrays ready for training and evaluation."""

    x_pos: np.ndarray
    x_neg: np.ndarray
    val_pos: np.ndarray
    """(clips, 28, 96) held-out positives; window 0 is aligned like a training positive."""
    val_stream: np.ndarray
    """(chunks, 116, 96) held-out negative audio, scored at every frame."""
    val_near: np.ndarray
    """(clips, 28, 96) held-out near-misses, placed like `val_pos`."""
    stats: dict = field(default_factory=dict)


class _Steps:
    """A Rich progress bar over the generation steps, with a per-step rate in the log."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        from edgekit.console import console
        from edgekit.progress import Progress

        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)

    def run(self, label: str, total: int, fn):
        task = self.progress.add_task(label, total=max(total, 1))
        t0 = time.perf_counter()
        out = fn(lambda k: self.progress.advance(task, k))
        dt = time.perf_counter() - t0
        self.progress.update(task, completed=max(total, 1))
        log.info("%s: %d in %.1f s (%.1f /s)", label, total, dt, total / dt if dt > 0 else 0.0)
        return out, dt


def _rng(cfg: WakewordConfig, *salt: object) -> np.random.Generator:
    return np.random.default_rng(int(cfg.digest(cfg.seed, *salt), 16) % (2**63))


def _ends(n: int, rng: np.random.Generator, clip_end: int) -> list[int]:
    return [int(clip_end - rng.integers(0, END_JITTER + 1)) for _ in range(n)]


def _place(paths: list[Path], length: int, end_at: int, rng: np.random.Generator) -> list[Recipe]:
    ends = _ends(len(paths), rng, end_at)
    return [Recipe("place", (str(p),), length, e, int(rng.integers(2**31))) for p, e in zip(paths, ends, strict=True)]


def _sequences(paths: list[Path], n_chunks: int, rng: np.random.Generator) -> list[Recipe]:
    per = max(1, int(round(CHUNK / 16000 / SENTENCE_S)))
    out = []
    for i in range(n_chunks):
        pick = tuple(str(paths[int(j)]) for j in rng.integers(len(paths), size=per)) if paths else ()
        out.append(Recipe("sequence" if pick else "noise", pick, CHUNK, 0, int(rng.integers(2**31)) + i))
    return out


def _sound_chunks(n_chunks: int, rng: np.random.Generator) -> list[Recipe]:
    """10 s scenes of synthetic everyday sounds, each from its own seed."""
    return [Recipe("sounds", (), CHUNK, 0, int(rng.integers(2**31))) for _ in range(n_chunks)]


def _user_chunks(lengths: dict[Path, int], rng: np.random.Generator) -> tuple[list[Recipe], list[Recipe]]:
    """10 s pieces of the user's negative audio (file → samples); every fifth file is held out for validation.

    The files of each side are played end to end and cut into whole chunks, so short files (1 s words) are
    not padded with silence: padded seconds would count as hours of audio heard and lower the measured
    false accepts per hour. A last piece shorter than a quarter chunk is left out; one longer is padded.
    """
    sides: tuple[list[tuple[Path, int]], list[tuple[Path, int]]] = ([], [])
    for i, item in enumerate(lengths.items()):
        sides[i % 5 == 4].append(item)
    return _stream_chunks(sides[0], rng), _stream_chunks(sides[1], rng)


def _stream_chunks(files: list[tuple[Path, int]], rng: np.random.Generator) -> list[Recipe]:
    """Whole chunks of the files joined end to end: each recipe lists the files it spans and its offset."""
    starts = np.cumsum([0] + [n for _, n in files])
    total, out = int(starts[-1]), []
    for begin in range(0, max(total - CHUNK // 4, 0), CHUNK):
        first = int(np.searchsorted(starts, begin, side="right")) - 1
        last = int(np.searchsorted(starts, min(begin + CHUNK, total), side="left"))
        spanned = tuple(str(f) for f, _ in files[first:last])
        out.append(Recipe("file", spanned, CHUNK, begin - int(starts[first]), int(rng.integers(2**31))))
    return out


def build(cfg: WakewordConfig, oww_folder: Path) -> WakewordData:
    """Synthesize, augment and embed every set (reusing the cache), and report clips/s."""
    d = cfg.data
    cache = Path(cfg.cache_dir)
    src = FeatureSource(Path(oww_folder), cfg.workers)
    src.models()  # a clear error now if the feature models are missing
    engines = tts.select_engines(d.engines, d.lang, d.piper_voices)
    voices = tts.voice_set(engines, d.lang, d.piper_voices, d.val_fraction, cfg.seed)
    # read once here: unreadable files fail before any long work, and the lengths place the chunks
    user_lengths = {f: len(negatives.read_audio(f)) for f in negatives.audio_files(d.negatives)}
    backgrounds = negatives.readable(negatives.audio_files(d.background), "background")
    utts = _utterances(cfg, voices)
    steps = _Steps()
    stats: dict = {"engines": engines, "voices_train": voices.count("train"), "voices_val": voices.count("val")}
    with steps.progress:
        all_utts = [u for group in utts.values() for u in group]
        (paths, new), dt = steps.run("synthesizing speech", len(all_utts),
                                     lambda adv: tts.synthesize(all_utts, cache / "clips", cfg.workers, adv))
        stats["tts"] = {"clips": len(all_utts), "new": new, "seconds": round(dt, 1),
                        "clips_per_s": round(new / dt, 1) if new and dt > 0 else None}
        by_key = dict(zip((u.key for u in all_utts), paths, strict=True))
        sets = _recipes(cfg, {k: [by_key[u.key] for u in v] for k, v in utts.items()}, user_lengths)
        mix = MixSpec(tuple(str(p) for p in backgrounds), tuple(d.snr_db),
                      d.reverb_probability, str(_rir_file(cfg, cache)), cfg.seed,
                      sound_share=d.sound_background)
        # the user's files by content, not only by path: a recording replaced under the same name must not
        # reuse the features (or resume the run) made from the old one. Backgrounds are mixed under every
        # set; a negative file changes only the sets whose recipes play it.
        ids = {str(p): atomic.sha256_file(p) for p in {*user_lengths, *backgrounds}}  # a file may be both
        bg_ids = [(str(p), ids[str(p)]) for p in backgrounds]
        feats: dict[str, np.ndarray] = {}
        digests: list[str] = []
        rendered = reused = 0
        t0 = time.perf_counter()
        with features.Embedder(mix, src) as embedder:
            for name, recipes in sets.items():
                played = sorted({(c, ids[c]) for r in recipes if r.kind == "file" for c in r.clips})
                digest = cfg.digest(name, [r.__dict__ for r in recipes], mix.__dict__, src.identity(),
                                    features.RENDER_VERSION, bg_ids, played)
                digests.append(digest)
                (arr, hit), _ = steps.run(f"features: {name}", len(recipes), lambda adv, n=name, r=recipes, g=digest:
                                          features.cached(n, r, embedder, cache / "features", g, adv))
                feats[name] = arr
                reused += len(recipes) if hit else 0
                rendered += 0 if hit else len(recipes)
        dt = time.perf_counter() - t0
    stats["digest"] = cfg.digest(digests)
    stats["features"] = {"clips": rendered + reused, "new": rendered, "reused": reused, "seconds": round(dt, 1),
                         "clips_per_s": round(rendered / dt, 1) if rendered and dt > 0 else None}
    return _assemble(feats, stats)


def _utterances(cfg: WakewordConfig, voices: tts.VoiceSet) -> dict[str, list[tts.Utterance]]:
    d = cfg.data
    n_val = max(16, int(round(d.n_positive * d.val_fraction)))
    adv = negatives.adversarial_texts(d.phrases, d.lang, d.negative_phrases, _rng(cfg, "adv-texts"))
    phon = [t for t in adv if t.startswith("[[")]
    words = [t for t in adv if not t.startswith("[[")]
    espeak = {"espeak-ng": voices.train.get("espeak-ng", [])}
    espeak_val = {"espeak-ng": voices.val.get("espeak-ng", [])}
    n_sent = int(d.speech_minutes * 60 / SENTENCE_S)
    exclude = {w for p in d.phrases for w in p.lower().split()}
    sents = corpus.sentences(d.lang, n_sent + max(8, int(n_sent * d.val_fraction)), _rng(cfg, "sentences"), exclude)
    n_adv_val = max(8, int(d.n_adversarial * d.val_fraction))
    lone = corpus.sentences(d.lang, max(d.n_words, 1), _rng(cfg, "words"), exclude, length=(1, 3))
    def placed(texts: list[str], pool: dict[str, list[str]], n: int, salt: str) -> list[tts.Utterance]:
        return tts.plan(texts, pool, n, _rng(cfg, salt), speed=d.speed)

    return {
        "words": placed(lone, voices.train, d.n_words, "words-plan"),
        "pos": placed(d.phrases, voices.train, d.n_positive, "pos"),
        "pos_val": placed(d.phrases, voices.val, n_val, "pos-val"),
        "adv": placed(phon, espeak, d.n_adversarial // 2, "adv-ph")
        + placed(words, voices.train, d.n_adversarial - d.n_adversarial // 2, "adv-w"),
        "adv_val": placed(phon, espeak_val, n_adv_val // 2, "adv-ph-val")
        + placed(words, voices.val, n_adv_val - n_adv_val // 2, "adv-w-val"),
        "speech": tts.plan(sents[:n_sent], voices.train, n_sent, _rng(cfg, "speech")),
        "speech_val": tts.plan(sents[n_sent:], voices.val, len(sents) - n_sent, _rng(cfg, "speech-val")),
    }


def _rir_file(cfg: WakewordConfig, cache: Path) -> Path:
    n = 24
    room_impulse_responses(n, cfg.seed, cache / "rirs")
    return cache / "rirs" / f"rirs-{n}-{cfg.seed}.npz"


def _recipes(cfg: WakewordConfig, clips: dict[str, list[Path]],
             user_lengths: dict[Path, int]) -> dict[str, list[Recipe]]:
    d = cfg.data

    def rng(name: str) -> np.random.Generator:  # one generator per set: adding a set keeps the others' caches
        return _rng(cfg, "recipes", name)

    n_speech = int(round(d.speech_minutes * 6))
    n_noise = int(round(d.noise_minutes * 6))
    n_sounds = int(round(d.sound_minutes * 6))
    user_train, user_val = _user_chunks(user_lengths, rng("user"))
    n_val_chunks = max(6, int(round((n_speech + n_noise) * d.val_fraction)))
    sets = {
        "positives": _place(clips["pos"], CLIP, CLIP, rng("positives")),
        "near_misses": _place(clips["adv"], CLIP, CLIP, rng("near_misses")),
        "words": _place(clips["words"], CLIP, CLIP, rng("words")),
        "speech": _sequences(clips["speech"], n_speech, rng("speech")),
        "noise": _sequences([], n_noise, rng("noise")),
        "sounds": _sound_chunks(n_sounds, rng("sounds")),
        "user_negatives": user_train,
        "val_positives": _place(clips["pos_val"], VAL_CLIP, CLIP, rng("val_positives")),
        "val_near_misses": _place(clips["adv_val"], VAL_CLIP, CLIP, rng("val_near_misses")),
        "val_stream": _sequences(clips["speech_val"], n_val_chunks, rng("val_stream"))
        + _sequences([], max(1, n_noise // 4), rng("val_noise")) + user_val
        + _sound_chunks((n_sounds + 3) // 4, rng("val_sounds")),
    }
    return {k: v for k, v in sets.items() if v}


def _assemble(feats: dict[str, np.ndarray], stats: dict) -> WakewordData:
    w = features.windows
    neg_parts = [features.last_window(feats[k]) for k in ("near_misses", "words") if k in feats]
    neg_parts += [w(feats[k], stride=2) for k in ("speech", "sounds", "user_negatives") if k in feats]
    neg_parts += [w(feats["noise"], stride=4)] if "noise" in feats else []
    data = WakewordData(
        x_pos=np.ascontiguousarray(feats["positives"]),
        x_neg=np.concatenate(neg_parts).astype(np.float32, copy=False),
        val_pos=np.asarray(feats["val_positives"]),
        val_stream=np.asarray(feats["val_stream"]),
        val_near=np.asarray(feats.get("val_near_misses", np.zeros((0, 28, 96), np.float32))),
        stats=stats,
    )
    stats["windows"] = {"positive": len(data.x_pos), "negative": len(data.x_neg),
                        "val_positive_clips": len(data.val_pos),
                        "val_stream_minutes": round(_stream_frames(data) * 0.08 / 60, 1)}
    return data


def _stream_frames(data: WakewordData) -> int:
    n, f, _ = data.val_stream.shape
    return n * (f - features.WINDOW + 1)


