"""Each Grad-CAM map sits over the part of the film its layer's cells look at (core.models.build.cam_cells,
core.serving.explain.realigned).

pytorch_grad_cam upsamples a layer's coarse map as if each cell were centred on its block of input pixels; a
ResNet's cells are centred half a block up-left of that (symmetric padding), an EfficientNet-Lite's elsewhere by
its layers' parities (TensorFlow's "SAME" padding: half a block down-right at a multiple of 32 px): at 224 px the
maps were drawn 15.5 px (7 %) off, each way, and the default ensemble averaged its members' maps 31 px apart (a
Grad-CAM review). Where a cell really looks is measured here by the input pixels its value depends on (their
gradient), on inputs large enough that no padding cuts the span short, at sizes of each parity pattern.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from core.models.build import build_model, cam_cells, cam_layer
from core.serving.explain import realigned

PROBES = [("resnet18", 1024), ("resnet18", 1000), ("efficientnet_lite0", 1024), ("efficientnet_lite0", 1000),
          ("efficientnet_lite1", 1520), ("efficientnet_lite2", 1540), ("cnn5", 1000)]


def _true_centre(arch: str, size: int) -> tuple[float, int, int]:
    """(the input row where a middle cell of the Grad-CAM layer looks, that cell's row, the layer's rows)."""
    model, _ = build_model(arch, 2, size)
    model.eval()
    layer, seen = cam_layer(arch, model), {}
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.setdefault("out", output))
    x = torch.randn(1, 1, size, size, requires_grad=True)
    try:
        model(x)
    finally:
        handle.remove()
    out = seen["out"]
    cell = out.shape[-2] // 2
    out[0, :, cell, cell].sum().backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1)).flatten()
    assert 0 < int(rows.min()) and int(rows.max()) < size - 1  # the whole span inside: its middle is the centre
    return (float(rows.min()) + float(rows.max())) / 2, cell, out.shape[-2]


@pytest.mark.parametrize("arch, size", PROBES)
def test_each_cell_is_said_to_look_where_its_gradient_says(arch, size):
    centre, cell, cells = _true_centre(arch, size)
    said_cells, stride, first = cam_cells(arch, size)
    assert said_cells == cells and abs(stride * cell + first - centre) <= 0.5, (arch, size, centre)


@pytest.mark.parametrize("arch, size", [("resnet18", 224), ("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                        ("efficientnet_lite2", 260), ("cnn5", 224), ("efficientnet_lite0", 160)])
def test_a_map_is_redrawn_with_each_cell_over_where_it_looks(arch, size):
    cells, stride, first = cam_cells(arch, size)
    for cell in range(1, cells - 1):
        coarse = np.zeros((cells, cells), np.float32)
        coarse[cell, cell] = 1.0
        drawn = cv2.resize(coarse, (size, size))  # as pytorch_grad_cam upsamples it (scale_cam_image)
        peak = np.unravel_index(int(np.argmax(realigned(drawn, cells, stride, first))), (size, size))
        assert abs(peak[0] - (stride * cell + first)) <= 1 and abs(peak[1] - (stride * cell + first)) <= 1


def test_a_map_already_over_its_cells_comes_back_as_it_is():
    heat = np.random.default_rng(0).random((224, 224), dtype=np.float32)
    assert realigned(heat, *cam_cells("cnn5", 224)) is heat
