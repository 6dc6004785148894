"""The seed reports' small models: logistic regression, an MLP and the 5-layer CNN."""
from __future__ import annotations

import torch
from torch import nn


class _Centre(nn.Module):
    """Maps the [0, 1] pixel contract to roughly zero mean, unit variance for models trained from scratch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.25


class LogisticRegression(nn.Module):
    def __init__(self, num_classes: int, image_size: int):
        super().__init__()
        self.net = nn.Sequential(_Centre(), nn.Flatten(), nn.Linear(image_size * image_size, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, num_classes: int, image_size: int, hidden: tuple[int, int] = (512, 128), dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            _Centre(), nn.Flatten(),
            nn.Linear(image_size * image_size, hidden[0]), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CNN5(nn.Module):
    """3 convolutional blocks + 2 fully connected layers, as in the 4-class report."""

    def __init__(self, num_classes: int, image_size: int, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        self.centre = _Centre()
        self.features = nn.Sequential(_conv_block(1, widths[0]), _conv_block(widths[0], widths[1]),
                                      _conv_block(widths[1], widths[2]))
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(widths[2] * 16, 128), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.centre(x)))
