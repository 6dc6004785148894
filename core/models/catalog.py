"""The architectures the product knows, described without torch: name, title, default input size, whether
ImageNet weights can start it and whether Grad-CAM can explain it. Pages and records read this before torch
loads; :mod:`core.models.build` turns a name into a network."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureInfo:
    name: str
    title: str
    default_image_size: int
    pretrainable: bool = False
    explainable: bool = True  # has a convolutional layer for Grad-CAM


BODY_GRID = 64  # the pixel models on the body read it on this grid, whatever their input size (core.models.classic)

CATALOG: dict[str, ArchitectureInfo] = {
    info.name: info
    for info in (
        ArchitectureInfo("logistic", "Logistic regression on pixels", 64, explainable=False),
        ArchitectureInfo("mlp", "Multi-layer perceptron on pixels", 64, explainable=False),
        ArchitectureInfo("logistic_body", "Logistic regression on pixels, film cropped to the body", 224,
                         explainable=False),
        ArchitectureInfo("mlp_body", "Multi-layer perceptron on pixels, film cropped to the body", 224,
                         explainable=False),
        ArchitectureInfo("cnn5", "5-layer CNN (3 conv blocks + 2 fully connected)", 128),
        ArchitectureInfo("resnet18", "ResNet-18 (torchvision)", 224, pretrainable=True),
        ArchitectureInfo("efficientnet_lite0", "EfficientNet-Lite0", 224, pretrainable=True),
        # Lite1 and Lite2 default to the resolutions of their ImageNet training (240 and 260 px).
        ArchitectureInfo("efficientnet_lite1", "EfficientNet-Lite1", 240, pretrainable=True),
        ArchitectureInfo("efficientnet_lite2", "EfficientNet-Lite2", 260, pretrainable=True),
    )
}


# A registered model whose ``members`` are networks of the catalog (core.models.ensemble): listed, compared
# and served as one model, never trained as such, so it is not an entry of CATALOG.
ENSEMBLE = "ensemble"


def architecture_info(name: str) -> ArchitectureInfo:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(CATALOG)}") from None
