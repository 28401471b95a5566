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
"""End-to-end test of examples/run_funsd.py: a 2-step run on a few synthetic forms, then reloading what it saved."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_example, save_tiny_encoders
from PIL import Image
from transformers import AutoModel, AutoModelForTokenClassification, AutoProcessor, LayoutLMv3Model, RobertaModel

import aetnet  # noqa: F401  (registers the Auto classes)
from aetnet import AETNetForTokenClassification, AETNetProcessor
from aetnet.data import FUNSD_LABELS, load_synthetic_funsd
from aetnet.windowing import default_stride


SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_funsd.py"
NUM_TRAIN, NUM_TEST, SEED, MAX_LENGTH = 4, 2, 7, 96
RUN_STDERR: list[str] = []  # what the shared run wrote to stderr


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run_funsd")
    command = [
        sys.executable,
        str(SCRIPT),
        "--output_dir",
        str(output_dir),
        "--synthetic_train_size",
        str(NUM_TRAIN),
        "--synthetic_test_size",
        str(NUM_TEST),
        "--seed",
        str(SEED),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--logging_steps",
        "1",
        # Short windows, so that the forms are split and merged back; no --doc_stride: the default must fit them
        # (a fixed 128 does not fit in 96-token windows).
        "--max_seq_length",
        str(MAX_LENGTH),
        "--disable_tqdm",
        "True",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=offline_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    RUN_STDERR.append(result.stderr)
    return output_dir, result.stdout


def test_a_cpu_run_logs_no_set_up_noise(run):
    """The process summary is INFO (hidden at the default level) and a CPU run does not pin memory (the DataLoader
    warned once per loop about it)."""
    _, stdout = run
    printed = stdout + RUN_STDERR[-1]
    assert "Process rank" not in printed
    assert "pin_memory" not in printed


def test_default_doc_stride_is_the_cli_s():
    from types import SimpleNamespace

    from utils_aetnet_data import window_kwargs

    arguments = SimpleNamespace(max_seq_length=128, doc_stride=None, pad_to_max_length=False)
    assert window_kwargs(arguments)["stride"] == 32 == default_stride(128)
    long_windows = SimpleNamespace(max_seq_length=512, doc_stride=None, pad_to_max_length=False)
    assert window_kwargs(long_windows)["stride"] == 128
    assert window_kwargs(SimpleNamespace(max_seq_length=128, doc_stride=7, pad_to_max_length=False))["stride"] == 7
    single = window_kwargs(SimpleNamespace(max_seq_length=128, pad_to_max_length=True), overflow=False)
    assert single["stride"] == 0 and single["return_overflowing_tokens"] is False


def test_push_to_hub_offline_exits_with_one_line_before_training(tmp_path):
    output_dir = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--output_dir", str(output_dir), "--push_to_hub", "--max_steps", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env=offline_env(), timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: --push_to_hub") and "HF_HUB_OFFLINE" in lines[0]
    assert not (output_dir / "config.json").exists()


def test_hub_access_problem_names_the_missing_token_and_the_unreachable_hub(monkeypatch):
    import huggingface_hub
    from hub_access import hub_access_problem
    from huggingface_hub import constants
    from transformers import TrainingArguments

    arguments = TrainingArguments("unused", push_to_hub=True)
    assert hub_access_problem(TrainingArguments("unused")) is None
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert "token" in hub_access_problem(arguments)
    arguments.hub_token = "hf_test"
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in hub_access_problem(arguments, timeout=2)


def test_prints_metrics_and_the_save_path(run):
    output_dir, stdout = run
    match = re.search(r"precision = ([0-9.]+)\s+recall = ([0-9.]+)\s+f1 = ([0-9.]+)", stdout)
    assert match, stdout[-2000:]
    precision, recall, f1 = (float(value) for value in match.groups())
    assert all(0.0 <= value <= 1.0 for value in (precision, recall, f1))
    eval_results = json.loads((output_dir / "eval_results.json").read_text())
    assert eval_results["eval_f1"] == pytest.approx(f1, abs=1e-4)
    for name in ("task", "ditc", "imc", "glitc", "pita"):
        assert f"eval_loss_{name}" in eval_results
    assert f"Model saved to {output_dir}" in stdout
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss_ditc" in entry] == [1, 2]
    with Image.open(output_dir / "loss_curves.png") as curves:
        assert curves.size[0] > 300 and curves.size[1] > 200


def test_writes_one_prediction_per_word(run):
    output_dir, _ = run
    records = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    test_split = load_synthetic_funsd(NUM_TRAIN, NUM_TEST, seed=SEED)["test"]
    assert [record["id"] for record in records] == test_split["id"]
    for record, example in zip(records, test_split):
        assert record["words"] == example["words"]
        assert record["labels"] == [FUNSD_LABELS[tag] for tag in example["ner_tags"]]
        assert len(record["predicted_labels"]) == len(record["words"])
        assert set(record["predicted_labels"]) <= set(FUNSD_LABELS)


def test_output_reloads_and_reproduces_the_predictions(run):
    output_dir, _ = run
    model = AutoModelForTokenClassification.from_pretrained(output_dir).eval()
    processor = AutoProcessor.from_pretrained(output_dir)
    assert isinstance(model, AETNetForTokenClassification) and isinstance(processor, AETNetProcessor)
    assert list(model.config.id2label.values()) == FUNSD_LABELS
    assert (output_dir / "README.md").read_text().count("eval") > 0

    document = load_synthetic_funsd(NUM_TRAIN, NUM_TEST, seed=SEED)["test"][0]
    encoding = processor(
        document["image"],
        document["words"],
        boxes=document["bboxes"],
        boxes_normalized=True,
        max_length=MAX_LENGTH,
        stride=default_stride(MAX_LENGTH),
        return_tensors="pt",
    )
    assert encoding["input_ids"].shape[0] > 1, "the form should need several windows"
    with torch.no_grad():
        logits = model(**{name: encoding[name] for name in processor.model_input_names}).logits
    word_probabilities = processor.merge_window_predictions(
        logits, encoding["word_index"], encoding["overflow_to_sample_mapping"]
    )[0]
    predicted = [model.config.id2label[i] for i in word_probabilities.argmax(-1).tolist()]
    record = json.loads((output_dir / "predictions.jsonl").read_text().splitlines()[0])
    assert predicted == record["predicted_labels"]


def make_encoders(root: Path) -> list[str]:
    """Tiny local LayoutLMv3 (with tokenizer and image processor), ViT and RoBERTa checkpoints."""
    words = [word for doc in load_synthetic_funsd(NUM_TRAIN, 1, seed=SEED)["train"]["words"] for word in doc]
    return save_tiny_encoders(root, words)


def run_from_encoders(tmp_path: Path, *options: str) -> tuple[list[str], Path, dict, object]:
    """`run_funsd.py` in-process (a second interpreter start costs more than the run) from tiny encoder checkpoints,
    one step on synthetic forms: the checkpoints' paths, the output folder, the metrics and the script's module."""
    encoders = make_encoders(tmp_path)
    output_dir = tmp_path / "out"
    flags = ("--layout_model", "--vision_model", "--text_model")
    argv = [str(SCRIPT), "--output_dir", str(output_dir), *(x for pair in zip(flags, encoders) for x in pair)]
    argv += ["--synthetic_train_size", str(NUM_TRAIN), "--synthetic_test_size", "1", "--seed", str(SEED)]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "2", "--do_predict", "False"]
    argv += ["--disable_tqdm", "True", "--dataloader_pin_memory", "False", *options]
    run_funsd = load_example("run_funsd")
    sys_argv, threads = sys.argv, torch.get_num_threads()  # the script sets the torch thread count
    sys.argv = argv
    try:
        metrics = run_funsd.main()
    finally:
        sys.argv = sys_argv
        torch.set_num_threads(threads)
    return encoders, output_dir, metrics, run_funsd


def test_starts_from_three_encoder_checkpoints(tmp_path):
    (layout, vision, text), output_dir, metrics, _ = run_from_encoders(tmp_path)
    assert 0.0 <= metrics["eval_f1"] <= 1.0 and not (output_dir / "predictions.jsonl").exists()
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    assert model.config.text_config.num_hidden_layers == 1 and model.config.num_labels == len(FUNSD_LABELS)
    # Stock LayoutLMv3 never trains its relative-position tables: equal to the checkpoint's means they were loaded.
    loaded = LayoutLMv3Model.from_pretrained(layout).encoder.rel_pos_bias.weight
    torch.testing.assert_close(model.aetnet.layoutlmv3.encoder.rel_pos_bias.weight, loaded)
    # One warm-up step at most moves the aligners by the learning rate; a fresh initialisation would not be close.
    for name, path in (("vision_model", vision), ("text_model", text)):
        fresh = AutoModel.from_pretrained(path).embeddings
        trained = getattr(model.aetnet, name).embeddings.state_dict()
        torch.testing.assert_close(trained, fresh.state_dict(), atol=5e-3, rtol=0)


def test_output_loads_with_remote_code_where_aetnet_is_not_importable(run):
    output_dir, _ = run
    code = f"""
import sys
sys.modules["aetnet"] = None  # any `import aetnet` now raises ImportError
from transformers import (
    AutoModel,
    AutoModelForTokenClassification,
    AutoProcessor,
    LayoutLMv3Config,
    LayoutLMv3ImageProcessorPil,
    LayoutLMv3Model,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
)
model = AutoModelForTokenClassification.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
print(type(model).__module__, type(model).__name__, type(processor).__module__, type(processor).__name__)
"""
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, env=offline_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    model_module, model_class, processor_module, processor_class = result.stdout.split()[-4:]
    assert model_class == "AETNetForTokenClassification" and processor_class == "AETNetProcessor"
    assert model_module.startswith("transformers_modules.") and processor_module.startswith("transformers_modules.")


def test_saved_model_runs_as_a_pipeline_where_aetnet_is_not_importable(run, tmp_path):
    """The script's `save_custom_pipelines` names the pipeline in config.json and ships its code, so that
    `pipeline(model=..., trust_remote_code=True)` finds the task and runs it without the package."""
    output_dir, _ = run
    config = json.loads((output_dir / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "document-token-classification": {
            "impl": "pipeline_aetnet.DocumentTokenClassificationPipeline",
            "pt": ["AutoModelForTokenClassification"],
            "type": "multimodal",
        }
    }
    assert (output_dir / "pipeline_aetnet.py").exists() and (output_dir / "page_predictor.py").exists()
    document = load_synthetic_funsd(NUM_TRAIN, NUM_TEST, seed=SEED)["test"][0]
    document["image"].save(tmp_path / "page.png")
    page = {"words": document["words"], "boxes": document["bboxes"], "boxes_normalized": True}
    (tmp_path / "page.json").write_text(json.dumps(page))
    code = f"""
import json, sys
sys.modules["aetnet"] = None
from transformers import pipeline
labeller = pipeline(model={str(output_dir)!r}, trust_remote_code=True, device="cpu")
page = {{"image": {str(tmp_path / "page.png")!r}, **json.load(open({str(tmp_path / "page.json")!r}))}}
results = labeller([page, page], batch_size=2, max_length={MAX_LENGTH})
print(type(labeller).__name__, len(results), json.dumps([w["label"] for w in results[0]["words"]]))
"""
    env = {**offline_env(), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    name, count, labels = result.stdout.strip().splitlines()[-1].split(" ", 2)
    record = json.loads((output_dir / "predictions.jsonl").read_text().splitlines()[0])
    assert name == "DocumentTokenClassificationPipeline" and count == "2"
    assert json.loads(labels) == record["predicted_labels"]


def test_random_encoders_keep_only_the_named_checkpoints_weights(tmp_path, monkeypatch):
    """`--random_encoders vision text`: the pre-trained LayoutLMv3's weights, random aligners of the same sizes
    (learning rate 0: nothing moves); without encoder checkpoints the option is an error that names it. A new
    model's `--image_feature_pooling` reaches its config."""
    (layout, _, text), output_dir, _, run_funsd = run_from_encoders(
        tmp_path, "--random_encoders", "vision", "text", "--learning_rate", "0", "--image_feature_pooling", "mean"
    )
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    assert model.config.image_feature_pooling == "mean"

    def same(module, source):
        return all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), source.state_dict().values()))

    assert same(model.aetnet.layoutlmv3.encoder, LayoutLMv3Model.from_pretrained(layout).encoder)
    assert not same(model.aetnet.text_model, RobertaModel.from_pretrained(text, add_pooling_layer=False))

    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--output_dir", str(tmp_path / "x"), "--random_encoders", "text"])
    with pytest.raises(ValueError, match="--random_encoders text applies to --layout_model"):
        run_funsd.main()
