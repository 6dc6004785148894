"""Grad-CAM explanations: where the model looked for a chosen class, as a heat map and an overlay.

The CAM object registers hooks on the model; it is always released by its context manager. Callers that
share a model between threads must hold that model's lock (see :class:`core.serving.predict.Predictor`).

pytorch_grad_cam is imported on first use, not with this module: it pulls in torchvision, torch._dynamo and
scikit-learn (seconds of start-up), and a page must be able to list the methods before any of that.
Call :func:`load_cam_library` ahead of time (outside any model lock) to pay that cost in the background.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch
    from torch import nn

# Method name -> its class in pytorch_grad_cam (looked up when a map is computed).
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}
# Methods whose map does not depend on the class asked for: Eigen-CAM draws the first principal component of
# the layer's activations, the same for every class (pytorch_grad_cam never reads its targets).
CLASS_FREE_METHODS = frozenset({"eigencam"})


# What importing pytorch_grad_cam costs, as separate imports from cheapest to dearest (measured with
# ``python -X importtime``: OpenCV 0.2 s, SciPy's ndimage 0.3 s, matplotlib 0.6 s, scikit-learn 1.3 s,
# torch._dynamo 1.9 s via torchvision.ops, the rest of torchvision 0.3 s on this 2-core CPU under load).
CAM_IMPORT_STEPS = ("cv2", "scipy.ndimage", "matplotlib.pyplot", "sklearn.decomposition", "torch._dynamo",
                    "torchvision.transforms", "pytorch_grad_cam")


def load_cam_library(between_steps: Callable[[], object] | None = None) -> ModuleType:
    """pytorch_grad_cam, imported once per process (the first call takes seconds; later calls are free).

    A background warm-up passes ``between_steps`` (e.g. "wait while a film is being triaged"): the import then
    runs as :data:`CAM_IMPORT_STEPS` with that call before each, so foreground work never competes for the
    interpreter with more than one step of it."""
    if between_steps is not None and "pytorch_grad_cam" not in sys.modules:
        for step in CAM_IMPORT_STEPS:
            between_steps()
            importlib.import_module(step)
    import pytorch_grad_cam

    return pytorch_grad_cam


def heat_map(model: nn.Module, layer: nn.Module, batch: torch.Tensor, class_index: int,
             method: str = "gradcam") -> np.ndarray:
    """1 x 1 x S x S input -> S x S float heat map in [0, 1] for ``class_index``."""
    return class_evidence(model, layer, batch, class_index, method)[0]


def class_evidence(model: nn.Module, layer: nn.Module, batch: torch.Tensor, class_index: int,
                   method: str = "gradcam") -> tuple[np.ndarray, float]:
    """(the heat map of :func:`heat_map`, the network's probability for ``class_index``), both from one forward
    pass: an ensemble weighs its members' maps by the second."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown explanation method '{method}'; choose one of {', '.join(CAM_METHODS)}")
    cam_class = _eigen_cam_oriented() if method == "eigencam" else getattr(load_cam_library(), CAM_METHODS[method])
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import torch

    from core.models.device import FP32, inference_kernels, model_device
    from core.models.inference import out_of_memory

    # fp32 kernels as prediction's (TF32 convolutions on a GPU otherwise): the probability weighs ensembles. On the
    # model's device: the batch arrives on the CPU and the library moves it (a review of the day's change)
    maps = None  # the library's context manager swallows an IndexError (printing it): then there is no map
    try:
        with inference_kernels(model_device(model), FP32), cam_class(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(class_index)])
            probability = float(torch.softmax(cam.outputs.detach().float(), dim=1)[0, class_index])
    except torch.OutOfMemoryError as exc:
        raise out_of_memory("drawing the Grad-CAM map", len(batch), model_device(model)) from exc  # not the batch's
    finally:  # the library back-propagates into the shared model: its .grad was a second copy of every weight
        model.zero_grad(set_to_none=True)
    if maps is None:
        raise ValueError(f"the model has no output for class {class_index}, so there is no map of it")
    heat = np.nan_to_num(np.asarray(maps[0], dtype=np.float32))
    return np.clip(heat, 0.0, 1.0), probability


_ORIENTED: list[type] = []  # the Eigen-CAM class below, made once the library is imported


def _eigen_cam_oriented() -> type:
    """pytorch_grad_cam's Eigen-CAM with its sign fixed: the first principal component of the activations has no
    sign of its own (SVD gives either), and the library keeps the positive half, so its top colour was the weakest
    activations as often as the strongest (a review: for the 5-layer CNN on 10 of 12 films). Here each map points
    the way the layer's summed activations rise: yellow is where the layer responds most, as the caption says."""
    if not _ORIENTED:
        from pytorch_grad_cam import EigenCAM
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

        class OrientedEigenCAM(EigenCAM):
            def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
                return oriented(get_2d_projection(activations), activations)

        _ORIENTED.append(OrientedEigenCAM)
    return _ORIENTED[0]


def oriented(projections: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Each of ``projections`` (N x H x W) turned, if need be, to rise where ``activations`` (N x C x H x W) summed
    over their channels rise (positively correlated); a flat one is left as it is."""
    strength = np.nan_to_num(activations).sum(axis=1)
    for projection, strong in zip(projections, strength):
        p, s = projection - projection.mean(), strong - strong.mean()
        if float((p * s).sum()) < 0:
            projection *= -1
    return projections


def realigned(heat: np.ndarray, cells: int, stride: float, first: float) -> np.ndarray:
    """``heat`` (S x S, as pytorch_grad_cam upsamples a layer of ``cells`` a side: cell j drawn at the centre of
    the j-th of ``cells`` equal blocks) redrawn with cell j over input pixel stride·j + first, where it looks
    (core.models.build.cam_cells); bilinear, its edge repeated; ``heat`` itself where the two agree."""
    size = heat.shape[0]
    block = size / cells
    source = (np.arange(size, dtype=np.float64) - first) / stride * block + block / 2 - 0.5
    if np.allclose(source, np.arange(size), atol=1e-6):
        return heat
    low = np.floor(source)
    weight = (source - low).astype(np.float32)
    below = np.clip(low.astype(int), 0, size - 1)
    above = np.clip(low.astype(int) + 1, 0, size - 1)
    rows = heat[below] * (1 - weight)[:, None] + heat[above] * weight[:, None]
    return (rows[:, below] * (1 - weight)[None, :] + rows[:, above] * weight[None, :]).astype(np.float32)


def mean_heat_map(maps: list[np.ndarray], size: int, weights: list[float] | None = None) -> np.ndarray:
    """Heat maps of several networks (an ensemble's members, each at its own input size) -> their mean on one
    ``size`` x ``size`` grid, weighted by ``weights`` when given (equal when they sum to nothing); one map
    already at that size comes back unchanged.

    An ensemble's probability is the mean of its members', so a member's share of it is its own probability
    for the class: each map is scaled to its own peak, and unweighted a member that gives the class 1 % drew as
    much as one that gives it 99 % (found by a review). The mean is scaled to its own peak in turn."""
    resized = [heat if heat.shape == (size, size) else
               np.asarray(Image.fromarray(heat, mode="F").resize((size, size), Image.Resampling.BILINEAR))
               for heat in maps]
    share = np.ones(len(resized)) if weights is None else np.nan_to_num(np.clip(weights, 0.0, None))
    share = share / share.sum() if share.sum() > 0 else np.full(len(resized), 1.0 / len(resized))
    mean = np.clip(np.tensordot(share.astype(np.float32), np.stack(resized).astype(np.float32), axes=1), 0.0, 1.0)
    peak = float(mean.max()) if mean.size else 0.0
    # scaled to its own peak, as each member's map is: members that put their peaks in different places left the
    # mean's peak below the top colour under a caption saying it is the most evidence in the film (a Grad-CAM review)
    return (mean / peak if peak > 0 else mean).astype(np.float32)


FULL_TINT_AT = 0.5  # share of the film's peak from which its colour is drawn at the chosen opacity


# The colour scale, from no evidence to the film's most: viridis (matplotlib's), at 13 stops (red, green, blue).
# Its lightness only rises and it reads without telling red from green; the blue-to-red scale it replaces did
# neither (an accessibility review).
COLOUR_STOPS = ((0.2670, 0.0049, 0.3294), (0.2832, 0.1208, 0.4406), (0.2680, 0.2235, 0.5120),
                (0.2297, 0.3224, 0.5457), (0.1906, 0.4071, 0.5561), (0.1577, 0.4859, 0.5580),
                (0.1276, 0.5669, 0.5506), (0.1263, 0.6441, 0.5253), (0.2080, 0.7187, 0.4729),
                (0.3692, 0.7889, 0.3829), (0.5655, 0.8424, 0.2629), (0.7833, 0.8793, 0.1254),
                (0.9932, 0.9062, 0.1439))


def colour_scale(heat: np.ndarray) -> np.ndarray:
    """Values in 0..1 -> their colours on ``COLOUR_STOPS``, as ... x 3 floats in 0..1."""
    stops = np.linspace(0.0, 1.0, len(COLOUR_STOPS))
    return np.stack([np.interp(heat, stops, channel) for channel in zip(*COLOUR_STOPS)], axis=-1).astype(np.float32)


def colour_bar(width: int = 256, height: int = 12) -> np.ndarray:
    """The colour scale drawn left (none) to right (the film's most) over mid grey, fading in as :func:`overlay`
    draws it (a re-read: a solid bar's purple left end showed a colour where the map shows none), at full strength;
    a ``height`` x ``width`` x 3 uint8 image."""
    heat = np.linspace(0.0, 1.0, width, dtype=np.float32)
    weight = np.clip(heat / FULL_TINT_AT, 0.0, 1.0)[:, None]
    row = np.round(255.0 * ((1.0 - weight) * 0.5 + weight * colour_scale(heat))).astype(np.uint8)
    return np.repeat(row[None], height, axis=0)


def overlay(film_pixels: np.ndarray, heat: np.ndarray, opacity: float = 0.4) -> np.ndarray:
    """Heat map resized onto the film -> H x W x 3 uint8 RGB image.

    Each point's colour is laid over the film at ``opacity`` from ``FULL_TINT_AT`` of the peak up, fading to none
    where the map is zero: the colour scale's blue laid over the whole film greyed every film and hid the parts the
    model did not use behind the colour of those it barely used (found by a review)."""
    height, width = film_pixels.shape
    resized = Image.fromarray(heat, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    heat_full = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    weight = float(np.clip(opacity, 0.0, 1.0)) * np.clip(heat_full / FULL_TINT_AT, 0.0, 1.0)[..., None]
    film = np.clip(film_pixels.astype(np.float32), 0.0, 1.0)[..., None]
    return np.round(255.0 * ((1.0 - weight) * film + weight * colour_scale(heat_full))).astype(np.uint8)
