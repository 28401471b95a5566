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
The `document-token-classification` task of `transformers.pipeline`, for AETNet checkpoints.

Importing this module registers the task. Each input is one page (a path to an image, a PIL image, or a dict
`{"image", "words", "boxes", "boxes_normalized"}`) and gives the same dict as
[`~aetnet.inference.DocumentPredictor`]: `words` with label and confidence, and grouped `entities`.

```python
>>> import aetnet.pipeline_aetnet  # registers the task
>>> from transformers import pipeline

>>> labeller = pipeline("document-token-classification", model="outputs/aetnet-synthetic", device="cpu")
>>> page = labeller("scan.png")
>>> [(entity["label"], entity["text"]) for entity in page["entities"]][:3]
```
"""

from __future__ import annotations

from transformers import AutoModelForTokenClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from aetnet.inference import DocumentPredictor, as_page


TASK = "document-token-classification"


class DocumentTokenClassificationPipeline(Pipeline):
    """
    Label the words of document pages and group them into entities, with OCR unless words and boxes are given and
    overlapping windows for long pages.

    Pipeline arguments (at creation or per call): `max_length`, `stride` (window length and overlap in tokens),
    `ocr_lang`, `tesseract_config` (Tesseract settings).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, max_length=None, stride=None, ocr_lang=None, tesseract_config=None, **kwargs):
        preprocess_params = {
            key: value
            for key, value in (
                ("max_length", max_length),
                ("stride", stride),
                ("ocr_lang", ocr_lang),
                ("tesseract_config", tesseract_config),
            )
            if value is not None
        }
        return preprocess_params, {}, {}

    def _predictor(self, **settings) -> DocumentPredictor:
        """A predictor over this pipeline's model and processor; cheap, as the model is only referenced."""
        return DocumentPredictor(
            self.model, self.processor, task="token-classification", device=self.device, **settings
        )

    def preprocess(self, inputs, **settings):
        predictor = self._predictor(**settings)
        page = as_page(inputs)
        result, encoded = predictor.prepare(page)
        return {"result": result, "encoded": encoded, "settings": settings}

    def _forward(self, model_inputs):
        predictor = self._predictor(**model_inputs["settings"])
        outputs = predictor.forward([window for _, windows in model_inputs["encoded"] for window in windows])
        return {**model_inputs, "outputs": outputs}

    def postprocess(self, model_outputs):
        predictor = self._predictor(**model_outputs["settings"])
        outputs = iter(model_outputs["outputs"])
        encoded = [(q, windows, [next(outputs) for _ in windows]) for q, windows in model_outputs["encoded"]]
        return predictor.decode(model_outputs["result"], encoded)


PIPELINE_REGISTRY.register_pipeline(
    TASK,
    pipeline_class=DocumentTokenClassificationPipeline,
    pt_model=AutoModelForTokenClassification,
    type="multimodal",
)


__all__ = ["TASK", "DocumentTokenClassificationPipeline"]
