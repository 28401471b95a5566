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
"""
Tensor-level page augmentation for the momentum ViT view (`pixel_values_aug`).

AETNet's image-side contrastive terms (DITC, IMC) compare the online ViT on one view of the page with the momentum
ViT on another, augmented view. The official code augments *both* views heavily (random-resized crop down to 20% of
the page, flips, shears, RandAugment) while the word boxes stay untouched, so LayoutLMv3's layout embeddings and the
PITA patch cells no longer describe the pixels they are paired with. aetnet therefore keeps `pixel_values`
deterministic and augments only the momentum view, and only mildly: a crop that keeps at least 80% of the page,
rotation of a few degrees, photometric jitter, blur and grayscale. There is no flip, because mirrored text is not a
document.

Everything is written with plain torch ops (no torchvision, which is not a dependency), works on a batch of
*already normalised* tensors on any device, draws independent parameters per sample and is reproducible given a
`torch.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationConfig:
    """
    Strength of the momentum-view augmentation. The defaults are deliberately mild (see the module docstring).

    Args:
        crop_scale (`tuple[float, float]`): range of the kept page area for the random-resized crop.
        crop_ratio (`tuple[float, float]`): range of the crop aspect ratio (width / height, relative to the image).
        max_rotation_degrees (`float`): rotation angle is drawn uniformly in `[-max, max]`.
        brightness (`float`): brightness factor drawn in `[1 - brightness, 1 + brightness]`.
        contrast (`float`): contrast factor drawn in `[1 - contrast, 1 + contrast]`.
        saturation (`float`): saturation factor drawn in `[1 - saturation, 1 + saturation]`.
        color_jitter_probability (`float`): probability that brightness / contrast / saturation jitter is applied.
        grayscale_probability (`float`): probability of converting the view to grayscale.
        blur_probability (`float`): probability of a Gaussian blur.
        blur_sigma (`tuple[float, float]`): blur standard deviation range, in pixels of the processed image. Kept
            below the usual (0.1, 2.0) because 224-pixel pages carry small text.
        image_mean, image_std (`tuple[float, float, float]`): the normalisation the tensors were produced with
            (LayoutLMv3: 0.5 / 0.5). Photometric ops are applied in [0, 1] pixel space and the result is
            normalised again, so they must match the image processor.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    max_rotation_degrees: float = 3.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    color_jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"`{name}` must satisfy 0 < low <= high, got {(low, high)}")
        if self.crop_scale[1] > 1:
            raise ValueError(f"`crop_scale` must be within (0, 1], got {self.crop_scale}")
        for name in ("max_rotation_degrees", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) > 1:
                raise ValueError(
                    f"`{name}` must be <= 1 so that the factor stays non-negative, got {getattr(self, name)}"
                )
        for name in ("color_jitter_probability", "grayscale_probability", "blur_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"`{name}` must be a probability in [0, 1], got {getattr(self, name)}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"`image_std` must be positive, got {self.image_std}")


def _uniform(shape, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def _random_affine_grid(
    batch_size: int, height: int, width: int, config: AugmentationConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Sampling grid for a random-resized crop followed by a small rotation, one draw per sample."""
    area = _uniform(batch_size, *config.crop_scale, generator)
    log_ratio = _uniform(batch_size, math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), generator)
    ratio = torch.exp(log_ratio)
    # Crop width / height as fractions of the page; clamping keeps the crop inside the page.
    crop_w = torch.sqrt(area * ratio).clamp(max=1.0)
    crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
    # Crop centre in normalised [-1, 1] coordinates, anywhere the crop still fits.
    center_x = (torch.rand(batch_size, generator=generator) * 2 - 1) * (1 - crop_w)
    center_y = (torch.rand(batch_size, generator=generator) * 2 - 1) * (1 - crop_h)
    angle = _uniform(batch_size, -config.max_rotation_degrees, config.max_rotation_degrees, generator)
    angle = angle * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotate in pixel units (not in [-1, 1] units) so that non-square pages are not sheared.
    aspect = width / height
    theta = torch.zeros(batch_size, 2, 3)
    theta[:, 0, 0] = cos * crop_w
    theta[:, 0, 1] = -sin * crop_h / aspect
    theta[:, 1, 0] = sin * crop_w * aspect
    theta[:, 1, 1] = cos * crop_h
    theta[:, 0, 2] = center_x
    theta[:, 1, 2] = center_y
    return F.affine_grid(theta, [batch_size, 1, height, width], align_corners=False)


def _gaussian_blur(pixels: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with one standard deviation per sample, as one grouped conv2d per axis."""
    batch_size, channels, height, width = pixels.shape
    radius = max(1, math.ceil(3 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype, device=pixels.device)
    sigma = sigma.to(pixels)
    kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (batch_size * channels, 2 * radius + 1)
    # Reflection padding needs pad < size; tiny images fall back to replication.
    mode = "reflect" if radius < min(height, width) else "replicate"
    flat = pixels.reshape(1, batch_size * channels, height, width)
    flat = F.pad(flat, (radius, radius, 0, 0), mode=mode)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch_size * channels)
    flat = F.pad(flat, (0, 0, radius, radius), mode=mode)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch_size * channels)
    return flat.reshape(batch_size, channels, height, width)


def augment_pixel_values(
    pixel_values: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    config: AugmentationConfig | None = None,
    **overrides,
) -> torch.Tensor:
    """
    Randomly augment a batch of normalised page images for the momentum ViT.

    Per sample, in this order: random-resized crop (`crop_scale`, `crop_ratio`) and rotation
    (`max_rotation_degrees`) resampled back to the input size with bilinear `grid_sample` and border padding; with
    probability `color_jitter_probability` brightness, contrast and saturation jitter; grayscale with probability
    `grayscale_probability`; Gaussian blur with probability `blur_probability`. Photometric operations run in
    [0, 1] pixel space (undoing `image_mean` / `image_std`) and the result is clamped and normalised again.

    Args:
        pixel_values (`torch.Tensor` of shape `(batch_size, 3, height, width)` or `(3, height, width)`):
            Normalised images, e.g. the `pixel_values` returned by [`AETNetProcessor`].
        generator (`torch.Generator`, *optional*):
            CPU generator for all random draws; the same generator state gives the same output. Without it the
            global torch RNG is used.
        config (`AugmentationConfig`, *optional*):
            Augmentation strengths; defaults to `AugmentationConfig()`.
        **overrides:
            Individual `AugmentationConfig` fields, e.g. `crop_scale=(0.9, 1.0)` or `blur_probability=0.0`.

    Returns:
        `torch.Tensor`: the augmented batch, same shape, dtype and device as `pixel_values`. The input is not
        modified.
    """
    config = AugmentationConfig(**{**asdict(config or AugmentationConfig()), **overrides})
    if pixel_values.dim() == 3:
        return augment_pixel_values(pixel_values[None], generator, config=config)[0]
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
        raise ValueError(
            f"`pixel_values` must have shape (batch_size, 3, height, width), got {tuple(pixel_values.shape)}"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"`pixel_values` must be a floating point tensor, got {pixel_values.dtype}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"`generator` must be a CPU generator, got one on {generator.device}")

    batch_size, _, height, width = pixel_values.shape
    device = pixel_values.device
    # All random numbers are drawn on the CPU, in a fixed order, so results do not depend on the device.
    grid = _random_affine_grid(batch_size, height, width, config, generator)
    draws = _photometric_draws(batch_size, config, generator)
    pixels = pixel_values.float()
    pixels = F.grid_sample(pixels, grid.to(device), mode="bilinear", padding_mode="border", align_corners=False)
    mean = torch.tensor(config.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std, device=device).view(1, 3, 1, 1)
    pixels = _photometric(pixels * std + mean, draws, config)  # in [0, 1] pixel space
    pixels = (pixels.clamp(0, 1) - mean) / std
    return pixels.to(pixel_values.dtype)


def _photometric_draws(batch_size: int, config: AugmentationConfig, generator: torch.Generator | None) -> dict:
    """The per-sample draws of the photometric operations, in their fixed order: whether to jitter, the brightness,
    contrast and saturation factors, whether to turn gray, whether to blur, and the blur sigma."""
    return {
        "jitter": torch.rand(batch_size, generator=generator) < config.color_jitter_probability,
        "brightness": _uniform(batch_size, 1 - config.brightness, 1 + config.brightness, generator),
        "contrast": _uniform(batch_size, 1 - config.contrast, 1 + config.contrast, generator),
        "saturation": _uniform(batch_size, 1 - config.saturation, 1 + config.saturation, generator),
        "grayscale": torch.rand(batch_size, generator=generator) < config.grayscale_probability,
        "blur": torch.rand(batch_size, generator=generator) < config.blur_probability,
        "sigma": _uniform(batch_size, *config.blur_sigma, generator),
    }


def _photometric(pixels: torch.Tensor, draws: dict, config: AugmentationConfig) -> torch.Tensor:
    """Brightness, contrast and saturation jitter, grayscale and blur of [0, 1] pixels, each where `draws` says."""
    device = pixels.device
    jitter = draws["jitter"]

    def per_sample(values: torch.Tensor, enabled: torch.Tensor) -> torch.Tensor:
        return torch.where(enabled, values, torch.ones_like(values)).to(device).view(-1, 1, 1, 1)

    luma_weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
    pixels = (pixels * per_sample(draws["brightness"], jitter)).clamp(0, 1)
    gray_mean = (pixels * luma_weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    pixels = ((pixels - gray_mean) * per_sample(draws["contrast"], jitter) + gray_mean).clamp(0, 1)
    gray = (pixels * luma_weights).sum(dim=1, keepdim=True)
    pixels = ((pixels - gray) * per_sample(draws["saturation"], jitter) + gray).clamp(0, 1)
    if draws["grayscale"].any():
        gray = (pixels * luma_weights).sum(dim=1, keepdim=True).expand_as(pixels)
        pixels = torch.where(draws["grayscale"].to(device).view(-1, 1, 1, 1), gray, pixels)
    blur = draws["blur"]
    if blur.any():
        # Blur only the selected samples: the convolution is the most expensive step.
        selected = blur.nonzero()[:, 0].to(device)
        blurred = _gaussian_blur(pixels[selected], draws["sigma"][blur], config.blur_sigma[1])
        pixels = pixels.index_copy(0, selected, blurred)
    return pixels


__all__ = ["AugmentationConfig", "augment_pixel_values"]
