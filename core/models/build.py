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


def cam_cells(arch: str, size: int) -> tuple[int, float, float] | None:
    """(cells a side, stride, first centre) of ``arch``'s Grad-CAM layer at ``size`` px: cell j looks at the input
    around pixel stride·j + first centre; None for pixel models. pytorch_grad_cam draws cell j at the centre of the
    j-th of ``cells`` equal blocks instead, which a ResNet's symmetric padding puts half a block down-right of where
    it looks and an EfficientNet-Lite's TensorFlow "SAME" padding half a block up-left at a multiple of 32 px (and
    elsewhere by its layers' parities), so maps were drawn 15.5 px off at 224 px (a Grad-CAM review); the explainer
    moves them back (core.serving.explain.realigned; tests/test_cam_alignment.py measures each architecture)."""
    if arch == "resnet18":  # every stride-2 step centres output i on input 2i
        return -(-size // 32), 32.0, 0.0
    if arch.startswith("efficientnet_"):  # "SAME" pads one more at the end of an even input: centre 2i + 1 there
        first, length = 0, size
        for step in range(5):
            first += (length % 2 == 0) * 2 ** step
            length = -(-length // 2)
        return -(-size // 32), 32.0, float(first)
    if arch == "cnn5":  # three 2 x 2 poolings, each cell over its own block
        return size // 8, 8.0, 3.5
    return None


def cam_layer(arch: str, model: nn.Module) -> nn.Module | None:
    """The convolutional layer Grad-CAM reads, or None for pixel models (logistic regression, MLP)."""
    find = _CAM_LAYERS.get(arch)
    return find(model) if find else None
