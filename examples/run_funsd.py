#!/usr/bin/env python
# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "aetnet[examples]",
#     "transformers>=5.23,<6",
#     "accelerate>=1.1",
#     "datasets>=3",
#     "evaluate>=0.4",
#     "seqeval>=1.2",
# ]
# ///
"""
Fine-tune AETNet for entity labelling on FUNSD-style forms (header / question / answer, BIO tags).

The model can start from:

- an AETNet checkpoint (`--model_name_or_path`);
- three pretrained encoders (`--layout_model microsoft/layoutlmv3-base --vision_model facebook/deit-base-patch16-224
  --text_model FacebookAI/roberta-base`);
- random weights of a named size (`--model_size tiny|small|base`) with a tokenizer trained on the training words,
  which needs no download. This is the default (`tiny`).

The data are a local FUNSD folder or a Hub dataset (`--dataset_dir`), or, by default, synthetic FUNSD-like forms
rendered on the fly. Long documents are split into overlapping windows; evaluation and the written predictions
(`predictions.jsonl`) merge the windows back to one label per word, and the scores are entity-level seqeval scores
over words.

    python examples/run_funsd.py --output_dir outputs/aetnet-synthetic
    python examples/run_funsd.py --output_dir outputs/aetnet-funsd-small \
        --dataset_dir ../shared/data/funsd --model_size small
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from transformers import AutoModelForTokenClassification, HfArgumentParser, LayoutLMv3ImageProcessorPil, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import check_min_version
from transformers.utils.versions import require_version

from aetnet.configuration_aetnet import AETNetConfig
from aetnet.data.funsd import load_funsd_like
from aetnet.data.synthetic import load_synthetic_funsd
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics import load_seqeval
from aetnet.modeling_aetnet import AETNetForTokenClassification
from aetnet.processing_aetnet import AETNetProcessor
from aetnet.tokenizer_utils import train_layoutlmv3_tokenizer
from aetnet.trainer_aetnet import AETNetTrainer, AETNetTrainingArguments


check_min_version("5.23.0")
require_version("datasets>=3", "pip install 'aetnet[examples]'")

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Where the model starts from. Give at most one of the three starts; none means `--model_size`."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An AETNet checkpoint (folder or Hub id), saved with its processor."}
    )
    layout_model: str | None = field(
        default=None, metadata={"help": "LayoutLMv3 checkpoint (with --vision_model and --text_model)."}
    )
    vision_model: str | None = field(default=None, metadata={"help": "ViT / DeiT checkpoint of the image aligner."})
    text_model: str | None = field(default=None, metadata={"help": "RoBERTa checkpoint of the text aligner."})
    model_size: str = field(
        default="tiny",
        metadata={"help": "Random-weight preset when no checkpoint is given.", "choices": ["tiny", "small", "base"]},
    )
    tokenizer_vocab_size: int = field(
        default=4000, metadata={"help": "Vocabulary of the tokenizer trained on the training words (--model_size)."}
    )
    queue_size: int | None = field(
        default=None,
        metadata={"help": "Feature queue length of a new model; default: half the training windows, at most 4096."},
    )
    alignment_objectives: list[str] | None = field(
        default=None, metadata={"help": "Objectives of a new model, among ditc imc glitc pita (default: all four)."}
    )
    fusion_injection: str | None = field(
        default=None,
        metadata={"help": "How aligned features enter LayoutLMv3 (new model).", "choices": ["add", "gated", "none"]},
    )


@dataclass
class DataTrainingArguments:
    """The data and how documents become model windows."""

    dataset_dir: str = field(
        default="",
        metadata={"help": "A FUNSD folder (training_data/, testing_data/), a Hub dataset id, or ''/'synthetic'."},
    )
    synthetic_train_size: int = field(default=96, metadata={"help": "Synthetic training forms."})
    synthetic_test_size: int = field(default=24, metadata={"help": "Synthetic test forms."})
    word_level: bool = field(
        default=False, metadata={"help": "Give each word its own box instead of its entity's (segment-level) box."}
    )
    max_seq_length: int = field(default=512, metadata={"help": "Window length in tokens."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive windows of a document."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every window to max_seq_length (default: pad each batch dynamically)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training documents."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N test documents."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})
    return_entity_level_metrics: bool = field(
        default=False, metadata={"help": "Also report precision / recall / F1 per entity type."}
    )


@dataclass
class FunsdTrainingArguments(AETNetTrainingArguments):
    """
    `AETNetTrainingArguments` whose defaults train the default tiny random model on the synthetic forms in a few
    CPU minutes. From pretrained encoders use the LayoutLMv3 recipe instead (`--learning_rate 1e-5 --max_steps
    1000`). Train, evaluation and prediction all run unless switched off (`--do_predict False`).
    """

    do_train: bool = field(default=True, metadata={"help": "Run training."})
    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the test split."})
    do_predict: bool = field(default=True, metadata={"help": "Write per-word predictions for the test split."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=15.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Batch size per device for evaluation."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1 is a ratio)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms, biases, gates)."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints while training (the end is saved)."})
    alpha_warmup_steps: int = field(default=100, metadata={"help": "Ramp distill_alpha from 0 over N steps."})
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch ops. Default on CPU: 1, because these models' small matrices gain little "
            "from a second thread and slow down several-fold when the cores are shared; try 2 on an idle machine."
        },
    )


def build_processor_and_model(model_args, data_args, label_list, train_words):
    """Processor and model for the three starts; returns them with the base model names for the model card."""
    id2label = dict(enumerate(label_list))
    label2id = {label: i for i, label in id2label.items()}
    encoders = [model_args.layout_model, model_args.vision_model, model_args.text_model]
    if model_args.model_name_or_path and any(encoders):
        raise ValueError("Give either --model_name_or_path or --layout_model/--vision_model/--text_model, not both.")
    new_config = {
        key: value
        for key, value in (
            ("alignment_objectives", model_args.alignment_objectives),
            ("fusion_injection", model_args.fusion_injection),
        )
        if value is not None
    }
    queue_size = model_args.queue_size or max(8, min(4096, len(train_words) // 2))

    if model_args.model_name_or_path:
        if new_config or model_args.queue_size:
            raise ValueError(
                "--queue_size, --alignment_objectives and --fusion_injection configure a new model; the checkpoint "
                f"{model_args.model_name_or_path} keeps its own."
            )
        processor = AETNetProcessor.from_pretrained(model_args.model_name_or_path)
        model = AutoModelForTokenClassification.from_pretrained(model_args.model_name_or_path)
        if sorted(model.config.label2id) != sorted(label_list):
            raise ValueError(
                f"The checkpoint's labels {sorted(model.config.label2id)} are not the dataset's {label_list}; "
                "start from encoders (--layout_model ...) to train a new head."
            )
        return processor, model, [model_args.model_name_or_path]
    if any(encoders):
        if not all(encoders):
            raise ValueError(f"--layout_model, --vision_model and --text_model go together, got {encoders}.")
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_args.layout_model)
        image_processor = LayoutLMv3ImageProcessorPil.from_pretrained(model_args.layout_model, apply_ocr=False)
        model = AETNetForTokenClassification.from_encoders_pretrained(
            *encoders,
            num_labels=len(label_list),
            id2label=id2label,
            label2id=label2id,
            queue_size=queue_size,
            **new_config,
        )
        return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer), model, encoders

    tokenizer = train_layoutlmv3_tokenizer(
        train_words, vocab_size=model_args.tokenizer_vocab_size, model_max_length=data_args.max_seq_length
    )
    config = AETNetConfig.from_preset(
        model_args.model_size,
        vocab_size=len(tokenizer),
        max_length=data_args.max_seq_length,
        num_labels=len(label_list),
        id2label=id2label,
        label2id=label2id,
        queue_size=queue_size,
        **new_config,
    )
    size = config.layout_config.input_size
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": size, "width": size})
    model = AETNetForTokenClassification(config)
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer), model, []


def prepare_windows(dataset, processor, data_args, label_ids, num_proc, description):
    """Documents -> model windows (`dataset.map` + the processor), keeping `word_ids` and the document index."""

    def process(batch, indices):
        encoding = processor(
            batch["image"],
            batch["words"],
            boxes=batch["bboxes"],
            word_labels=[[label_ids[tag] for tag in tags] for tags in batch["ner_tags"]],
            boxes_normalized=True,
            max_length=data_args.max_seq_length,
            stride=data_args.doc_stride,
            padding="max_length" if data_args.pad_to_max_length else False,
            truncation=True,
            return_overflowing_tokens=True,
        )
        encoding["document_index"] = [indices[i] for i in encoding.pop("overflow_to_sample_mapping")]
        return encoding

    return dataset.map(
        process,
        batched=True,
        batch_size=16,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=description,
    ).with_format("torch")


def merge_to_words(processor, logits: np.ndarray, windows, documents, outside_id: int) -> list[np.ndarray]:
    """Per-word label ids of every document from the window logits (windows are in dataset order)."""
    length = logits.shape[1]
    word_ids = np.full((len(windows), length), -1, dtype=np.int64)
    for row, ids in enumerate(windows["word_ids"]):
        word_ids[row, : len(ids)] = ids[:length]
    merged = processor.merge_window_predictions(
        torch.from_numpy(logits.astype(np.float32)),
        torch.from_numpy(word_ids),
        torch.as_tensor(windows["document_index"]),
        num_words=[len(words) for words in documents["words"]],
    )
    predictions = []
    for document, scores in enumerate(merged):
        unseen = torch.isnan(scores).any(dim=-1)
        if unseen.any():
            logger.warning(f"Document {document}: {int(unseen.sum())} word(s) in no window are predicted 'O'.")
        predictions.append(torch.where(unseen, outside_id, scores.nan_to_num().argmax(-1)).numpy())
    return predictions


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, FunsdTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.warning(
        f"Process rank: {training_args.local_process_index}, device: {training_args.device}, "
        f"n_gpu: {training_args.n_gpu}, distributed: {training_args.parallel_mode.value == 'distributed'}, "
        f"bf16: {training_args.bf16}, fp16: {training_args.fp16}"
    )
    logger.info(f"Training/evaluation parameters {training_args}")
    if training_args.device.type == "cpu" or training_args.torch_num_threads:
        torch.set_num_threads(training_args.torch_num_threads or 1)
    set_seed(training_args.seed)

    # ---- Data ----
    if data_args.dataset_dir in ("", "synthetic"):
        raw = load_synthetic_funsd(
            data_args.synthetic_train_size,
            data_args.synthetic_test_size,
            seed=training_args.seed,
            word_level=data_args.word_level,
        )
        dataset_name, dataset_tag = "synthetic FUNSD-like forms", "synthetic-funsd"
    else:
        raw = load_funsd_like(data_args.dataset_dir, word_level=data_args.word_level)
        dataset_name, dataset_tag = "FUNSD", "funsd"
    if data_args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(len(raw["train"]), data_args.max_train_samples)))
    if data_args.max_eval_samples is not None:
        raw["test"] = raw["test"].select(range(min(len(raw["test"]), data_args.max_eval_samples)))
    label_list = raw["train"].features["ner_tags"].feature.names

    # ---- Processor and model ----
    processor, model, base_models = build_processor_and_model(model_args, data_args, label_list, raw["train"]["words"])
    if base_models and training_args.learning_rate > 1e-4:
        logger.warning(
            f"learning_rate {training_args.learning_rate} is the from-scratch default; pretrained encoders are "
            "usually fine-tuned at 1e-5 to 5e-5."
        )
    # Dataset tag ids -> the model's label ids (a checkpoint may order the labels differently).
    label_ids = {i: model.config.label2id[label] for i, label in enumerate(label_list)}

    with training_args.main_process_first(desc="dataset map pre-processing"):
        train_windows = prepare_windows(
            raw["train"], processor, data_args, label_ids, data_args.preprocessing_num_workers, "Train windows"
        )
        test_windows = prepare_windows(
            raw["test"], processor, data_args, label_ids, data_args.preprocessing_num_workers, "Test windows"
        )
    logger.info(f"{len(raw['train'])} training documents -> {len(train_windows)} windows")

    # ---- Metrics: entity-level seqeval over words, after merging the windows ----
    metric = load_seqeval()
    id2label = model.config.id2label
    outside_id = model.config.label2id["O"]
    gold_words = [[id2label[label_ids[tag]] for tag in tags] for tags in raw["test"]["ner_tags"]]

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = merge_to_words(processor, logits, test_windows, raw["test"], outside_id)
        results = metric.compute(
            predictions=[[id2label[int(i)] for i in row] for row in predicted], references=gold_words, zero_division=0
        )
        scores = {name: results[f"overall_{name}"] for name in ("precision", "recall", "f1", "accuracy")}
        if data_args.return_entity_level_metrics:
            for entity, values in results.items():
                if isinstance(values, dict):
                    scores.update({f"{entity}_{key}": value for key, value in values.items()})
        return scores

    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=train_windows if training_args.do_train else None,
        eval_dataset=test_windows if training_args.do_eval else None,
        processing_class=processor,
        data_collator=AETNetDataCollator(tokenizer=processor.tokenizer, augment=True, seed=training_args.seed),
        compute_metrics=compute_metrics,
    )
    # Evaluation and prediction see the deterministic page only.
    eval_collator = AETNetDataCollator(tokenizer=processor.tokenizer, augment=False)

    # ---- Train ----
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = get_last_checkpoint(training_args.output_dir)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_windows)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    # ---- Evaluate and predict: FUNSD has no validation split, so both use the test split, in one pass ----
    metrics = {}
    if training_args.do_eval or training_args.do_predict:
        trainer.data_collator = eval_collator
        output = trainer.predict(test_windows, metric_key_prefix="eval")
        metrics = output.metrics
        metrics["eval_samples"] = len(test_windows)
        if training_args.do_eval:
            trainer.log(dict(metrics))
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if training_args.do_predict and trainer.is_world_process_zero():
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            predicted = merge_to_words(processor, logits, test_windows, raw["test"], outside_id)
            path = os.path.join(training_args.output_dir, "predictions.jsonl")
            with open(path, "w", encoding="utf-8") as writer:
                for example, gold, ids in zip(raw["test"].select_columns(["id", "words"]), gold_words, predicted):
                    record = {
                        "id": example["id"],
                        "words": example["words"],
                        "labels": gold,
                        "predicted_labels": [id2label[int(i)] for i in ids],
                    }
                    writer.write(json.dumps(record) + "\n")
            logger.info(f"Per-word predictions written to {path}")

    card_kwargs = {
        "finetuned_from": base_models or None,
        "tasks": "token-classification",
        "dataset": dataset_name,
        "dataset_tags": dataset_tag,
        "language": "en",
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    else:
        trainer.create_model_card(**card_kwargs)

    if metrics:
        print(
            f"precision = {metrics['eval_precision']:.4f}  recall = {metrics['eval_recall']:.4f}  "
            f"f1 = {metrics['eval_f1']:.4f}"
        )
    print(f"Model saved to {os.path.abspath(training_args.output_dir)}")
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
