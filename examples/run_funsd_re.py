#!/usr/bin/env python
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
# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "aetnet[examples]",
#     "transformers>=5.23,<6",
#     "accelerate>=1.1",
#     "datasets>=3",
# ]
# ///
"""
Fine-tune AETNet for relation extraction (key-value linking) on FUNSD-style forms: given the gold entities of a page
(their words and types), predict which question each answer belongs to.

The data are a local FUNSD folder (`--dataset_dir ../shared/data/funsd`: entities and question -> answer links from
its `linking` field, normalised and counted, see `aetnet.data.funsd_relations`) or, by default, the synthetic forms,
whose links are each question and the answer drawn right after it. Pages are cut into windows of whole entities
(`aetnet.relations.windows`); evaluation merges the windows' pair scores per page and reports precision / recall / F1
over predicted (question, answer) pairs with the gold entities given (the LayoutXLM convention). End-to-end scores
from predicted entities are not computed. `--baseline layoutlmv3` trains stock LayoutLMv3 with the same head from
the same weights.

    python examples/run_funsd_re.py --output_dir outputs/re-synthetic
    python examples/run_funsd_re.py --output_dir outputs/re-funsd --dataset_dir ../shared/data/funsd --model_size small
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser
from transformers.utils import check_min_version
from utils_aetnet import (
    ExampleTrainingArguments,
    finish_run,
    parse_arguments,
    setup_logging_and_seed,
    train_and_save,
    training_collator,
    warn_if_from_scratch_learning_rate,
)
from utils_aetnet_data import script_window_arguments
from utils_aetnet_model import ModelArguments, build_processor_and_model

from aetnet import AETNetForRelationExtraction, AETNetTrainer
from aetnet.data import add_bio_relations, load_funsd_relations, load_synthetic_funsd, union_bbox
from aetnet.relations import (
    RelationDataCollator,
    WindowStatistics,
    decode_links,
    links_to_json,
    merge_page_scores,
    relation_scores,
    relation_windows,
    score_relation_windows,
)
from aetnet.visualization import draw_relations


check_min_version("5.23.0")

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """The data and the decoding of links; the windows are `RelationWindowArguments`."""

    dataset_dir: str = field(default="", metadata={"help": "A FUNSD folder (training_data/, testing_data/) or ''."})
    synthetic_train_size: int = field(default=96, metadata={"help": "Synthetic training forms."})
    synthetic_test_size: int = field(default=24, metadata={"help": "Synthetic test forms."})
    word_level: bool = field(default=False, metadata={"help": "Each word keeps its own box (not its entity's)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training pages."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N test pages."})
    threshold: float = field(default=0.5, metadata={"help": "Link probability from which a pair is a link."})
    one_head_per_tail: bool = field(default=False, metadata={"help": "Keep only the best question of an answer."})
    draw_pages: int = field(default=0, metadata={"help": "Draw the predicted links of the first N test pages."})
    relation_geometry: str | None = field(
        default=None,
        metadata={
            "help": "A new model's pair geometry: 'box' (the default: the logits also read the two entities' boxes) "
            "or 'none' (LayoutXLM's decoder exactly).",
            "choices": ["box", "none"],
        },
    )


# Windows of whole entities, each sharing about half its entities with the next (`aetnet.relations`): their overlap
# is no option, only their length is.
RelationWindowArguments = script_window_arguments(options=("max_seq_length",))


@dataclass
class RelationTrainingArguments(ExampleTrainingArguments):
    """The examples' defaults, with the from-scratch learning rate and epochs of the tiny synthetic run."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=15.0, metadata={"help": "Training epochs."})


def page_windows(pages, processor, max_length: int, description: str) -> tuple[list[dict], WindowStatistics]:
    """Every page's windows (whole entities) with its `pixel_values` and `document_index`; the counts are logged."""
    stats, windows = WindowStatistics(), []
    for index, page in enumerate(pages):
        pixel_values = processor.image_processor(page["image"], return_tensors="np")["pixel_values"][0]
        for window in relation_windows(
            processor.tokenizer,
            page["words"],
            page["bboxes"],
            page["entity_word_spans"],
            page["entity_labels"],
            page["relations"],
            max_length,
            stats,
        ):
            windows.append({**window, "pixel_values": pixel_values, "document_index": index})
    logger.info(f"{description}: {stats.to_dict()}")
    return windows, stats


def page_entities(page, label_names: list[str]) -> list[dict]:
    """The gold entities of a page as page-JSON entities: text, 0-1000 box, label."""
    return [
        {
            "text": " ".join(page["words"][start:end]),
            "box": union_bbox(page["bboxes"][start:end]),
            "label": label_names[label],
        }
        for (start, end), label in zip(page["entity_word_spans"], page["entity_labels"])
    ]


def main():
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, RelationWindowArguments, RelationTrainingArguments)
    )
    model_args, data_args, window_args, training_args = parse_arguments(parser)
    setup_logging_and_seed(logger, training_args)
    # Gold links are inputs, not labels to gather: `entity_labels` would otherwise be taken for labels by its name.
    training_args.label_names = ["relations"]

    # ---- Data ----
    if data_args.dataset_dir in ("", "synthetic"):
        raw = load_synthetic_funsd(
            data_args.synthetic_train_size,
            data_args.synthetic_test_size,
            seed=training_args.seed,
            word_level=data_args.word_level,
        )
        raw = {split: add_bio_relations(dataset) for split, dataset in raw.items()}
        dataset_name = "synthetic FUNSD-like forms"
    else:
        raw, link_stats = load_funsd_relations(data_args.dataset_dir, word_level=data_args.word_level)
        for split, stats in link_stats.items():
            logger.info(f"FUNSD {split} links: {stats.summary()}")
        dataset_name = "FUNSD"
    for split, limit in (("train", data_args.max_train_samples), ("test", data_args.max_eval_samples)):
        if limit is not None:
            raw[split] = raw[split].select(range(min(len(raw[split]), limit)))
    label_names = raw["train"].features["entity_labels"].feature.names

    # ---- Processor and model ----
    processor, model, base_models = build_processor_and_model(
        model_args,
        AETNetForRelationExtraction,
        raw["train"]["words"],
        window_args.max_seq_length,
        head_config={"relation_geometry": data_args.relation_geometry},
    )
    if list(model.config.entity_labels) != label_names:
        raise ValueError(f"The model's entity labels {model.config.entity_labels} are not the data's {label_names}.")
    warn_if_from_scratch_learning_rate(logger, training_args, base_models)
    train_windows, _ = page_windows(raw["train"], processor, window_args.max_seq_length, "Train windows")
    test_windows, window_stats = page_windows(raw["test"], processor, window_args.max_seq_length, "Test windows")

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=train_windows if training_args.do_train else None,
        processing_class=processor,
        data_collator=training_collator(model, processor, training_args.seed, RelationDataCollator),
    )
    if training_args.do_train:
        train_and_save(trainer, training_args, len(train_windows))

    # ---- Evaluate and predict on the test split (FUNSD has no validation split), in one pass ----
    metrics = {}
    if training_args.do_eval or training_args.do_predict:
        collator = RelationDataCollator(tokenizer=processor.tokenizer, keep_keys=("entity_index",))
        window_scores = score_relation_windows(
            trainer.model, test_windows, collator, training_args.per_device_eval_batch_size
        )
        page_scores = merge_page_scores(window_scores, [w["document_index"] for w in test_windows], len(raw["test"]))
        predicted = [decode_links(s, data_args.threshold, data_args.one_head_per_tail) for s in page_scores]
        gold = [[tuple(link) for link in page] for page in raw["test"]["relations"]]
        scores = relation_scores(predicted, gold)
        metrics = {f"eval_{name}": value for name, value in scores.items()}
        metrics["eval_samples"] = len(raw["test"])
        metrics["eval_links_in_no_window"] = window_stats.links_in_no_window
        if training_args.do_eval:
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if training_args.do_predict and trainer.is_world_process_zero():
            os.makedirs(training_args.output_dir, exist_ok=True)
            path = os.path.join(training_args.output_dir, "predictions.jsonl")
            with open(path, "w", encoding="utf-8") as writer:
                for index, (page, links) in enumerate(zip(raw["test"], predicted)):
                    entities = page_entities(page, label_names)
                    record = {
                        "id": page["id"],
                        "entities": entities,
                        "relations": links_to_json(links, entities),
                        "gold_relations": page["relations"],
                    }
                    writer.write(json.dumps(record) + "\n")
                    if index < data_args.draw_pages:
                        drawn = draw_relations(page["image"], entities, record["relations"], page_size=(1000, 1000))
                        drawn.save(os.path.join(training_args.output_dir, f"relations_{page['id']}.png"))
            logger.info(f"Predicted links written to {path}")

    card_kwargs = {"tasks": "relation-extraction", "dataset": dataset_name, "language": "en"}
    finish_run(trainer, training_args, metrics, ("precision", "recall", "f1"), base_models, **card_kwargs)
    return metrics


if __name__ == "__main__":
    main()
