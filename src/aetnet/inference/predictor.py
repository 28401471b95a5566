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
Run a trained checkpoint on document pages from files, folders and PDFs, the way `aetnet predict` does:
[`DocumentPredictor`] is the [`~aetnet.page_predictor.PagePredictor`] (windows, forward passes, merging and
decoding, shared with the pipelines) plus loading a checkpoint folder, PyTorch or ONNX ([`~aetnet.inference.load_checkpoint`]),
and reading pages from paths, one bad page stopping nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from PIL import Image

from ..page_predictor import PAGE_ERRORS, PagePredictor
from ..pages import PageSource, as_page, load_pages, words_entry
from .checkpoints import load_checkpoint


class DocumentPredictor(PagePredictor):
    """
    Run a token classification, sequence classification or question answering checkpoint on document pages: a
    [`~aetnet.page_predictor.PagePredictor`] (same arguments) that also loads checkpoint folders and reads pages from
    image files, folders and PDFs.
    """

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        *,
        task: str | None = None,
        onnx: str | os.PathLike | None = None,
        **kwargs,
    ):
        """Load the model (with the Auto class of its task) and its processor from one folder; `kwargs` go to
        `DocumentPredictor`. With `onnx` (an `.onnx` file written by [`~aetnet.inference.onnx_export.export_onnx`]), the forward
        pass runs that file in ONNX Runtime and only the config and processor are read from the folder."""
        model, processor, task = load_checkpoint(model_name_or_path, task=task, onnx=onnx, device=kwargs.get("device"))
        return cls(model, processor, task=task, **kwargs)

    def __call__(self, inputs, *, questions: str | Sequence[str] | None = None, pdf_dpi: float = 200) -> list[dict]:
        """
        Predict every page of `inputs` and return one dict per page (see [`~aetnet.page_results`]).

        Args:
            inputs: a path (image, folder or PDF), a PIL image or array, a dict `{"image", "words", "boxes",
                "boxes_normalized"}`, a [`Page`], or a list of these.
            questions (`str` or `list[str]`, *optional*): the question(s) asked of every page (question answering).
            pdf_dpi (`float`, *optional*, defaults to 200): resolution PDF pages are rendered at.

        Raises:
            `PageLoadError` for paths that cannot be read, `ValueError` for bad words or boxes.
        """
        pages = load_pages(inputs, pdf_dpi)
        results = []
        for start in range(0, len(pages), self.batch_size):
            batch = pages[start : start + self.batch_size]
            for page, result in zip(batch, self.predict_pages(batch, questions)):
                if isinstance(result, Exception):
                    raise ValueError(f"{page.source or page.name}: {result}") from result
                results.append(result)
        return results

    def predict_sources(
        self,
        sources: Sequence[PageSource],
        *,
        questions: str | Sequence[str] | None = None,
        pdf_dpi: float = 200,
        words: dict[str, dict] | None = None,
        return_images: bool = False,
    ) -> Iterator[tuple[PageSource, dict | Exception, Image.Image | None]]:
        """
        Load and predict pages `batch_size` at a time, yielding `(source, outcome, image)` in order. A page that
        cannot be read or processed has its exception as outcome, so that one bad page stops nothing else. `image` is
        the decoded page with `return_images=True` (e.g. to draw on it), else `None`. `words`, if given, maps page
        names (or file names, stems, paths) to `{"words", "boxes", "boxes_normalized"}`; a page without an entry fails.
        """
        for start in range(0, len(sources), self.batch_size):
            batch = sources[start : start + self.batch_size]
            outcomes: list[dict | Exception | None] = [None] * len(batch)
            pages, positions = [], []
            for position, source in enumerate(batch):
                try:
                    image = source.load(pdf_dpi)
                    entry = {} if words is None else words_entry(words, source)
                    page_number = None if source.index is None else source.index + 1
                    pages.append(as_page({**entry, "image": image}, position, source.name, source.path, page_number))
                    positions.append(position)
                except PAGE_ERRORS as error:
                    outcomes[position] = error
            for position, result in zip(positions, self.predict_pages(pages, questions)):
                outcomes[position] = result
            images = [None] * len(batch)
            if return_images:
                for position, page in zip(positions, pages):
                    images[position] = page.image
            yield from zip(batch, outcomes, images)


def predict(model, inputs, *, questions: str | Sequence[str] | None = None, **kwargs) -> list[dict]:
    """
    Predict `inputs` (paths, images, dicts with words and boxes) with `model`, a checkpoint folder or a
    [`DocumentPredictor`]; `kwargs` go to `DocumentPredictor.from_pretrained`. One dict per page.

    Example:

    ```python
    >>> import aetnet.inference
    >>> pages = aetnet.inference.predict("outputs/aetnet-synthetic", ["scan.png", "letters.pdf"])
    >>> [(e["label"], e["text"]) for e in pages[0]["entities"]][:3]
    ```
    """
    if isinstance(model, DocumentPredictor):
        if kwargs:
            raise ValueError(
                f"Settings {sorted(kwargs)} apply when loading: pass them to `DocumentPredictor`, not here."
            )
        predictor = model
    else:
        predictor = DocumentPredictor.from_pretrained(model, **kwargs)
    return predictor(inputs, questions=questions)


__all__ = ["DocumentPredictor", "predict"]
