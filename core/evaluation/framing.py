"""A shift check computed from films we hold: the same films with the chest framed tighter (issue 13).

On the official Kermany test (another batch of the same hospital, measured by the project) every shipped model
kept or raised its sensitivity while its specificity fell from 91-100 % to 42-74 %, and no split of the training
copy reproduced that (docs/measurements.md). Re-rendering films in ways another site's acquisition could differ
did: photometric changes (gamma 0.7 / 1.4, brightness +-0.08, contrast 0.8 / 1.25, blur, sharpening, noise,
percentile levels) moved no model's validation figures by more than a few points, while magnifying each film
15 % about its centre, as if the chest were framed tighter, moved all six shipped models the hidden test's way:
sensitivity up, specificity down (the logistic regression to AUC 0.91 and 53 % specificity, where the hidden test
gave 0.885 and 41.5 %; the CNNs far less than there). So this check is a floor on the loss, not a forecast.

The films are the model's own input (uint8 N x 1 x S x S, from ``film_to_tensor``), magnified by bilinear
resampling and rounded back to 8 bits; nothing here chooses a threshold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TIGHTER_FRAMING = "tighter-framing"  # the key of its report in ModelRecord.other_reports
FRAMING_ZOOM = 1.15  # each film shown this much larger about its centre; its outer edge falls outside
_CHUNK = 256  # films resampled at a time: a float copy of at most 256 x 224 x 224 x 4 bytes (51 MB)


def framed_tighter(films_uint8: torch.Tensor, zoom: float = FRAMING_ZOOM) -> torch.Tensor:
    """N x 1 x S x S uint8 -> the same films ``zoom`` times larger about their centre, same size and dtype, on the
    same device: the film as a tighter framing of the same chest would show it."""
    if films_uint8.dtype != torch.uint8 or films_uint8.ndim != 4 or films_uint8.shape[1] != 1:
        raise ValueError(f"expected N x 1 x S x S uint8 films, got {films_uint8.dtype} {tuple(films_uint8.shape)}")
    if not zoom >= 1.0:
        raise ValueError(f"zoom must be at least 1 (a tighter framing), got {zoom}")
    return magnified(films_uint8, zoom, zoom)


def magnified(films_uint8: torch.Tensor, across: float, down: float) -> torch.Tensor:
    """The films shown ``across`` times wider and ``down`` times taller about their centre (below 1: smaller, the
    edge repeated where the film runs out), same size and dtype. ``bench/shifts.py`` tries other framings with it."""
    parts = [_zoom(films_uint8[i : i + _CHUNK], across, down) for i in range(0, len(films_uint8), _CHUNK)]
    return torch.cat(parts) if parts else films_uint8.clone()


def _zoom(films_uint8: torch.Tensor, across: float, down: float) -> torch.Tensor:
    x = films_uint8.to(torch.float32) / 255.0
    theta = torch.tensor([[1.0 / across, 0.0, 0.0], [0.0, 1.0 / down, 0.0]], device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (out * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def framing_description(zoom: float = FRAMING_ZOOM) -> str:
    return (f"each shown {(zoom - 1) * 100:.0f} % larger about its centre, as if the chest were framed tighter "
            f"({FRAMING_PROMISE})")


# Stored in every report's split. Not "every shipped model": only the pneumonia models were measured on that test,
# and the COVID models' figures do not move when framed tighter (found by a review).
FRAMING_PROMISE = ("synthetic: the one shift found to move every pneumonia model measured on the official Kermany "
                   "test the way that test did")
