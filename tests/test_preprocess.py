"""The one preprocessing path (Film -> 1 x S x S uint8 -> [0, 1] float) and the training-only augmentation."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.films.film import Film
from core.films.read import read_film
from core.films.reference import REFERENCE_JPEG_QUALITY, REFERENCE_SIZE, reference_form
from core.films.tensor import as_float, check_pixel_contract, film_to_tensor
from core.training.augment import TrainingAugmentation


def _film(pixels: np.ndarray, source_format: str = "JPEG") -> Film:
    """Pixels as a decoded film (``film_to_tensor`` takes a Film, not an array); a JPEG, as training copies are."""
    width, height = (pixels.shape[1], pixels.shape[0]) if pixels.ndim >= 2 else (0, 0)
    return Film(pixels, source_format, (width, height), 8)


def _model_input(pixels: np.ndarray, size: int) -> torch.Tensor:
    """1 x S x S float in [0, 1]: what the model sees of these pixels."""
    return as_float(film_to_tensor(_film(pixels), size))


@pytest.mark.parametrize("size", [32, 64, 224])
@pytest.mark.parametrize("shape", [(260, 320), (320, 260), (64, 64)])
def test_film_to_tensor_follows_the_pixel_contract(size, shape):
    pixels = np.random.default_rng(0).random(shape, dtype=np.float32)
    tensor = film_to_tensor(_film(pixels), size)
    assert tensor.shape == (1, size, size)
    assert tensor.dtype == torch.uint8  # 8-bit, as training stores it
    batch = as_float(tensor.unsqueeze(0))
    assert batch.dtype == torch.float32
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    check_pixel_contract(batch)


def test_as_float_is_the_8_bit_value_over_255():
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    out = as_float(values)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16) / 255.0,
                               atol=0, rtol=0)


def test_whole_film_is_squashed_to_a_square_not_cropped():
    # A 400 x 200 film whose left quarter is white: squashing keeps that quarter; a centre crop would lose it.
    pixels = np.zeros((200, 400), dtype=np.float32)
    pixels[:, :100] = 1.0
    tensor = _model_input(pixels, 64)[0].numpy()
    assert tensor[:, :15].mean() > 0.99
    assert tensor[:, 17:].mean() < 0.01
    # vertical extent fully kept too
    pixels = np.zeros((400, 200), dtype=np.float32)
    pixels[300:, :] = 1.0
    tensor = _model_input(pixels, 64)[0].numpy()
    assert tensor[49:, :].mean() > 0.99 and tensor[:47, :].mean() < 0.01


def test_downscale_is_anti_aliased():
    # One-pixel stripes average to grey; plain subsampling would return pure black or white.
    pixels = np.zeros((512, 512), dtype=np.float32)
    pixels[:, ::2] = 1.0
    tensor = _model_input(pixels, 64)
    assert float(tensor.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(tensor.std()) < 0.05


def test_a_film_in_the_training_form_reaches_a_224_px_model_as_its_8_bit_values():
    pixels = np.random.default_rng(1).random((224, 224), dtype=np.float32)
    assert reference_form(pixels) is pixels
    expected = torch.from_numpy(np.rint(pixels * 255.0).astype(np.uint8))
    tensor = film_to_tensor(_film(pixels), 224)
    assert tensor.dtype == torch.uint8
    assert torch.equal(tensor[0], expected)  # only rounded to 8 bits, nothing else
    assert float((as_float(tensor)[0] - torch.from_numpy(pixels)).abs().max()) <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("source_format", ["PNG", "DICOM"])
def test_a_lossless_film_already_224_px_gets_the_training_copys_jpeg_step(source_format):
    """Only a 224-px JPEG is in the training form already: a lossless one lacks the copy's block noise and
    scored 0.01-0.09 lower on every one of 16 real films (found by a review)."""
    pixels = np.random.default_rng(4).random((224, 224), dtype=np.float32)
    film = _film(pixels, source_format)
    assert not np.array_equal(film.model_pixels, pixels)
    np.testing.assert_array_equal(film.model_pixels, reference_form(pixels, jpeg=False))
    assert film.nbytes == pixels.nbytes * 2  # its reference form is a second array


def test_an_8_bit_training_film_reaches_the_model_exactly():
    # A training copy is 8-bit already: the model sees exactly its values, without any rounding error.
    eight_bit = np.random.default_rng(3).integers(0, 256, (224, 224)).astype(np.uint8)
    tensor = film_to_tensor(_film(eight_bit.astype(np.float32) / 255.0), 224)
    np.testing.assert_array_equal(tensor[0].numpy(), eight_bit)


def test_other_films_are_brought_to_the_training_copys_form():
    pixels = np.random.default_rng(2).random((300, 500), dtype=np.float32)
    out = reference_form(pixels)
    assert out.shape == (REFERENCE_SIZE, REFERENCE_SIZE) == (224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-4)  # 8-bit, like the copy
    assert float(np.abs(out - pixels.mean()).mean()) < 0.25  # JPEG smooths pixel noise towards the mean
    film = _film(pixels)
    np.testing.assert_array_equal(film.model_pixels, out)  # the Film's model form is that reference form


def test_full_resolution_film_gives_the_model_what_its_224_px_jpeg_copy_gives(pneumonia_film_path):
    # How the Kermany training copy was made: squashed to 224 px and saved as an RGB JPEG at quality 75.
    full = read_film(pneumonia_film_path)
    assert min(full.pixels.shape) > 500
    copy = Image.open(pneumonia_film_path).convert("L").resize((224, 224), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    copy.convert("RGB").save(buffer, "JPEG", quality=REFERENCE_JPEG_QUALITY)
    from_copy = as_float(film_to_tensor(read_film(buffer.getvalue(), "copy.jpeg"), 224))
    from_full = as_float(film_to_tensor(full, 224))
    difference = (from_full - from_copy).abs()
    assert float(difference.mean()) < 0.005 and float(difference.max()) < 0.1
    # Without the reference form the model would see a cleaner film: far more high-frequency difference.
    plain = Image.fromarray(full.pixels, mode="F").resize((224, 224), Image.Resampling.BILINEAR)
    assert float((torch.from_numpy(np.array(plain)) - from_copy[0]).abs().mean()) > 2.5 * float(difference.mean())


def test_full_resolution_film_and_a_224_copy_reach_the_model_alike(normal_film_path, tmp_path):
    """Training films are 224-px squashed copies; a full-resolution upload must reach the model the same way."""
    film = read_film(normal_film_path)
    with Image.open(normal_film_path) as image:
        image.convert("L").resize((224, 224), Image.Resampling.LANCZOS).save(tmp_path / "copy.png")
    copy = read_film(tmp_path / "copy.png")
    full, small = as_float(film_to_tensor(film, 128)), as_float(film_to_tensor(copy, 128))
    assert float((full - small).abs().mean()) < 0.02


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.full((4, 4), 1.5, np.float32),
                                 np.full((4, 4), -0.1, np.float32), np.zeros((0, 4), np.float32)],
                         ids=["rgb", "above-1", "below-0", "empty"])
def test_film_to_tensor_rejects_pixels_outside_the_contract(bad):
    with pytest.raises(ValueError):
        film_to_tensor(_film(bad), 32)


@pytest.mark.parametrize("batch", [torch.zeros(2, 3, 8, 8), torch.zeros(1, 8, 8), torch.full((1, 1, 8, 8), 2.0),
                                   torch.full((1, 1, 8, 8), -1.0)], ids=["3-channel", "3-d", "above-1", "below-0"])
def test_check_pixel_contract_rejects(batch):
    with pytest.raises(ValueError):
        check_pixel_contract(batch)


def _batch(n=4, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=generator)


def test_augmentation_keeps_the_contract_and_changes_the_films():
    batch = _batch()
    out = TrainingAugmentation()(batch, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert float((out - batch).abs().mean()) > 0.01


def test_augmentation_is_reproducible_with_a_seeded_generator():
    batch, augment = _batch(), TrainingAugmentation()
    first = augment(batch, torch.Generator().manual_seed(7))
    again = augment(batch, torch.Generator().manual_seed(7))
    other = augment(batch, torch.Generator().manual_seed(8))
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)


def test_augmentation_with_zero_strength_is_the_identity():
    augment = TrainingAugmentation(rotation_deg=0.0, scale=(1.0, 1.0), translate=0.0, brightness=0.0, contrast=0.0)
    batch = _batch()
    torch.testing.assert_close(augment(batch, torch.Generator().manual_seed(0)), batch, atol=1e-5, rtol=0)


def test_augmentation_never_flips_by_default():
    # A film that is white on its left (the patient's right, where the heart is not) must stay so.
    batch = torch.zeros(64, 1, 32, 32)
    batch[..., :8] = 1.0
    out = TrainingAugmentation(brightness=0.0, contrast=0.0)(batch, torch.Generator().manual_seed(0))
    left, right = out[..., :10].mean(dim=(1, 2, 3)), out[..., 22:].mean(dim=(1, 2, 3))
    assert bool((left > right).all())
    flipped = TrainingAugmentation(brightness=0.0, contrast=0.0, hflip=True)(batch, torch.Generator().manual_seed(0))
    left, right = flipped[..., :10].mean(dim=(1, 2, 3)), flipped[..., 22:].mean(dim=(1, 2, 3))
    assert 10 < int((right > left).sum()) < 54  # about half flipped when asked to


def _augment_as_before(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrainingAugmentation() as it was before wide framing existed: every shipped model trained with this."""
    n = batch.shape[0]

    def uniform(lo, hi):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-10.0, 10.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    shift = torch.stack([uniform(-0.06, 0.06) for _ in range(2)], dim=1) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    out = F.grid_sample(batch, F.affine_grid(theta, list(batch.shape), align_corners=False), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    gain, bias = uniform(0.85, 1.15).view(n, 1, 1, 1), uniform(-0.1, 0.1).view(n, 1, 1, 1)
    mean = out.mean(dim=(2, 3), keepdim=True)
    return ((out - mean) * gain + mean + bias).clamp(0.0, 1.0)


def test_the_standard_augmentation_is_unchanged_bit_for_bit():
    batch = _batch(n=8)
    assert torch.equal(TrainingAugmentation()(batch, torch.Generator().manual_seed(3)),
                       _augment_as_before(batch, torch.Generator().manual_seed(3)))


def test_wide_framing_varies_the_size_and_the_width_against_the_height():
    """A centred square, augmented without rotation, shift or photometric change: its size spans 0.8-1.25 of the
    original, and its width against its height up to 1.15 either way, which the standard one never does."""
    square = torch.zeros(400, 1, 64, 64)
    square[..., 16:48, 16:48] = 1.0

    def widths_heights(augment):
        augment.rotation_deg, augment.translate, augment.brightness, augment.contrast = 0.0, 0.0, 0.0, 0.0
        out = augment(square, torch.Generator().manual_seed(0)) > 0.5
        return out.any(dim=2).sum(dim=(1, 2)).float(), out.any(dim=3).sum(dim=(1, 2)).float()

    width, height = widths_heights(TrainingAugmentation.wide_framing())
    # each side: scale 0.8-1.25 times sqrt(1.15) either way, so 0.75-1.34 of the original at the extremes
    assert 32 * 0.72 <= float(width.min()) <= 32 * 0.8 and 32 * 1.25 <= float(width.max()) <= 32 * 1.4
    ratio = width / height
    assert float(ratio.min()) < 0.93 and float(ratio.max()) > 1.07
    width, height = widths_heights(TrainingAugmentation())
    assert 32 * 0.85 <= float(width.min()) and float(width.max()) <= 32 * 1.15  # 0.9-1.1, to a pixel
    assert torch.equal(width, height)  # the standard augmentation keeps the proportions


def test_training_records_wide_framing_and_a_run_of_another_augmentation_is_another_recipe():
    from core.store.records import TrainConfig
    from core.training.holdout_run import RECIPE

    assert "wide_framing" in RECIPE and TrainConfig().wide_framing is False
    assert TrainConfig.model_validate(TrainConfig(wide_framing=True).to_json()).wide_framing is True
