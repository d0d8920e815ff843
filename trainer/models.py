"""One table of model architectures, so any tool can rebuild a bundle's PyTorch model.

A bundle records `extra["arch"] = {"name": ..., "kwargs": {...}}` and its weights as the file with
format `pytorch` and role `checkpoint` (a plain state_dict). `load_from_bundle` rebuilds the module from
that record; the exporter and evaluation use it. Each task adds its row below (module:function, imported
only when used, so this table is cheap to import).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.errors import UserError

if TYPE_CHECKING:
    import torch

    from edgekit.bundle import Bundle


@dataclass(frozen=True)
class Arch:
    """One architecture: where its builder lives and what it is for."""

    builder: str
    """`module:function` returning an nn.Module from keyword arguments."""
    task: str
    help: str


ARCHS: dict[str, Arch] = {
    "mobilenet_v2": Arch("edgekit.trainer.mobilenet:build", "image-classification", "MobileNetV2 (torchvision keys)"),
    "seq_lstm": Arch("edgekit.trainer.seq_models:build_lstm", "sequence-classification", "stacked LSTM"),
    "seq_gru": Arch("edgekit.trainer.seq_models:build_gru", "sequence-classification", "stacked GRU"),
    "seq_bilstm": Arch("edgekit.trainer.seq_models:build_bilstm", "sequence-classification", "bi-LSTM"),
    "seq_cnn1d": Arch("edgekit.trainer.seq_models:build_cnn1d", "sequence-classification", "1-D CNN"),
    "wakeword_cnn": Arch("edgekit.trainer.wakeword.model:build_cnn", "wakeword", "1-D CNN head, [1,16,96] → score"),
    "wakeword_dnn": Arch("edgekit.trainer.wakeword.model:build_dnn", "wakeword", "openWakeWord-style DNN head"),
}


def build(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build architecture `name` with `kwargs`."""
    if name not in ARCHS:
        raise UserError(f"Unknown architecture {name!r}; known: {', '.join(sorted(ARCHS))}.")
    module, func = ARCHS[name].builder.split(":")
    return getattr(importlib.import_module(module), func)(**kwargs)


def load_from_bundle(bundle: Bundle, map_location: str = "cpu") -> torch.nn.Module:
    """The bundle's trained PyTorch model, in eval mode."""
    import torch

    arch = bundle.manifest.extra.get("arch")
    if not arch:
        raise UserError(f"Bundle {bundle.path} does not record its architecture (extra.arch).")
    weights = [rel for rel, e in bundle.manifest.files.items() if e.format == "pytorch"]
    if not weights:
        raise UserError(f"Bundle {bundle.path} has no PyTorch weights to export from.")
    model = build(arch["name"], **arch.get("kwargs", {}))
    state = torch.load(bundle.path / weights[0], map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
