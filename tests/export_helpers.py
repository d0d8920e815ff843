"""Small real models and bundles for the exporter and Predictor tests.

The waste bundle is MobileNetV2 (the trainer's own module, Keras padding) with the shared ImageNet
backbone and a linear head trained here on frozen features of real waste-mini photos, at 96 px. The
wake-word head and the LSTM are tiny seeded modules registered in the architecture table by the tests
(`register_test_archs`), so the exporter rebuilds them from a bundle like any real model.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit import atomic
from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess
from edgekit.trainer import models

SIZE = 96
WASTE_PRE = Preprocess(color="RGB", resize=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0)
WASTE_ARCH = {"name": "mobilenet_v2", "kwargs": {"num_classes": 6, "width_mult": 1.0, "padding": "keras"}}


def wake_head(hidden: int = 32, seed: int = 0) -> nn.Module:
    """openWakeWord's head contract, [N, 16, 96] → score [N, 1]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 96, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())


class SeqLSTM(nn.Module):
    """LSTM over [N, T, F], logits from the last step."""

    def __init__(self, n_features: int = 6, n_classes: int = 3, hidden: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = nn.LSTM(n_features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def seq_lstm(**kwargs) -> nn.Module:
    return SeqLSTM(**kwargs)


def tiny_cnn(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """A small NCHW image classifier (logits), for Predictor tests."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def register_test_archs(monkeypatch) -> None:
    for name, builder, task in (("test_wake_head", "export_helpers:wake_head", "wakeword"),
                                ("test_seq_lstm", "export_helpers:seq_lstm", "sequence-classification"),
                                ("test_tiny_cnn", "export_helpers:tiny_cnn", "image-classification")):
        monkeypatch.setitem(models.ARCHS, name, models.Arch(builder, task, "test model"))


def _state_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def waste_split(folder: Path, val_per_class: int) -> tuple[list[str], dict[str, list[list]]]:
    """Labels and a deterministic split of waste-mini: the first `val_per_class` photos of a class are val."""
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir())
    split: dict[str, list[list]] = {"train": [], "val": []}
    for i, c in enumerate(labels):
        files = sorted(p.name for p in (folder / c).iterdir() if p.suffix == ".jpg")
        for j, f in enumerate(files):
            split["val" if j < val_per_class else "train"].append([f"{c}/{f}", i])
    return labels, split


def train_waste_model(folder: Path, weights: Path, split: dict[str, list[list]], steps: int = 300) -> nn.Module:
    """ImageNet MobileNetV2 with a linear head trained on frozen features of the train split."""
    from edgekit.edge.preprocess import preprocess_images
    from edgekit.trainer.mobilenet import load_backbone, read_state_dict

    torch.manual_seed(0)
    model = models.build(WASTE_ARCH["name"], **WASTE_ARCH["kwargs"]).eval()
    load_backbone(model, read_state_dict(weights))
    x = torch.from_numpy(preprocess_images([folder / rel for rel, _ in split["train"]], WASTE_PRE))
    y = torch.tensor([label for _, label in split["train"]])
    with torch.inference_mode():
        feats = torch.flatten(nn.functional.adaptive_avg_pool2d(model.features(x), 1), 1)
    head = model.classifier[1]
    opt = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(head(feats.clone()), y).backward()
        opt.step()
    return model.eval()


def write_waste_bundle(root: Path, model: nn.Module, labels: list[str], split: dict, data_root: Path,
                       name: str = "waste") -> Bundle:
    w = BundleWriter(name, root=root)
    atomic.write_bytes(w.add("model.pt", "pytorch", "checkpoint"), _state_bytes(model))
    atomic.write_json(w.add("split.json", "json", "data"), {"root": str(data_root), **split})
    return w.commit(task="image-classification", labels=labels,
                    input=InputSpec(shape=[1, 3, SIZE, SIZE], layout="NCHW", preprocess=WASTE_PRE),
                    extra={"arch": WASTE_ARCH, "output": "logits"})


def write_array_bundle(root: Path, name: str, task: str, model: nn.Module, arch: dict, labels: list[str],
                       shape: list[int], arrays: dict[str, np.ndarray], output: str,
                       thresholds: dict | None = None) -> Bundle:
    """A wake-word or sequence bundle with `eval_data.npz`."""
    w = BundleWriter(name, root=root)
    atomic.write_bytes(w.add("model.pt", "pytorch", "checkpoint"), _state_bytes(model))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(w.add("eval_data.npz", "npz", "data"), buf.getvalue())
    return w.commit(task=task, labels=labels, input=InputSpec(shape=shape, layout="NTF"),
                    thresholds=thresholds or {}, extra={"arch": arch, "output": output})


def constant_images(folder: Path, labels: list[str], per_class: int, value: int = 128) -> list[list]:
    """Write uniform grey JPEGs (useless calibration data); returns their split entries."""
    from PIL import Image

    items = []
    for i, c in enumerate(labels):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.new("RGB", (64, 64), (value, value, value)).save(folder / c / f"grey{j}.jpg")
            items.append([str(folder / c / f"grey{j}.jpg"), i])
    return items


def read_split(bundle: Bundle) -> dict:
    return json.loads((bundle.path / "split.json").read_text())
