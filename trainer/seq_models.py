"""Sequence classifiers over windows shaped [batch, time, features] (layout NTF); they output logits.

The seed's model is the default: LSTM 128 → LSTM 64 → Dense 32 → softmax, dropout 0.3 after each
recurrent layer and 0.2 after the dense layer. Softmax is left to the loss and to the device
(`extra["output"] = "logits"`), which keeps training numerically stable and int8 export simple.
Each `build_*` function is a row in `edgekit.trainer.models.ARCHS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _Head(nn.Module):
    """Dense(relu) → dropout → Linear to the classes."""

    def __init__(self, n_in: int, dense: int, n_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        if dense > 0:
            layers += [nn.Linear(n_in, dense), nn.ReLU(), nn.Dropout(dropout)]
            n_in = dense
        layers.append(nn.Linear(n_in, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class RecurrentClassifier(nn.Module):
    """Stacked recurrent layers (one per entry of `units`); the last time step (`pool="last"`) or the
    mean over all steps (`pool="mean"`) feeds the head.

    Layers are separate modules because their widths differ (128 → 64), which one multi-layer
    nn.LSTM cannot express.
    """

    def __init__(self, n_features: int, n_classes: int, cell: str = "lstm", units: Sequence[int] = (128, 64),
                 dense: int = 32, dropout: float = 0.3, dense_dropout: float = 0.2,
                 bidirectional: bool = False, pool: str = "last"):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        dirs = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        n_in = n_features
        for u in units:
            self.layers.append(rnn(n_in, u, batch_first=True, bidirectional=bidirectional))
            n_in = u * dirs
        self.drop = nn.Dropout(dropout)
        self.head = _Head(n_in, dense, n_classes, dense_dropout)
        self.bidirectional = bidirectional
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', not {pool!r}")
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h, _ = layer(h)
            h = self.drop(h)
        if self.pool == "mean":  # every step votes: less tied to where in the gait cycle the window ends
            return self.head(h.mean(dim=1))
        if self.bidirectional:
            # forward direction ends at the last step, backward direction at the first
            half = h.shape[-1] // 2
            last = torch.cat([h[:, -1, :half], h[:, 0, half:]], dim=-1)
        else:
            last = h[:, -1]
        return self.head(last)


class ConvClassifier(nn.Module):
    """1-D convolutions over time (one block per entry of `units`), global average pooling, head."""

    def __init__(self, n_features: int, n_classes: int, units: Sequence[int] = (64, 64), kernel: int = 5,
                 dense: int = 32, dropout: float = 0.3, dense_dropout: float = 0.2):
        super().__init__()
        blocks: list[nn.Module] = []
        n_in = n_features
        for u in units:
            blocks += [nn.Conv1d(n_in, u, kernel, padding=kernel // 2), nn.BatchNorm1d(u), nn.ReLU(),
                       nn.MaxPool1d(2), nn.Dropout(dropout)]
            n_in = u
        self.body = nn.Sequential(*blocks)
        self.head = _Head(n_in, dense, n_classes, dense_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x.transpose(1, 2))  # NTF → NCT for Conv1d
        return self.head(h.mean(dim=-1))


def build_lstm(n_features: int, n_classes: int, units: Sequence[int] = (128, 64), dense: int = 32,
               dropout: float = 0.3, dense_dropout: float = 0.2, pool: str = "last") -> nn.Module:
    """The seed's LSTM classifier (`pool="mean"` averages the last layer over time instead)."""
    return RecurrentClassifier(n_features, n_classes, "lstm", units, dense, dropout, dense_dropout, pool=pool)


def build_gru(n_features: int, n_classes: int, units: Sequence[int] = (128, 64), dense: int = 32,
              dropout: float = 0.3, dense_dropout: float = 0.2, pool: str = "last") -> nn.Module:
    """GRU layers instead of LSTM: fewer parameters, often as accurate."""
    return RecurrentClassifier(n_features, n_classes, "gru", units, dense, dropout, dense_dropout, pool=pool)


def build_bilstm(n_features: int, n_classes: int, units: Sequence[int] = (128, 64), dense: int = 32,
                 dropout: float = 0.3, dense_dropout: float = 0.2, pool: str = "last") -> nn.Module:
    """Bidirectional LSTM layers (each direction has `units` cells)."""
    return RecurrentClassifier(n_features, n_classes, "lstm", units, dense, dropout, dense_dropout,
                               bidirectional=True, pool=pool)


def build_cnn1d(n_features: int, n_classes: int, units: Sequence[int] = (64, 64), dense: int = 32,
                dropout: float = 0.3, dense_dropout: float = 0.2, kernel: int = 5) -> nn.Module:
    """1-D CNN: fastest to train and run on a Pi."""
    return ConvClassifier(n_features, n_classes, units, kernel, dense, dropout, dense_dropout)
