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
"""Relation extraction (issue 16): pair construction, the head on AETNet and LayoutLMv3, the FUNSD link reader,
entity-preserving windows, decoding, drawing, save / reload / remote code and a 2-step run of the example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from PIL import Image

import aetnet  # noqa: F401  (registers the classes for remote code)
from aetnet import AETNetForRelationExtraction, LayoutLMv3ForRelationExtraction
from aetnet.data import ENTITY_LABELS, load_funsd_relations
from aetnet.data.funsd_relations import relations_from_bio
from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer
from aetnet.modeling_aetnet_relation import RelationExtractionHead
from aetnet.relation_pairs import relation_candidates
from aetnet.relations import (
    RelationDataCollator,
    WindowStatistics,
    decode_links,
    links_to_json,
    merge_page_scores,
    relation_scores,
    relation_windows,
)
from aetnet.visualization import draw_relations
from aetnet.visualization.relations import ARROW_COLOR, arrow_segment


FUNSD = Path(__file__).resolve().parents[2] / "shared" / "data" / "funsd"
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_funsd_re.py"
HEADER, QUESTION, ANSWER, OTHER = range(4)


class RelationExtractionModelTester:
    """Tiny AETNet configs and two windows: 5 entities of one or two tokens in window 0, 3 in window 1."""

    batch_size, seq_length, image_size = 2, 12, 16

    def get_config(self, **kwargs):
        return tiny_config(num_labels=2, relation_negatives_per_head=1, **kwargs)

    def prepare_inputs(self, with_relations: bool = True) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(5, 99, (self.batch_size, self.seq_length), generator=generator)
        input_ids[:, 0], input_ids[:, -1] = 0, 2
        corner = torch.randint(0, 900, (self.batch_size, self.seq_length, 2), generator=generator)
        inputs = {
            "input_ids": input_ids,
            "bbox": torch.cat([corner, corner + 50], dim=-1),
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(self.batch_size, 3, self.image_size, self.image_size, generator=generator),
            "entity_spans": torch.tensor(
                [[[1, 3], [3, 4], [4, 6], [6, 7], [7, 8]], [[1, 2], [2, 4], [4, 5], [-1, -1], [-1, -1]]]
            ),
            "entity_labels": torch.tensor(
                [[QUESTION, ANSWER, QUESTION, ANSWER, HEADER], [QUESTION, ANSWER, OTHER, -100, -100]]
            ),
        }
        if with_relations:
            inputs["relations"] = torch.tensor([[[0, 1], [2, 3]], [[0, 1], [-1, -1]]])
        return inputs


@pytest.fixture
def tester():
    return RelationExtractionModelTester()


# ---- Pair construction ----


def test_candidates_are_question_answer_pairs_with_gold_labels():
    labels = torch.tensor([[QUESTION, ANSWER, QUESTION, ANSWER, HEADER]])
    pairs, targets = relation_candidates(labels, [(QUESTION, ANSWER)], torch.tensor([[[0, 1]]]))
    assert pairs.tolist() == [[0, 0, 1], [0, 0, 3], [0, 2, 1], [0, 2, 3]]
    assert targets.tolist() == [1, 0, 0, 0]
    pairs, targets = relation_candidates(labels, [(QUESTION, ANSWER)])
    assert len(pairs) == 4 and targets is None


def test_negative_sampling_keeps_every_link_and_at_most_k_negatives_per_head():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (3, 60), generator=generator)
    heads = [(labels[b] == QUESTION).nonzero().flatten().tolist() for b in range(3)]
    tails = [(labels[b] == ANSWER).nonzero().flatten().tolist() for b in range(3)]
    links = [[[h, t] for h, t in zip(heads[b], tails[b])][:7] for b in range(3)]
    relations = torch.full((3, 7, 2), -1)
    for b, page in enumerate(links):
        relations[b, : len(page)] = torch.tensor(page)
    k = 3
    pairs, targets = relation_candidates(labels, [(QUESTION, ANSWER)], relations, k, generator)
    kept = {(b, h, t): y for (b, h, t), y in zip(pairs.tolist(), targets.tolist())}
    assert {(b, h, t) for b, page in enumerate(links) for h, t in page} == {p for p, y in kept.items() if y == 1}
    for b in range(3):
        for head in heads[b]:
            negatives = [p for p, y in kept.items() if p[:2] == (b, head) and y == 0]
            available = len(tails[b]) - sum(1 for h, _ in links[b] if h == head)
            assert len(negatives) == min(k, available)
    assert len(pairs) <= sum(map(len, links)) + k * sum(map(len, heads))


def test_pages_without_links_or_without_answers():
    labels = torch.tensor([[QUESTION, ANSWER, ANSWER, QUESTION], [QUESTION, HEADER, -100, -100]])
    no_links = torch.full((2, 1, 2), -1)
    pairs, targets = relation_candidates(labels, [(QUESTION, ANSWER)], no_links, 1, torch.Generator().manual_seed(0))
    assert targets.tolist() == [0, 0] and {tuple(p[:2]) for p in pairs.tolist()} == {(0, 0), (0, 3)}
    head = RelationExtractionHead(tiny_config(), hidden_size=8, dropout=0.0).train()
    outputs = head(
        torch.randn(2, 6, 8),
        torch.tensor([[[0, 1]] * 4, [[0, 1], [1, 2], [0, 0], [0, 0]]]),
        labels[[1, 1]],
        torch.full((2, 1, 2), -1),
        bbox=torch.zeros(2, 6, 4, dtype=torch.long),
    )
    assert len(outputs["pairs"]) == 0 and outputs["task_loss"].item() == 0.0
    outputs["task_loss"].backward()  # a batch without candidates still gives a usable loss


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i["entity_labels"].__setitem__((0, 0), 7), r"`entity_labels`\[0, 0\] = 7"),
        (lambda i: i["entity_spans"].__setitem__((1, 1), torch.tensor([2, 40])), r"`entity_spans`\[1, 1\] = \[2, 40"),
        (lambda i: i["relations"].__setitem__((1, 1), torch.tensor([0, 3])), r"`relations`\[1, 1\] = \[0, 3\]"),
        (lambda i: i["relations"].__setitem__((0, 1), torch.tensor([4, 3])), "not one of the relation types"),
    ],
)
def test_bad_inputs_name_the_argument_and_the_value(tester, change, message):
    model = AETNetForRelationExtraction(tester.get_config()).eval()
    inputs = tester.prepare_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


# ---- The models ----


def test_training_forward_adds_the_alignment_objectives(tester):
    model = AETNetForRelationExtraction(tester.get_config()).train()
    outputs = model(**tester.prepare_inputs(), relation_generator=torch.Generator().manual_seed(0))
    assert set(outputs.alignment_losses) == {"ditc", "imc", "glitc", "pita"}
    torch.testing.assert_close(outputs.loss, outputs.task_loss + sum(outputs.alignment_losses.values()))
    # window 0: links (0,1), (2,3) plus one negative per question; window 1: link (0,1), no negative left.
    assert outputs.pair_labels.tolist() == [1, 0, 0, 1, 1] and outputs.logits.shape == (5, 2)
    outputs.loss.backward()
    assert model.relation_head.bilinear.weight.grad.abs().sum() > 0


def test_eval_scores_every_candidate_without_gold(tester):
    model = AETNetForRelationExtraction(tester.get_config()).eval()
    with torch.no_grad():
        outputs = model(**tester.prepare_inputs(with_relations=False))
    assert outputs.loss is None and outputs.task_loss is None and outputs.alignment_losses is None
    assert outputs.pairs.tolist() == [[0, 0, 1], [0, 0, 3], [0, 2, 1], [0, 2, 3], [1, 0, 1]]
    assert ((outputs.scores > 0) & (outputs.scores < 1)).all()


def test_mean_pooling_of_one_token_entities_equals_first_token(tester):
    inputs = tester.prepare_inputs(with_relations=False)
    one_token_spans = [[[1, 2], [3, 4], [4, 5], [6, 7], [7, 8]], [[1, 2], [2, 3], [4, 5], [-1, -1], [-1, -1]]]
    inputs["entity_spans"] = torch.tensor(one_token_spans)
    first = AETNetForRelationExtraction(tester.get_config()).eval()
    mean = AETNetForRelationExtraction(tester.get_config(relation_pooling="mean")).eval()
    mean.load_state_dict(first.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(first(**inputs).logits, mean(**inputs).logits)


def test_layoutlmv3_baseline_shares_the_head_and_the_start(tester):
    model = AETNetForRelationExtraction(tester.get_config(fusion_injection="none")).eval()
    baseline = model.to_layoutlmv3().eval()
    assert isinstance(baseline, LayoutLMv3ForRelationExtraction)
    assert type(baseline.relation_head) is type(model.relation_head) is RelationExtractionHead
    inputs = tester.prepare_inputs(with_relations=False)
    with torch.no_grad():
        torch.testing.assert_close(baseline(**inputs).logits, model(**inputs).logits)


def test_save_reload_and_remote_code(tester, tmp_path):
    model = AETNetForRelationExtraction(tester.get_config()).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_aetnet_relation.AETNetForRelationExtraction"
    assert config["entity_labels"] == ENTITY_LABELS and config["relation_types"] == [["QUESTION", "ANSWER"]]
    assert (checkpoint / "modeling_aetnet_relation.py").exists() and (checkpoint / "modeling_aetnet_base.py").exists()
    inputs = tester.prepare_inputs(with_relations=False)
    with torch.no_grad():
        expected = model(**inputs).scores
        reloaded = AETNetForRelationExtraction.from_pretrained(checkpoint).eval()
        torch.testing.assert_close(reloaded(**inputs).scores, expected)
    torch.save({"inputs": inputs, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["aetnet"] = None  # `import aetnet` fails, as where the package is not installed
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            scores = model(**io["inputs"]).scores
        assert type(model).__name__ == "AETNetForRelationExtraction", type(model)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        torch.testing.assert_close(scores, io["expected"])  # to float rounding: two processes may schedule a matmul differently
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


# ---- Data: the FUNSD reader, BIO links, windows ----


@pytest.fixture(scope="module")
def funsd():
    return load_funsd_relations(FUNSD)


def test_reader_counts_add_up_and_match_the_release(funsd):
    _, stats = funsd
    for split, listed_links in (("train", 4236), ("test", 1076)):
        s = stats[split]
        assert s.link_entries == 2 * listed_links  # the README's count: every link is listed on both entities
        assert s.link_entries == s.self_links + s.dangling_links + s.duplicate_entries + s.links
        assert s.links == s.relations + s.links_to_entities_without_words + sum(s.other_type_links.values())
    assert (stats["train"].self_links, stats["train"].links, stats["train"].relations) == (2, 4229, 3049)
    assert (stats["test"].links, stats["test"].relations, stats["test"].other_type_links["header->question"]) == (
        1064,
        823,
        220,
    )


@pytest.mark.parametrize(
    "split, folder, index",
    [
        ("train", "training_data", 0),
        ("train", "training_data", 7),
        ("test", "testing_data", 0),
        ("test", "testing_data", 3),
    ],
)
def test_reader_links_match_the_annotation_file(funsd, split, folder, index):
    pages, _ = funsd
    page = pages[split][index]
    form = json.loads((FUNSD / folder / "annotations" / f"{page['id']}.json").read_text())["form"]
    kept = [e for e in form if any(w["text"].strip() for w in e["words"])]
    by_id = {e["id"]: e for e in form}
    expected = {
        tuple(sorted((a, b), key=lambda i: by_id[i]["label"] != "question"))
        for e in form
        for a, b in e["linking"]
        if {by_id[a]["label"], by_id[b]["label"]} == {"question", "answer"}
        and a in {k["id"] for k in kept}
        and b in {k["id"] for k in kept}
    }
    ids = [e["id"] for e in kept]
    assert {(ids[h], ids[t]) for h, t in page["relations"]} == expected
    assert [ENTITY_LABELS[label] for label in page["entity_labels"]] == [e["label"].upper() for e in kept]
    for (start, end), entity in zip(page["entity_word_spans"], kept):
        assert page["words"][start:end] == [w["text"].strip() for w in entity["words"] if w["text"].strip()]


def test_links_from_bio_tags():
    tags = ["B-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "O", "B-QUESTION", "B-QUESTION", "B-ANSWER"]
    tags.append("I-ANSWER")
    spans, labels, relations = relations_from_bio(tags)
    assert spans == [[0, 1], [1, 3], [3, 4], [5, 6], [6, 7], [7, 9]]
    assert labels == ["HEADER", "QUESTION", "ANSWER", "QUESTION", "QUESTION", "ANSWER"]
    assert relations == [[1, 2], [4, 5]]


@pytest.fixture(scope="module")
def tokenizer():
    return train_layoutlmv3_tokenizer(["alpha beta gamma delta epsilon zeta eta theta"] * 4, vocab_size=300)


def test_windows_keep_entities_whole_and_count_lost_links(tokenizer):
    words = ["alphabetagamma", "delta", "epsilonzeta", "eta", "thetaalpha", "beta", "gamma", "deltaepsilon"]
    boxes = [[10, 100 * i, 50, 100 * i + 20] for i in range(len(words))]
    spans, labels = [[0, 2], [2, 3], [3, 5], [5, 6], [6, 8]], [QUESTION, ANSWER, QUESTION, ANSWER, OTHER]
    relations = [[0, 1], [2, 3], [0, 3]]

    def word_ids(word):
        return tokenizer([word], boxes=[[0, 0, 0, 0]], add_special_tokens=False)["input_ids"]

    tokens = [len(word_ids(w)) for w in words]
    entity_tokens = [sum(tokens[s:e]) for s, e in spans]
    stats = WindowStatistics()
    windows = relation_windows(tokenizer, words, boxes, spans, labels, relations, sum(entity_tokens[:2]) + 2, stats)
    assert len(windows) > 1 and stats.pages_split == 1 and stats.entities_truncated == 0
    for window in windows:
        assert len(window["input_ids"]) <= sum(entity_tokens[:2]) + 2
        for (start, end), entity in zip(window["entity_spans"], window["entity_index"]):
            assert end - start == entity_tokens[entity]  # never cut
            first_word = spans[entity][0]
            assert window["input_ids"][start] == word_ids(words[first_word])[0]
    covered = {tuple(w["entity_index"][i] for i in link) for w in windows for link in w["relations"]}
    assert covered | {(0, 3)} == {(0, 1), (2, 3), (0, 3)} and stats.links_in_no_window == 3 - len(covered)
    single = relation_windows(tokenizer, words, boxes, spans, labels, relations, 512)
    assert len(single) == 1 and sorted(map(tuple, single[0]["relations"])) == [(0, 1), (0, 3), (2, 3)]


def test_collator_pads_the_relation_inputs(tokenizer):
    features = [
        {
            "input_ids": [0, 5, 2],
            "bbox": [[0] * 4] * 3,
            "attention_mask": [1] * 3,
            "entity_spans": [[1, 2]],
            "entity_labels": [QUESTION],
            "relations": [],
            "entity_index": [4],
        },
        {
            "input_ids": [0, 5, 6, 2],
            "bbox": [[0] * 4] * 4,
            "attention_mask": [1] * 4,
            "entity_spans": [[1, 2], [2, 3]],
            "entity_labels": [QUESTION, ANSWER],
            "relations": [[0, 1]],
            "entity_index": [0, 1],
        },
    ]
    batch = RelationDataCollator(tokenizer=tokenizer)(features)
    assert "entity_index" not in batch
    assert batch["entity_spans"].tolist() == [[[1, 2], [-1, -1]], [[1, 2], [2, 3]]]
    assert batch["entity_labels"].tolist() == [[QUESTION, -100], [QUESTION, ANSWER]]
    assert batch["relations"].tolist() == [[[-1, -1]], [[0, 1]]]
    kept = RelationDataCollator(tokenizer=tokenizer, keep_keys=("entity_index",))(features)
    assert kept["entity_index"].tolist() == [[4, -1], [0, 1]]


# ---- Decoding and drawing ----


def test_decoding_merges_windows_thresholds_and_scores():
    pages = merge_page_scores([{(0, 1): 0.4, (2, 1): 0.7}, {(0, 1): 0.9}, {(0, 1): 0.2}], [0, 0, 1], 2)
    assert pages == [{(0, 1): 0.9, (2, 1): 0.7}, {(0, 1): 0.2}]
    assert decode_links(pages[0]) == [(0, 1, 0.9), (2, 1, 0.7)]
    assert decode_links(pages[0], one_head_per_tail=True) == [(0, 1, 0.9)]
    assert decode_links(pages[1]) == []
    scores = relation_scores([[(0, 1, 0.9), (2, 1, 0.7)], []], [[(0, 1)], [(0, 1), (3, 4)]])
    assert scores["precision"] == 0.5 and scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4) and scores["true_positives"] == 1
    entities = [{"text": "Date:", "box": [0, 0, 5, 5]}, {"text": "12/03/1998", "box": [9, 0, 20, 5]}]
    assert links_to_json([(0, 1, 0.91234)], entities) == [
        {
            "head": 0,
            "tail": 1,
            "question": "Date:",
            "answer": "12/03/1998",
            "question_box": [0, 0, 5, 5],
            "answer_box": [9, 0, 20, 5],
            "score": 0.9123,
        }
    ]


def test_arrows_join_the_linked_boxes_only():
    page = Image.new("RGB", (400, 300), "white")
    entities = [
        {"box": [20, 20, 100, 50], "label": "QUESTION"},
        {"box": [250, 20, 380, 50], "label": "ANSWER"},
        {"box": [20, 200, 100, 230], "label": "QUESTION"},
        {"box": [250, 200, 380, 230], "label": "ANSWER"},
    ]
    drawn = draw_relations(page, entities, [{"head": 0, "tail": 1, "score": 0.9}])
    assert drawn.size == page.size and drawn.mode == "RGB"
    (x0, y0), (x1, y1) = arrow_segment(entities[0]["box"], entities[1]["box"])
    assert (x0, x1) == (100, 250) and y0 == y1 == 35
    assert drawn.getpixel((175, 35)) == ARROW_COLOR  # on the arrow, between the boxes
    assert drawn.getpixel((175, 215)) == (255, 255, 255)  # no arrow between the unlinked pair
    # The boxes are rescaled from the page size they refer to.
    small = draw_relations(page, entities, [{"head": 2, "tail": 3}], page_size=(800, 600))
    assert small.getpixel((88, 107)) == ARROW_COLOR and small.getpixel((175, 215)) == (255, 255, 255)
    with pytest.raises(ValueError, match="outside the 4 entities"):
        draw_relations(page, entities, [{"head": 0, "tail": 9}])


# ---- The example ----


def test_example_runs_two_steps_on_funsd_and_reloads(tmp_path):
    output_dir = tmp_path / "out"
    command = [
        sys.executable,
        str(SCRIPT),
        "--output_dir",
        str(output_dir),
        "--dataset_dir",
        str(FUNSD),
        "--max_train_samples",
        "2",
        "--max_eval_samples",
        "2",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_seq_length",
        "128",
        "--tokenizer_vocab_size",
        "500",
        "--draw_pages",
        "1",
        "--disable_tqdm",
        "True",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "precision = " in result.stdout and "f1 = " in result.stdout
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_f1"] <= 1.0 and metrics["eval_samples"] == 2
    pages, _ = load_funsd_relations(FUNSD, splits="test")
    assert metrics["eval_gold_links"] == sum(len(r) for r in pages["test"][:2]["relations"])
    records = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == pages["test"][:2]["id"]
    for record in records:
        assert all({"question", "answer", "score", "head", "tail"} <= set(link) for link in record["relations"])
    with Image.open(output_dir / f"relations_{records[0]['id']}.png") as picture:
        assert picture.size == pages["test"][0]["image"].size
    model = AETNetForRelationExtraction.from_pretrained(output_dir)
    assert model.config.entity_labels == ENTITY_LABELS
