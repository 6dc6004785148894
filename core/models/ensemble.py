"""An ensemble: several trained networks registered, stored and served as one model (#13).

Its output is the mean of its members' *probabilities*. ``forward`` returns the log of that mean, so the
softmax every inference path applies (core.models.inference.probabilities) gives the mean back: one code
path for single networks and ensembles, and ``argmax`` / thresholds read the same numbers.

Each member keeps its own input size. The ensemble takes the film once, at :func:`ensemble_input_size`
(the members' common size, else the 224-px reference form every film is brought to first), and gives each
member exactly what the one preprocessing path (:func:`core.films.tensor.film_to_tensor`) would give it at
its own size: the reference form, resized by Pillow, rounded to 8 bits. ``film_to_tensor`` of a reference
form film leaves its pixels untouched, so a member reads the same values it was trained and validated on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.films.film import Film
from core.films.reference import IN_REFERENCE_FORM, REFERENCE_SIZE
from core.films.tensor import as_float, film_to_tensor
from core.models.build import build_model, cam_cells, cam_layer
from core.models.catalog import ENSEMBLE

__all__ = ["ENSEMBLE", "Ensemble", "MemberSpec", "build_ensemble", "ensemble_input_size", "explained_layers"]


@dataclass(frozen=True)
class MemberSpec:
    arch: str
    image_size: int


def ensemble_input_size(sizes: list[int]) -> int:
    """The size the ensemble takes the film at: the members' own when they share one (no resizing at all),
    else the reference form's, from which film_to_tensor derives every other size."""
    return sizes[0] if len(set(sizes)) == 1 else REFERENCE_SIZE


class Ensemble(nn.Module):
    """Member networks (``members.K.*`` in the state dict) whose probabilities are averaged."""

    def __init__(self, members: list[nn.Module], specs: list[MemberSpec]):
        super().__init__()
        if len(members) < 2 or len(members) != len(specs):
            raise ValueError("an ensemble needs at least two members, each with its architecture and input size")
        self.members = nn.ModuleList(members)
        self.specs = tuple(specs)
        self.image_size = ensemble_input_size([spec.image_size for spec in specs])

    def member_input(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        """``batch`` (N x 1 x S x S in [0, 1] at the ensemble's size) as member ``index`` reads it."""
        size = self.specs[index].image_size
        if batch.shape[-1] == size:
            return batch
        if batch.shape[-2:] != (REFERENCE_SIZE, REFERENCE_SIZE):
            raise ValueError(f"an ensemble with members of different sizes takes {REFERENCE_SIZE}-px input, "
                             f"got {tuple(batch.shape)}")
        resized = [film_to_tensor(_reference_film(sample[0]), size) for sample in batch.detach().cpu()]
        return as_float(torch.stack(resized)).to(batch.device)

    def member_probabilities(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return [torch.softmax(member(self.member_input(batch, i)).float(), dim=1)
                for i, member in enumerate(self.members)]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Log of the mean member probability, N x C (softmax of it is that mean)."""
        mean = torch.stack(self.member_probabilities(batch)).mean(dim=0)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))


def _reference_film(pixels: torch.Tensor) -> Film:
    """A reference-form film holding ``pixels`` (224 x 224, 8-bit values): its model pixels are these."""
    array = np.ascontiguousarray(pixels.numpy(), dtype=np.float32)
    return Film(pixels=array, source_format=IN_REFERENCE_FORM[1], original_size=(REFERENCE_SIZE, REFERENCE_SIZE),
                bit_depth=8)


def build_ensemble(specs: list[MemberSpec], num_classes: int) -> Ensemble:
    """Untrained members of the given architectures and sizes (a checkpoint's weights are loaded into them)."""
    members = [build_model(spec.arch, num_classes, spec.image_size, pretrained=False)[0] for spec in specs]
    return Ensemble(members, specs)


def explained_layers(arch: str, model: nn.Module,
                     image_size: int) -> list[tuple[nn.Module, nn.Module, int, tuple]]:
    """(network, Grad-CAM layer, input size, its cells: core.models.build.cam_cells) per network
    Grad-CAM reads: the model itself, or every member of an ensemble. Empty when any of them has no convolutional
    layer: a map of only some members would not show where the ensemble looked."""
    if isinstance(model, Ensemble):
        parts = [(member, cam_layer(spec.arch, member), spec.image_size, cam_cells(spec.arch, spec.image_size))
                 for member, spec in zip(model.members, model.specs)]
    else:
        parts = [(model, cam_layer(arch, model), image_size, cam_cells(arch, image_size))]
    return parts if all(layer is not None for _, layer, _, _ in parts) else []
