"""The seed reports' small models: logistic regression, an MLP and the 5-layer CNN; and the two pixel models on
the film cropped to the body (:class:`BodyCrop`), which travel better to films framed otherwise."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Centre(nn.Module):
    """Maps the [0, 1] pixel contract to roughly zero mean, unit variance for models trained from scratch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.25


class BodyCrop(nn.Module):
    """N x 1 x S x S in [0, 1] -> N x 1 x G x G: each film cut to the box of rows and columns where the body is,
    then averaged down to a G-pixel grid. A pixel model reads a fixed template, so where the chest sits in the
    frame, and how much of the frame it fills, is what moves it most from one batch to another (the tighter
    framing of issue 13); cropping to the body first takes most of that away.

    The body: pixels brighter than :data:`LEVEL` after a 7-pixel box blur (at 224 px; scaled with S), soft
    tissue and bone against the dark air around the patient. The box runs from the first to the last column (row)
    where at least :data:`SHARE` of the pixels are body; where it would span under a quarter of the frame, that
    way is kept whole. Both constants were set once, by eye on training films, and never tuned on any check. No
    parameters: the crop is part of the model's forward, so training, evaluation and the app share it.
    """

    LEVEL = 0.25
    SHARE = 0.3

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        blur = max(3, round(7 * size / 224) // 2 * 2 + 1)  # odd, 7 at 224 px
        body = (F.avg_pool2d(x, blur, stride=1, padding=blur // 2) > self.LEVEL).to(x.dtype)
        columns, rows = body.mean(dim=2)[:, 0] > self.SHARE, body.mean(dim=3)[:, 0] > self.SHARE  # N x S each
        crops = [F.interpolate(x[i:i + 1, :, top:bottom, left:right], size=(self.grid, self.grid), mode="area")
                 for i, ((left, right), (top, bottom)) in enumerate(zip(_extent(columns), _extent(rows)))]
        return torch.cat(crops) if crops else x.new_zeros((0, x.shape[1], self.grid, self.grid))


def _extent(inside: torch.Tensor) -> list[tuple[int, int]]:
    """Per row of an N x S mask: (first, last + 1) of its True entries, or the whole (0, S) when they span
    less than a quarter of S."""
    size = inside.shape[1]
    positions = torch.arange(size, device=inside.device).expand_as(inside)
    first = torch.where(inside, positions, size).min(dim=1).values
    last = torch.where(inside, positions, -1).max(dim=1).values
    spans = []
    for start, end in zip(first.tolist(), last.tolist()):
        spans.append((start, end + 1) if end + 1 - start >= size // 4 else (0, size))
    return spans


def _pixels(image_size: int, body_grid: int | None) -> tuple[list[nn.Module], int]:
    """The layers before a pixel model's first linear layer, and its input length: the film as it comes, or
    cropped to the body on a ``body_grid``-pixel grid."""
    if body_grid is None:
        return [_Centre(), nn.Flatten()], image_size * image_size
    return [BodyCrop(body_grid), _Centre(), nn.Flatten()], body_grid * body_grid


class LogisticRegression(nn.Module):
    def __init__(self, num_classes: int, image_size: int, body_grid: int | None = None):
        super().__init__()
        layers, inputs = _pixels(image_size, body_grid)
        self.net = nn.Sequential(*layers, nn.Linear(inputs, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, num_classes: int, image_size: int, hidden: tuple[int, int] = (512, 128), dropout: float = 0.3,
                 body_grid: int | None = None):
        super().__init__()
        layers, inputs = _pixels(image_size, body_grid)
        self.net = nn.Sequential(
            *layers,
            nn.Linear(inputs, hidden[0]), nn.ReLU(), nn.Dropout(dropout),
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
