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
"""Tests of the offline seqeval metric, its flattening and the token-classification `compute_metrics` helper."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aetnet.data import FUNSD_LABELS
from aetnet.metrics import SEQEVAL_METRIC_PATH, compute_token_classification_metrics, load_seqeval, seqeval_summary


# Gold entities: QUESTION x2, ANSWER, HEADER (4). Predicted: the first QUESTION and the HEADER (right), an ANSWER
# with a wrong span (3 predicted, 2 right). Precision 2/3, recall 2/4, F1 4/7; 7 of 9 tokens right.
REFERENCES = [["B-QUESTION", "I-QUESTION", "O", "B-ANSWER", "I-ANSWER"], ["B-HEADER", "O", "B-QUESTION", "O"]]
PREDICTIONS = [["B-QUESTION", "I-QUESTION", "O", "B-ANSWER", "O"], ["B-HEADER", "O", "O", "O"]]
EXPECTED = {
    "overall_precision": 2 / 3,
    "overall_recall": 1 / 2,
    "overall_f1": 4 / 7,
    "overall_accuracy": 7 / 9,
    "QUESTION": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "number": 2},
    "ANSWER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1},
    "HEADER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1},
}


def assert_scores_equal(scores: dict, expected: dict) -> None:
    assert set(scores) == set(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert scores[key] == pytest.approx(value), key
        else:
            assert scores[key] == pytest.approx(value), key


@pytest.fixture(scope="module")
def seqeval():
    return load_seqeval()


def test_metric_script_ships_in_the_package():
    path = Path(SEQEVAL_METRIC_PATH)
    assert path.is_file() and path.parent.name == "metrics" and path.suffix == ".py"


def test_perfect_predictions(seqeval):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    scores = seqeval.compute(predictions=REFERENCES, references=REFERENCES)
    assert scores["overall_f1"] == scores["overall_precision"] == scores["overall_recall"] == 1.0
    assert scores["overall_accuracy"] == 1.0
    assert scores["QUESTION"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 2}


def test_hand_made_case(seqeval):
    assert_scores_equal(seqeval.compute(predictions=PREDICTIONS, references=REFERENCES, zero_division=0), EXPECTED)


def test_batched_inputs_and_strict_mode(seqeval):
    for prediction, reference in zip(PREDICTIONS, REFERENCES):
        seqeval.add(prediction=prediction, reference=reference)
    assert seqeval.compute(zero_division=0)["overall_f1"] == pytest.approx(4 / 7)
    # In strict IOB2 mode an entity that starts with I- is not an entity at all; the lenient default accepts it.
    lenient = seqeval.compute(predictions=[["I-ANSWER", "O"]], references=[["B-ANSWER", "O"]])
    strict = seqeval.compute(
        predictions=[["I-ANSWER", "O"]], references=[["B-ANSWER", "O"]], mode="strict", scheme="IOB2", zero_division=0
    )
    assert lenient["overall_f1"] == 1.0 and strict["overall_f1"] == 0.0
    with pytest.raises(ValueError, match="'IOB9'"):
        seqeval.compute(predictions=REFERENCES, references=REFERENCES, mode="strict", scheme="IOB9")


def test_loads_offline_from_an_empty_cache(tmp_path):
    # Only `evaluate` is imported in the child, as `load_seqeval` does, to keep the test fast.
    code = (
        f"import json, evaluate; metric = evaluate.load({SEQEVAL_METRIC_PATH!r}); "
        f"scores = metric.compute(predictions={PREDICTIONS!r}, references={REFERENCES!r}, zero_division=0); "
        "print(json.dumps(scores))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_scores_equal(json.loads(result.stdout.strip().splitlines()[-1]), EXPECTED)
    assert (tmp_path / "hf_home" / "modules").is_dir()


def to_ids(tags: list[list[str]], length: int = 7) -> np.ndarray:
    """Label ids padded with -100 to `length`, as a token-classification collator does."""
    ids = np.full((len(tags), length), -100)
    for row, sequence in enumerate(tags):
        ids[row, : len(sequence)] = [FUNSD_LABELS.index(tag) for tag in sequence]
    return ids


def test_compute_token_classification_metrics_from_logits():
    labels = to_ids(REFERENCES)
    predicted_ids = to_ids(PREDICTIONS)
    predicted_ids[predicted_ids == -100] = FUNSD_LABELS.index("B-HEADER")  # garbage at ignored positions
    logits = np.eye(len(FUNSD_LABELS))[predicted_ids] + 0.01
    expected = {"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7, "accuracy": 7 / 9}
    assert compute_token_classification_metrics(logits, labels, FUNSD_LABELS) == pytest.approx(expected)
    assert compute_token_classification_metrics(predicted_ids.tolist(), labels, FUNSD_LABELS) == pytest.approx(expected)
    detailed = compute_token_classification_metrics(
        predicted_ids, labels, FUNSD_LABELS, return_entity_level_metrics=True
    )
    assert detailed["QUESTION_recall"] == 0.5 and detailed["HEADER_f1"] == 1.0 and detailed["ANSWER_number"] == 1


def test_seqeval_summary_flattens_the_metric_output_as_compute_metrics_returns_it():
    """The one flattening of the seqeval output, shared by the examples' word-level scores and
    `compute_token_classification_metrics`."""
    results = load_seqeval().compute(predictions=PREDICTIONS, references=REFERENCES, zero_division=0)
    assert seqeval_summary(results) == pytest.approx(
        {"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7, "accuracy": 7 / 9}
    )
    detailed = seqeval_summary(results, return_entity_level_metrics=True)
    assert detailed["QUESTION_recall"] == 0.5 and detailed["HEADER_f1"] == 1.0 and detailed["ANSWER_number"] == 1
    from_ids = compute_token_classification_metrics(
        to_ids(PREDICTIONS), to_ids(REFERENCES), FUNSD_LABELS, return_entity_level_metrics=True
    )
    assert detailed == pytest.approx(from_ids)


def test_compute_token_classification_metrics_errors():
    labels = to_ids(REFERENCES)
    with pytest.raises(ValueError, match=r"shape"):
        compute_token_classification_metrics(labels[:, :3], labels, FUNSD_LABELS)
    predictions = labels.copy()
    predictions[1, 2] = 7
    with pytest.raises(ValueError, match=r"`predictions` at index \(1, 2\) is 7, outside \[0, 7\)"):
        compute_token_classification_metrics(predictions, labels, FUNSD_LABELS)
