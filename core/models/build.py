"""Building a network by architecture name, and the layer Grad-CAM explains it at.

Every model takes the pixel contract of :mod:`core.films.tensor` (N x 1 x S x S in [0, 1]) and returns
logits N x C. Pretrained weights are only ever read from local files, never downloaded.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from core.models.catalog import BODY_GRID, architecture_info
from core.models.classic import CNN5, MLP, LogisticRegression
from core.models.device import run_layout
from core.models.efficientnet_lite import VARIANTS as LITE_VARIANTS
from core.models.pretrained import build_efficientnet_lite, build_resnet18

# build(num_classes, image_size, pretrained) -> (model, notes)
_BUILDERS: dict[str, Callable[[int, int, bool], tuple[nn.Module, list[str]]]] = {
    "logistic": lambda c, s, p: (LogisticRegression(c, s), []),
    "mlp": lambda c, s, p: (MLP(c, s), []),
    "logistic_body": lambda c, s, p: (LogisticRegression(c, s, body_grid=BODY_GRID), []),
    "mlp_body": lambda c, s, p: (MLP(c, s, body_grid=BODY_GRID), []),
    "cnn5": lambda c, s, p: (CNN5(c, s), []),
    "resnet18": build_resnet18,
    **{f"efficientnet_{v}": partial(build_efficientnet_lite, v) for v in LITE_VARIANTS},
}
_CAM_LAYERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "cnn5": lambda m: m.features[-1],
    "resnet18": lambda m: m.net.layer4[-1],
    **{f"efficientnet_{v}": lambda m: m.net.cam_layer() for v in LITE_VARIANTS},
}


def build_model(arch: str, num_classes: int, image_size: int, pretrained: bool = False) -> tuple[nn.Module, list[str]]:
    """Build an architecture; ``notes`` says, e.g., that ImageNet weights were missing."""
    info = architecture_info(arch)  # ValueError naming the known architectures
    model, notes = _BUILDERS[info.name](num_classes, image_size, pretrained and info.pretrainable)
    # Built in the layout it trains and runs in (core.models.device.run_layout): a checkpoint's weights are
    # copied into these tensors, so every loaded model computes in the same layout as at training.
    return model.to(memory_format=run_layout(model)), notes


# Where the Grad-CAM layer's cells look, against the centre of their block of input pixels (where pytorch_grad_cam's
# upsampling draws them), in half strides less half a pixel: a ResNet's symmetric padding centres them up-left,
# an EfficientNet-Lite's TensorFlow "SAME" padding down-right; the 5-layer CNN's pooling centres them on the block.
_CELL_CENTRES = {"resnet18": -1, **{f"efficientnet_{v}": 1 for v in LITE_VARIANTS}}


def cam_shift(arch: str, stride: float = 32.0) -> float:
    """Input pixels by which an upsampled Grad-CAM map of ``arch`` must move (both axes, down-right positive) to
    sit over what each cell looks at, its layer ``stride`` input pixels a cell (tests/test_cam_alignment.py
    measures it: a map 15.5 px off at 224 px was a Grad-CAM review's finding)."""
    return _CELL_CENTRES.get(arch, 0) * (stride - 1) / 2


def cam_layer(arch: str, model: nn.Module) -> nn.Module | None:
    """The convolutional layer Grad-CAM reads, or None for pixel models (logistic regression, MLP)."""
    find = _CAM_LAYERS.get(arch)
    return find(model) if find else None
