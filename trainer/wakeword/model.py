"""Wake-word heads with openWakeWord's input contract: float32 [N, 16, 96] → probability [N, 1].

The sigmoid is inside `forward` because openWakeWord treats a model's output as a score in [0, 1];
training uses `logits` with BCEWithLogits for numerical stability. Both heads keep the time axis to the
end (no global pooling), so they learn that the phrase ends in the last frames of the window.
"""

from __future__ import annotations

import torch
from torch import nn

WINDOW, EMB_DIM = 16, 96


class WakewordCNN(nn.Module):
    """Three 1-D convolutions over time, then a linear layer over the flattened map."""

    def __init__(self, width: int = 64, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(EMB_DIM, width, 3), nn.ReLU(),
            nn.Conv1d(width, width, 3), nn.ReLU(),
            nn.Conv1d(width, width, 3), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(width * (WINDOW - 6), 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.transpose(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


class WakewordDNN(nn.Module):
    """openWakeWord's own head shape: flatten, two LayerNorm+ReLU blocks, one output."""

    def __init__(self, width: int = 128, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(WINDOW * EMB_DIM, width), nn.LayerNorm(width), nn.ReLU(),
            nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def build_cnn(width: int = 64, dropout: float = 0.2) -> WakewordCNN:
    """The default head (ARCHS row `wakeword_cnn`)."""
    return WakewordCNN(width, dropout)


def build_dnn(width: int = 128, dropout: float = 0.2) -> WakewordDNN:
    """The DNN option (ARCHS row `wakeword_dnn`)."""
    return WakewordDNN(width, dropout)
