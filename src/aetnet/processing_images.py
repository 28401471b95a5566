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
Page images as the processor reads them, and Tesseract on such a page.

[`to_rgb_image`] turns a PIL image of any mode, a numpy array or a torch tensor into the one 8-bit RGB page that the
image processor, the pixel-box normalisation and Tesseract all see ([`to_rgb_pages`] does it for the one page or the
batch of pages a processor call takes); [`run_tesseract`] is the package's one Tesseract
wrapper. They live apart from [`~aetnet.processing_aetnet.AETNetProcessor`] because the OCR cache uses them without a
processor.

Like the processor, which ships it as remote code, this module imports only torch, numpy, PIL and transformers.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_utils import ChannelDimension
from transformers.models.layoutlmv3.image_processing_pil_layoutlmv3 import apply_tesseract as _stock_apply_tesseract


_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def to_rgb_image(image, index: int) -> Image.Image:
    """
    Convert a PIL image of any mode (L, RGB, RGBA, P, I;16, ...), a numpy array or a torch tensor (HW, HWC or CHW;
    uint8, 16-bit, or float in [0, 1], or in [0, 255] when the maximum exceeds 1) into an 8-bit RGB PIL image,
    transparent areas composited onto white. `index` names the image in error messages.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, Image.Image):
        try:
            image.load()  # PIL decodes lazily: a truncated or corrupt file only fails here
        except (OSError, SyntaxError) as error:
            raise ValueError(f"`images[{index}]` could not be decoded (truncated or corrupt file?): {error}") from None
        if image.mode == "RGB":
            return image
        if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
            # Transparent regions of a page are paper, not black: composite onto white.
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        if image.mode.startswith("I") or image.mode == "F":
            # PIL's own conversion clips 16-bit and float pages to 255 (a white page); rescale instead.
            image = np.asarray(image)
        else:
            return image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"`images[{index}]` must be a PIL image, a numpy array or a torch tensor, got {type(image)}")

    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels-first -> channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"`images[{index}]` must have shape (height, width), (height, width, 1|3|4) or (1|3|4, height, width), "
            f"got {array.shape}"
        )
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"`images[{index}]` contains NaN or infinite pixel values")
        low, high = float(array.min(initial=0)), float(array.max(initial=0))
        if low < 0 or high > 255:
            raise ValueError(f"`images[{index}]` float pixels must be in [0, 1] or [0, 255], got [{low}, {high}]")
        array = np.rint(array * 255 if high <= 1 else array).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        low, high = int(array.min(initial=0)), int(array.max(initial=0))
        if low < 0 or high > 65535:
            raise ValueError(f"`images[{index}]` integer pixels must be in [0, 65535], got [{low}, {high}]")
        # 16-bit data (uint16, or wider ints holding values above 255) is rescaled; 0-255 ints are kept as they are.
        sixteen_bit = array.dtype == np.uint16 or high > 255
        array = np.rint(array / 257).astype(np.uint8) if sixteen_bit else array.astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"`images[{index}]` has unsupported dtype {array.dtype}")
    return to_rgb_image(Image.fromarray(array), index)


def to_rgb_pages(images) -> list[Image.Image]:
    """
    The pages of a processor call as 8-bit RGB PIL images: `images` is one page (a PIL image, an HW, HWC or CHW
    array or tensor) or a batch of them (a list or tuple, or a 4-D array or tensor); see [`to_rgb_image`].
    """
    if images is None:
        raise ValueError("`images` is required: AETNet reads the page image with LayoutLMv3 and the aligner ViT.")
    if isinstance(images, (list, tuple)) or (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4):
        image_list = list(images)
    else:
        image_list = [images]
    return [to_rgb_image(image, index) for index, image in enumerate(image_list)]


def run_tesseract(page: Image.Image, ocr_lang: str, tesseract_config: str) -> tuple[list[str], list[list[int]]]:
    """
    The one Tesseract wrapper of the package (the processor's `apply_ocr=True` path,
    [`AETNetProcessor.apply_tesseract`] and the OCR cache's default engine): the stock LayoutLMv3 `apply_tesseract`
    through `pytesseract` on an RGB page, empty words dropped, boxes normalised to 0-1000 by the page size (not yet
    clipped), as plain lists.
    """
    words, boxes = _stock_apply_tesseract(
        np.asarray(page), ocr_lang, tesseract_config, input_data_format=ChannelDimension.LAST
    )
    return list(words), [[int(value) for value in box] for box in boxes]


__all__ = ["run_tesseract", "to_rgb_image", "to_rgb_pages"]
