"""Each Grad-CAM map sits over the part of the film its layer's cells look at (core.models.build.cam_shift).

pytorch_grad_cam upsamples a layer's coarse map as if each cell were centred on its block of input pixels; a
ResNet's cells are centred half a block up-left of that (symmetric padding), an EfficientNet-Lite's half a block
down-right (TensorFlow's "SAME" padding): at 224 px the maps were drawn 15.5 px (7 %) off, each way, and the
default ensemble averaged its members' maps 31 px apart (a Grad-CAM review). Where a cell really looks is
measured here by the input pixels its value depends on (their gradient), on an input large enough that no
padding cuts the span short.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.models.build import build_model, cam_layer, cam_shift
from core.serving.explain import shifted

SIZES = {"resnet18": 1024, "efficientnet_lite0": 1024, "efficientnet_lite1": 1536, "cnn5": 1024}  # past each span


def _true_centre(arch: str) -> tuple[float, float, int]:
    """(the input row where a middle cell of the Grad-CAM layer looks, that cell's row, the layer's rows)."""
    size = SIZES[arch]
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


@pytest.mark.parametrize("arch", SIZES)
def test_a_map_is_drawn_over_the_pixels_its_cell_looks_at(arch):
    centre, cell, cells = _true_centre(arch)
    stride = SIZES[arch] / cells
    drawn = (cell + 0.5) * stride - 0.5  # where bilinear upsampling (OpenCV's, the library's) centres the cell
    assert abs(drawn + cam_shift(arch, stride) - centre) <= 0.5, (arch, centre, drawn)


def test_a_shift_moves_the_map_and_repeats_its_edge():
    heat = np.zeros((8, 8), np.float32)
    heat[4, 4] = 1.0
    moved = shifted(heat, -1.5)
    assert moved[3, 3] == pytest.approx(0.25) and moved[2, 2] == pytest.approx(0.25)  # halfway between rows 2, 3
    assert moved.sum() == pytest.approx(1.0)
    edge = shifted(np.tile(np.arange(8, dtype=np.float32), (8, 1)), 2.0)
    np.testing.assert_allclose(edge[0], [0, 0, 0, 1, 2, 3, 4, 5])
    assert shifted(heat, 0.0) is heat
