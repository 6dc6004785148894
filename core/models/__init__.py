"""Architecture registry: a name -> how to build it, its input size and its Grad-CAM target layer.

Every model takes the pixel contract of :mod:`core.preprocess` (N x 1 x S x S in [0, 1]) and returns
logits N x C. Pretrained weights are only ever read from local files, never downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from core.models.classic import CNN5, MLP, LogisticRegression
from core.models.pretrained import build_efficientnet_lite0, build_resnet18


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    default_image_size: int
    build: Callable[..., nn.Module]  # build(num_classes, image_size, pretrained) -> (model, notes)
    cam_layer: Callable[[nn.Module], nn.Module] | None
    pretrainable: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "logistic", "Logistic regression on pixels", 64,
            lambda c, s, p: (LogisticRegression(c, s), []), None,
        ),
        Architecture(
            "mlp", "Multi-layer perceptron on pixels", 64,
            lambda c, s, p: (MLP(c, s), []), None,
        ),
        Architecture(
            "cnn5", "5-layer CNN (3 conv blocks + 2 fully connected)", 128,
            lambda c, s, p: (CNN5(c, s), []), lambda m: m.features[-1],
        ),
        Architecture(
            "resnet18", "ResNet-18 (torchvision)", 224,
            build_resnet18, lambda m: m.net.layer4[-1], pretrainable=True,
        ),
        Architecture(
            "efficientnet_lite0", "EfficientNet-Lite0", 224,
            build_efficientnet_lite0, lambda m: m.net.cam_layer(), pretrainable=True,
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(ARCHITECTURES)}") from None


def build_model(arch: str, num_classes: int, image_size: int, pretrained: bool = False) -> tuple[nn.Module, list[str]]:
    """Build an architecture; ``notes`` says, e.g., that ImageNet weights were missing."""
    return get_architecture(arch).build(num_classes, image_size, pretrained)
