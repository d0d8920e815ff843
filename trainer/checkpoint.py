"""Training checkpoints that survive a kill at any moment.

Every write goes to a temporary name and is moved into place (`edgekit.atomic`). A new
`checkpoint_last.pt` is written in full first; only then is the one before it renamed to
`checkpoint_prev.pt` and the new one moved in, so at any instant at least one complete checkpoint is on
disk. Loading tries `last`, then `prev`, and says why it skipped one; a `last` that cannot be read is
moved aside (`checkpoint_last.pt.unreadable`) when `prev` is used, so it never replaces the good `prev`.

A checkpoint is a dict of tensors and plain Python values (loadable with `weights_only=True`):
model, optimizer, scheduler and scaler state, the RNG states of python/numpy/torch/cuda, the position
(epoch, samples done in that epoch, global step), the batch size, early-stopping state, history, config.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = 1
LAST = "checkpoint_last.pt"
PREV = "checkpoint_prev.pt"
BEST_MODEL = "best_model.pt"
REQUIRED = ("format", "model", "optimizer", "rng", "epoch", "samples_done", "global_step", "batch_size")


def capture_rng() -> dict[str, Any]:
    """The state of every random generator a training step may draw from."""
    np_state = np.random.get_state(legacy=False)
    rng: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    """Put every generator back where `capture_rng` found it."""
    random.setstate(_as_tuple(rng["python"]))
    n = rng["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        states = rng["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            log.warning(
                "The checkpoint was written with %d GPUs, this machine has %d: CUDA RNG not restored.",
                len(states),
                torch.cuda.device_count(),
            )


def _as_tuple(x: Any) -> Any:
    """random.setstate wants tuples all the way down; a loaded checkpoint may hand back lists."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def save_last(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `checkpoint_last.pt`, keeping the one before it as `checkpoint_prev.pt`."""
    last, prev = run_dir / LAST, run_dir / PREV
    with atomic_path(last) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
        if last.exists():  # the new one is complete: now the old one may become prev
            os.replace(last, prev)
    return last


def load(path: Path) -> dict[str, Any]:
    """Load and check one checkpoint; raise `ValueError` with the reason when it is not usable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, unpickling error: all mean "not usable"
        raise ValueError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict):
        raise ValueError("not a checkpoint dictionary")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if ckpt["format"] != FORMAT:
        raise ValueError(f"checkpoint format {ckpt['format']}, this edgekit reads {FORMAT}")
    return ckpt


def load_latest(run_dir: Path) -> dict[str, Any] | None:
    """The newest usable checkpoint in `run_dir` (last, else prev), or None when there is none.

    A checkpoint that cannot be read is skipped with a warning naming the file and the reason. When `prev`
    is used, the unreadable `last` is renamed to `checkpoint_last.pt.unreadable`, so that the next
    `save_last` does not rotate it over `prev`, the only good checkpoint.
    """
    unreadable = None
    for name in (LAST, PREV):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            ckpt = load(path)
        except ValueError as e:
            log.warning("Skipping %s: it cannot be read (%s).", path, e)
            unreadable = unreadable or path
            continue
        if name == PREV:
            log.warning("Resuming from the previous checkpoint %s.", path)
            if unreadable is not None:
                os.replace(unreadable, unreadable.with_name(unreadable.name + ".unreadable"))
        return ckpt
    return None


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Write a plain state_dict (what bundles and `models.load_from_bundle` use), atomically."""
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)


def load_final_weights(model: torch.nn.Module, run_dir: Path, restore_best: bool) -> None:
    """Load the best epoch's weights (or, without them, the last checkpoint's) into `model`."""
    best = run_dir / BEST_MODEL
    if restore_best and best.exists():
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
        return
    ckpt = load_latest(run_dir)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])


def remove_stale_temporaries(run_dir: Path, names: tuple[str, ...] = ()) -> None:
    """Delete half-written temporaries (`.<name>.*.tmp`) left by a process killed while saving.

    Args:
        names: further file names the caller writes atomically in `run_dir`, besides the checkpoints.
    """
    prefixes = tuple(f".{n}." for n in (LAST, PREV, BEST_MODEL, *names)) + (".checkpoint_best_e",)
    for p in run_dir.glob(".*.tmp"):
        if p.name.startswith(prefixes):
            p.unlink(missing_ok=True)
