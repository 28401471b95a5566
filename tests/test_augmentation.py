# Copyright 2025 The aetnet developers.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests of the momentum-view augmentation: reproducible, per-sample, mild, shape- and dtype-preserving."""

import pytest
import torch

from aetnet.augmentation import AugmentationConfig, augment_pixel_values


GEOMETRY_ONLY = dict(brightness=0.0, contrast=0.0, saturation=0.0, blur_probability=0.0, grayscale_probability=0.0)
IDENTITY = dict(GEOMETRY_ONLY, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), max_rotation_degrees=0.0)


def text_page(batch_size: int = 4, size: int = 64) -> torch.Tensor:
    """A white normalised page (1.0) with black text lines (-1.0)."""
    page = torch.ones(batch_size, 3, size, size)
    for row in range(8, size - 4, 8):
        page[:, :, row : row + 3, 6 : size - 6] = -1.0
    return page


def coordinate_page(batch_size: int = 16, size: int = 64) -> torch.Tensor:
    """Channel 0 holds the x coordinate and channel 1 the y coordinate of each pixel centre, in [-1, 1]."""
    centres = (torch.arange(size) + 0.5) / size * 2 - 1
    page = torch.zeros(batch_size, 3, size, size)
    page[:, 0] = centres[None, None, :]
    page[:, 1] = centres[None, :, None]
    return page


def test_same_seed_same_output_and_different_seed_different_output():
    page = text_page()
    first = augment_pixel_values(page, torch.Generator().manual_seed(0))
    second = augment_pixel_values(page, torch.Generator().manual_seed(0))
    third = augment_pixel_values(page, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.allclose(first, third)


def test_shape_dtype_and_input_are_preserved():
    page = text_page()
    original = page.clone()
    out = augment_pixel_values(page, torch.Generator().manual_seed(0))
    assert out.shape == page.shape and out.dtype == page.dtype
    torch.testing.assert_close(page, original, rtol=0, atol=0)
    assert not torch.allclose(out, page)  # it does change pixels
    half = augment_pixel_values(page.half(), torch.Generator().manual_seed(0))
    assert half.dtype == torch.float16
    single = augment_pixel_values(page[0], torch.Generator().manual_seed(0))
    assert single.shape == page[0].shape
    non_square = augment_pixel_values(torch.zeros(2, 3, 24, 40), torch.Generator().manual_seed(0))
    assert non_square.shape == (2, 3, 24, 40)


def test_parameters_are_drawn_per_sample():
    out = augment_pixel_values(text_page(batch_size=4), torch.Generator().manual_seed(0))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j])


def test_zero_strength_is_the_identity():
    page = text_page()
    out = augment_pixel_values(page, torch.Generator().manual_seed(0), **IDENTITY)
    torch.testing.assert_close(out, page, rtol=0, atol=1e-4)


def test_geometry_is_mild():
    page = coordinate_page()
    grid_x, grid_y = page[:, 0], page[:, 1]

    def displacement(**overrides):
        out = augment_pixel_values(page, torch.Generator().manual_seed(0), **GEOMETRY_ONLY, **overrides)
        # On a linear ramp, bilinear sampling returns the source coordinate itself.
        return torch.sqrt((out[:, 0] - grid_x) ** 2 + (out[:, 1] - grid_y) ** 2)

    mild = displacement()
    # In [-1, 1] page units: on average under 5% of the page width, never more than 15%.
    assert mild.mean() < 0.1 and mild.max() < 0.3
    assert mild.mean() > 0.005  # but it does move
    heavy = displacement(crop_scale=(0.2, 0.3), max_rotation_degrees=30.0)
    assert heavy.mean() > 2 * mild.mean()


def test_photometric_jitter_is_bounded():
    # A mid-grey page (0.5 in pixel space, 0.0 normalised): only brightness can move it, by at most 40%.
    page = torch.zeros(32, 3, 16, 16)
    out = augment_pixel_values(page, torch.Generator().manual_seed(0), crop_scale=(1.0, 1.0), max_rotation_degrees=0.0)
    assert out.abs().max() <= 0.4 + 1e-5
    assert out.abs().max() > 0.05


def test_grayscale_and_blur_options():
    colour = torch.zeros(2, 3, 16, 16)
    colour[:, 0] = 1.0  # pure red
    gray = augment_pixel_values(colour, torch.Generator().manual_seed(0), **dict(IDENTITY, grayscale_probability=1.0))
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    torch.testing.assert_close(gray[:, 1], gray[:, 2])
    dots = -torch.ones(2, 3, 16, 16)
    dots[:, :, 8, 8] = 1.0
    blurred = augment_pixel_values(dots, torch.Generator().manual_seed(0), **dict(IDENTITY, blur_probability=1.0))
    assert blurred[:, :, 8, 8].max() < 1.0 and blurred[:, :, 8, 9].min() > -1.0
    assert blurred.mean() == pytest.approx(dots.mean().item(), abs=1e-4)  # blur keeps the mean (no energy lost)


def test_global_rng_is_used_without_generator():
    torch.manual_seed(0)
    first = augment_pixel_values(text_page())
    torch.manual_seed(0)
    second = augment_pixel_values(text_page())
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_scale=(0.9, 0.5)), "`crop_scale` must satisfy"),
        (dict(crop_scale=(0.5, 1.5)), r"`crop_scale` must be within \(0, 1\]"),
        (dict(brightness=1.5), "`brightness` must be <= 1"),
        (dict(max_rotation_degrees=-1.0), "`max_rotation_degrees` must be >= 0"),
        (dict(blur_probability=2.0), "`blur_probability` must be a probability"),
        (dict(image_std=(0.5, 0.0, 0.5)), "`image_std` must be positive"),
    ],
)
def test_invalid_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentationConfig(**kwargs)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match=r"shape \(batch_size, 3, height, width\), got \(2, 1, 8, 8\)"):
        augment_pixel_values(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        augment_pixel_values(torch.zeros(2, 3, 8, 8, dtype=torch.long))


def test_defaults_are_mild_by_design():
    config = AugmentationConfig()
    assert config.crop_scale[0] >= 0.8 and config.max_rotation_degrees <= 3.0
    assert config.image_mean == (0.5, 0.5, 0.5) and config.image_std == (0.5, 0.5, 0.5)  # LayoutLMv3 normalisation
