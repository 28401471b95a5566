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
"""ONNX export of tiny AETNet checkpoints (full model and `to_layoutlmv3()` baseline), ONNX Runtime parity at two batch
sizes and two lengths, and `aetnet predict` running the exported file with the same pre- and post-processing."""

import json

import numpy as np
import pytest
import torch
from transformers import LayoutLMv3ImageProcessorPil


pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import onnxruntime  # noqa: E402

from aetnet import (  # noqa: E402
    AETNetConfig,  # noqa: E402
    AETNetForQuestionAnswering,
    AETNetForTokenClassification,
    AETNetProcessor,  # noqa: E402
    DocumentPredictor,  # noqa: E402
    export_onnx,  # noqa: E402
)
from aetnet.commands.aetnet_cli import main  # noqa: E402
from aetnet.data import (
    FUNSD_LABELS,  # noqa: E402
    generate_synthetic_forms,  # noqa: E402
)
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer  # noqa: E402
from aetnet.inference import ONNXDocumentModel, onnx_metadata


@pytest.fixture(scope="module")
def forms():
    return list(generate_synthetic_forms(2, seed=9))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, forms):
    root = tmp_path_factory.mktemp("onnx")
    tokenizer = train_layoutlmv3_tokenizer([form["words"] for form in forms], vocab_size=400)
    processor = AETNetProcessor(
        LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}), tokenizer
    )
    torch.manual_seed(0)
    label2id = {label: i for i, label in enumerate(FUNSD_LABELS)}
    labels = {"id2label": dict(enumerate(FUNSD_LABELS)), "label2id": label2id}
    config = {"vocab_size": len(tokenizer), "queue_size": 8}
    models = {
        "token": AETNetForTokenClassification(AETNetConfig.from_preset("tiny", **config, **labels)),
        "qa": AETNetForQuestionAnswering(AETNetConfig.from_preset("tiny", **config)),
    }
    for name, model in models.items():
        # Non-zero gates and heads, so that the aligners' contribution shows in the outputs.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return root, {name: model.eval() for name, model in models.items()}, processor


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """Each export once (they take seconds): the token head through `aetnet export`, its LayoutLMv3 baseline and the
    QA head through `export_onnx` (from a folder and from a loaded model)."""
    root, models, _ = checkpoints
    folder = tmp_path_factory.mktemp("exports")
    command = ["export", str(root / "token"), "--onnx", str(folder / "token.onnx")]
    return {
        "token": (main(command), folder / "token.onnx"),
        "baseline": export_onnx(root / "token", folder / "baseline.onnx", baseline=True),
        "qa": export_onnx(models["qa"], folder / "qa.onnx"),
    }


def random_inputs(model, processor, batch_size, length, seed):
    generator = torch.Generator().manual_seed(seed)
    layout = getattr(model.config, "layout_config", model.config)
    input_ids = torch.randint(5, len(processor.tokenizer), (batch_size, length), generator=generator)
    corner = torch.randint(0, 900, (batch_size, length, 2), generator=generator)
    bbox = torch.cat([corner, corner + torch.randint(0, 100, (batch_size, length, 2), generator=generator)], -1)
    attention_mask = torch.ones(batch_size, length, dtype=torch.long)
    attention_mask[-1, length // 2 :] = 0  # a padded row
    pixel_values = torch.randn(batch_size, 3, layout.input_size, layout.input_size, generator=generator)
    return {"input_ids": input_ids, "bbox": bbox, "attention_mask": attention_mask, "pixel_values": pixel_values}


def check_parity(path, reference, processor, names):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "bbox", "attention_mask", "pixel_values"]
    assert [o.name for o in session.get_outputs()] == list(names)
    shapes = set()
    for seed, (batch_size, length) in enumerate(((1, 11), (3, 11), (1, 57), (3, 57))):
        inputs = random_inputs(reference, processor, batch_size, length, seed)
        with torch.no_grad():
            expected = reference(**inputs, return_dict=True)
        outputs = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        for name, value in zip(names, outputs):
            assert value.shape == tuple(expected[name].shape)
            assert np.abs(value - expected[name].numpy()).max() < 1e-4, (name, batch_size, length)
            shapes.add(value.shape)
    assert len(shapes) == 4  # two batch sizes x two lengths


@pytest.mark.parametrize("baseline", [False, True], ids=["aetnet", "layoutlmv3-baseline"])
def test_token_classification_export_matches_pytorch(checkpoints, exports, baseline):
    _, models, processor = checkpoints
    if baseline:
        result = exports["baseline"]
        assert result.task == "token-classification" and result.baseline and result.max_abs_diff < 1e-4
        path = result.path
    else:
        exit_code, path = exports["token"]
        assert exit_code == 0 and path.exists()
    reference = models["token"].to_layoutlmv3().eval() if baseline else models["token"]
    check_parity(path, reference, processor, ["logits"])
    metadata = onnx_metadata(path)
    assert metadata["task"] == "token-classification"
    architecture = "LayoutLMv3ForTokenClassification" if baseline else "AETNetForTokenClassification"
    assert metadata["architecture"] == architecture
    if not baseline:
        # The aligners are part of the exported graph: the baseline's outputs differ from AETNet's.
        inputs = random_inputs(models["token"], processor, 2, 11, 0)
        with torch.no_grad():
            difference = models["token"](**inputs).logits - models["token"].to_layoutlmv3().eval()(**inputs).logits
        assert difference.abs().max() > 1e-3


def test_question_answering_export_names_both_logits(checkpoints, exports):
    _, models, processor = checkpoints
    result = exports["qa"]
    assert result.task == "question-answering" and not result.baseline
    check_parity(result.path, models["qa"], processor, ["start_logits", "end_logits"])


def test_predict_runs_the_onnx_file_with_the_same_decoding(checkpoints, exports, tmp_path, forms):
    root, _, _ = checkpoints
    onnx_file = exports["token"][1]

    pages = [
        {"image": form["image"], "words": form["words"], "boxes": form["bboxes"], "boxes_normalized": True}
        for form in forms
    ]
    torch_predictor = DocumentPredictor.from_pretrained(root / "token", device="cpu", max_length=40, stride=8)
    onnx_predictor = DocumentPredictor.from_pretrained(root / "token", onnx=onnx_file, max_length=40, stride=8)
    assert isinstance(onnx_predictor.model, ONNXDocumentModel)
    for expected, got in zip(torch_predictor(pages), onnx_predictor(pages)):
        assert [w["label"] for w in got["words"]] == [w["label"] for w in expected["words"]]
        assert [w["confidence"] for w in got["words"]] == pytest.approx(
            [w["confidence"] for w in expected["words"]], abs=1e-4
        )
        assert got["entities"] == expected["entities"]

    # The command line: `--onnx FILE`, or the .onnx file as MODEL next to the checkpoint's config and processor.
    forms[0]["image"].save(tmp_path / "form.png")
    words = {"words": forms[0]["words"], "boxes": forms[0]["bboxes"], "boxes_normalized": True}
    (tmp_path / "words.json").write_text(json.dumps(words))
    common = [str(tmp_path / "form.png"), "--words-json", str(tmp_path / "words.json"), "--no-progress"]
    assert main(["predict", str(root / "token"), *common, "-o", str(tmp_path / "torch")]) == 0
    assert main(["predict", str(root / "token"), *common, "--onnx", str(onnx_file), "-o", str(tmp_path / "a")]) == 0
    (root / "token" / "model.onnx").write_bytes(onnx_file.read_bytes())
    assert main(["predict", str(root / "token" / "model.onnx"), *common, "-o", str(tmp_path / "b")]) == 0
    expected = json.loads((tmp_path / "torch" / "form.json").read_text())
    for folder in ("a", "b"):
        got = json.loads((tmp_path / folder / "form.json").read_text())
        assert [w["label"] for w in got["words"]] == [w["label"] for w in expected["words"]]
    assert main(["predict", str(root / "token"), *common, "--onnx", str(onnx_file), "--fp16"]) == 2


def test_onnx_file_of_another_head_is_refused(checkpoints, exports):
    _, models, _ = checkpoints
    with pytest.raises(ValueError, match="start_logits"):
        ONNXDocumentModel(exports["qa"].path, models["token"].config)
