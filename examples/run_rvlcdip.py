#!/usr/bin/env python
# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "aetnet[examples,ocr]",
#     "transformers>=5.23,<6",
#     "accelerate>=1.1",
#     "datasets>=3",
#     "matplotlib>=3.7",
#     "tqdm",
# ]
# ///
"""
Fine-tune AETNet for document classification (RVL-CDIP and subsets of it) from raw page images.

Words and boxes come from Tesseract when the data carry no OCR; they are cached on disk, keyed by the page content
and the OCR settings (`--ocr_cache_dir`, default `~/.cache/aetnet/ocr`), so a second epoch or a second run never
OCRs a page again. Page pixels are read when a batch is drawn, so the full RVL-CDIP fits in memory.

The data are a folder of `train.jsonl` / `dev.jsonl` / `test.jsonl` (`{"image": ..., "label": ...}` per line) or the
RVL-CDIP release (`labels/{train,val,test}.txt` with `<path> <label id>` lines, pages under `images/`), see
`aetnet.data.rvlcdip`. The model starts as in `run_funsd.py`: an AETNet checkpoint, three pretrained encoders, or
random weights of a named size (`--model_size`) with a tokenizer trained on the training words.

`--baseline layoutlmv3` trains plain `LayoutLMv3ForSequenceClassification` instead, initialised with the very same
LayoutLMv3 and head weights as the AETNet model it would otherwise train (same seed, same start), so that the two
runs compare AETNet's alignment with plain fine-tuning and nothing else. Evaluation reports accuracy and macro F1
and saves the confusion matrix (`confusion_matrix.png` / `.json`).

    python examples/run_rvlcdip.py --dataset_dir ../shared/data/rvlcdip3 --output_dir outputs/rvlcdip3-tiny
    python examples/run_rvlcdip.py --dataset_dir ../shared/data/rvlcdip3 --output_dir outputs/rvlcdip3-lmv3 \
        --baseline layoutlmv3
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from PIL import Image
from transformers import (
    AutoModelForSequenceClassification,
    HfArgumentParser,
    LayoutLMv3Config,
    LayoutLMv3ForSequenceClassification,
    LayoutLMv3ImageProcessorPil,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import check_min_version
from transformers.utils.versions import require_version

from aetnet.configuration_aetnet import AETNetConfig
from aetnet.data.rvlcdip import load_rvlcdip
from aetnet.data_collator import AETNetDataCollator
from aetnet.metrics.classification import classification_metrics, confusion_matrix, plot_confusion_matrix
from aetnet.modeling_aetnet import AETNetForSequenceClassification
from aetnet.ocr_cache import OCRCache, ocr_dataset, with_page_pixels
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
        metadata={"help": "Feature queue length of a new model; default: half the training pages, at most 4096."},
    )
    alignment_objectives: list[str] | None = field(
        default=None, metadata={"help": "Objectives of a new model, among ditc imc glitc pita (default: all four)."}
    )
    fusion_injection: str | None = field(
        default=None,
        metadata={
            "help": "How aligned features enter LayoutLMv3 (new model).",
            "choices": ["add", "gated", "none"],
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={
            "help": "Train this plain model instead of AETNet, from the same LayoutLMv3 and head weights.",
            "choices": ["layoutlmv3"],
        },
    )


@dataclass
class DataTrainingArguments:
    """The pages, their OCR, and how a page becomes a model input."""

    dataset_dir: str | None = field(
        default=None,
        metadata={"help": "A folder with train/dev/test .jsonl files or the RVL-CDIP layout (labels/, images/)."},
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Training split file (.jsonl or `path label` lines)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation split file."})
    test_file: str | None = field(default=None, metadata={"help": "Test split file."})
    image_root: str | None = field(default=None, metadata={"help": "Folder the image paths are relative to."})
    ocr_cache_dir: str | None = field(
        default=None, metadata={"help": "OCR cache folder (default: $AETNET_OCR_CACHE or ~/.cache/aetnet/ocr)."}
    )
    ocr_lang: str = field(default="eng", metadata={"help": "Tesseract language(s), e.g. eng or eng+deu."})
    tesseract_config: str = field(default="", metadata={"help": "Extra Tesseract flags, e.g. '--psm 6'."})
    ocr_num_workers: int = field(
        default=1, metadata={"help": "Tesseract processes run at once (about the CPU cores)."}
    )
    max_seq_length: int = field(
        default=512, metadata={"help": "Tokens per page; the words beyond are dropped (counted in a warning)."}
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every page to max_seq_length (default: pad each batch dynamically)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training pages."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation pages."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test pages."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for dataset.map."})


@dataclass
class RvlcdipTrainingArguments(AETNetTrainingArguments):
    """
    `AETNetTrainingArguments` whose defaults train a tiny random model on a few hundred pages on a CPU. From
    pretrained encoders use the LayoutLMv3 RVL-CDIP recipe instead (`--learning_rate 2e-5`). The official AET code
    trains RVL-CDIP on the task loss only (method.md 2.5): `--ditc_loss_weight 0 --imc_loss_weight 0
    --glitc_loss_weight 0 --pita_loss_weight 0` reproduces that.
    """

    do_train: bool = field(default=True, metadata={"help": "Run training."})
    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the validation split."})
    do_predict: bool = field(
        default=True, metadata={"help": "Write predictions for the test (else validation) split."}
    )
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=30.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Batch size per device for evaluation."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1 is a ratio)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    save_strategy: str = field(
        default="no", metadata={"help": "Checkpoints during training; the final model is saved."}
    )
    alpha_warmup_steps: int = field(default=100, metadata={"help": "Ramp distill_alpha from 0 over N steps."})
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch ops. Default on CPU: 1, because these models' small matrices gain little "
            "from a second thread and slow down several-fold when the cores are shared; try 2 on an idle machine."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep False: page pixels are loaded from the `image` column when a batch is drawn."},
    )


def build_processor_and_model(model_args, data_args, label_list, train_words):
    """Processor and AETNet model for the three starts; returns them with the base model names for the model card."""
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
        model = AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path)
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
        model = AETNetForSequenceClassification.from_encoders_pretrained(
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
    model = AETNetForSequenceClassification(config)
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer), model, []


def layoutlmv3_baseline(model: AETNetForSequenceClassification) -> LayoutLMv3ForSequenceClassification:
    """Plain LayoutLMv3 with the AETNet model's LayoutLMv3 weights and classification head: the same start."""
    config = LayoutLMv3Config(**model.config.layout_config.to_dict())
    config.num_labels = model.config.num_labels
    config.id2label, config.label2id = dict(model.config.id2label), dict(model.config.label2id)
    baseline = LayoutLMv3ForSequenceClassification(config)
    baseline.layoutlmv3.load_state_dict(model.aetnet.layoutlmv3.state_dict())
    baseline.classifier.load_state_dict(model.classifier.state_dict())
    return baseline


@contextmanager
def _quiet_processor_truncation():
    """The processor warns once per `map` batch about words beyond `max_seq_length`; one total is logged instead."""
    processor_logger = transformers.utils.logging.get_logger("aetnet.processing_aetnet")
    level = processor_logger.level
    processor_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        processor_logger.setLevel(level)


def prepare_pages(dataset, processor, data_args, label_ids, num_proc, description):
    """Pages -> model inputs (text side only); `with_page_pixels` adds the pixels when a batch is drawn."""
    # The boxes are already on the 0-1000 scale, so the processor reads nothing from the page but its pixels, which
    # are dropped here: a blank stand-in saves decoding every page twice.
    blank = Image.new("RGB", (8, 8), "white")

    def process(batch):
        encoding = processor(
            [blank] * len(batch["words"]),
            batch["words"],
            boxes=batch["bboxes"],
            boxes_normalized=True,
            max_length=data_args.max_seq_length,
            padding="max_length" if data_args.pad_to_max_length else False,
            truncation=True,
            return_overflowing_tokens=False,
            stride=0,  # one window per page (the tokenizer checks the stride even without overflow)
        )
        return {
            "input_ids": encoding["input_ids"],
            "attention_mask": encoding["attention_mask"],
            "bbox": encoding["bbox"],
            "labels": [label_ids[label] for label in batch["label"]],
            "image": batch["image"],
            "num_words_kept": [len({i for i in ids if i >= 0}) for ids in encoding["word_ids"]],
        }

    with _quiet_processor_truncation():
        pages = dataset.map(
            process,
            batched=True,
            batch_size=64,
            remove_columns=dataset.column_names,
            num_proc=num_proc,
            desc=description,
        )
    kept = np.asarray(pages["num_words_kept"])
    total = np.asarray([len(words) for words in dataset["words"]])
    truncated = int((kept < total).sum())
    if truncated:
        logger.warning(
            f"{description}: {truncated} of {len(total)} page(s) have more words than fit in "
            f"{data_args.max_seq_length} tokens; {int((total - kept).sum())} of {int(total.sum())} words were "
            "dropped (the beginning of each page is kept)."
        )
    return with_page_pixels(pages.remove_columns("num_words_kept"), processor.image_processor)


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, RvlcdipTrainingArguments))
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

    # ---- Data: labelled pages, then their words (cached Tesseract unless the files carry OCR) ----
    raw = load_rvlcdip(
        data_args.dataset_dir,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=data_args.test_file,
        image_root=data_args.image_root,
    )
    if training_args.do_train and "train" not in raw:
        raise ValueError("--do_train needs a training split (train.jsonl, labels/train.txt or --train_file).")
    if training_args.do_eval and "validation" not in raw:
        raise ValueError("--do_eval needs a validation split (dev.jsonl, labels/val.txt or --validation_file).")
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(len(raw[split]), limit)))
    label_list = next(iter(raw.values())).features["label"].names
    ocr = OCRCache(data_args.ocr_cache_dir, ocr_lang=data_args.ocr_lang, tesseract_config=data_args.tesseract_config)
    with training_args.main_process_first(desc="OCR"):
        for split in raw:
            raw[split] = ocr_dataset(raw[split], ocr, num_workers=data_args.ocr_num_workers, desc=f"OCR {split}")
    logger.info(f"OCR cache {ocr.cache_dir}: {ocr.hits} page(s) read from it, {ocr.misses} OCR-ed now")

    # ---- Processor and model ----
    train_words = raw["train"]["words"] if "train" in raw else [["document"]]
    processor, model, base_models = build_processor_and_model(model_args, data_args, label_list, train_words)
    if base_models and training_args.learning_rate > 1e-4:
        logger.warning(
            f"learning_rate {training_args.learning_rate} is the from-scratch default; pretrained encoders are "
            "usually fine-tuned at 1e-5 to 5e-5."
        )
    if model_args.baseline == "layoutlmv3":
        model = layoutlmv3_baseline(model)
        logger.info("Training the plain LayoutLMv3 baseline, from the same LayoutLMv3 and head weights as AETNet.")
    # Dataset class ids -> the model's label ids (a checkpoint may order the labels differently).
    label_ids = {i: model.config.label2id[label] for i, label in enumerate(label_list)}
    id2label = model.config.id2label

    with training_args.main_process_first(desc="dataset map pre-processing"):
        pages = {
            split: prepare_pages(
                raw[split], processor, data_args, label_ids, data_args.preprocessing_num_workers, f"{split} pages"
            )
            for split in raw
        }

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        names = [id2label[i] for i in range(len(id2label))]
        return classification_metrics(logits, prediction.label_ids, names)

    is_aetnet = isinstance(model, AETNetForSequenceClassification)
    trainer = AETNetTrainer(
        model=model,
        args=training_args,
        train_dataset=pages.get("train") if training_args.do_train else None,
        eval_dataset=pages.get("validation") if training_args.do_eval else None,
        processing_class=processor,
        # The momentum view exists for AETNet only; plain LayoutLMv3 takes no `pixel_values_aug`.
        data_collator=AETNetDataCollator(tokenizer=processor.tokenizer, augment=is_aetnet, seed=training_args.seed),
        compute_metrics=compute_metrics,
    )
    eval_collator = AETNetDataCollator(tokenizer=processor.tokenizer, augment=False)

    # ---- Train ----
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = get_last_checkpoint(training_args.output_dir)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = train_result.metrics
        metrics["train_samples"] = len(pages["train"])
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    names = [id2label[i] for i in range(len(id2label))]
    trainer.data_collator = eval_collator  # evaluation sees the deterministic page only

    # ---- Evaluate: accuracy, macro F1 and the confusion matrix of the validation split ----
    metrics = {}
    if training_args.do_eval:
        output = trainer.predict(pages["validation"], metric_key_prefix="eval")
        metrics = output.metrics
        metrics["eval_samples"] = len(pages["validation"])
        trainer.log(dict(metrics))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            matrix = confusion_matrix(logits, output.label_ids, num_labels=len(names))
            with open(os.path.join(training_args.output_dir, "confusion_matrix.json"), "w", encoding="utf-8") as f:
                json.dump({"labels": names, "rows_true_columns_predicted": matrix.tolist()}, f, indent=2)
            path = plot_confusion_matrix(
                matrix, names, os.path.join(training_args.output_dir, "confusion_matrix.png"), normalize=True
            )
            logger.info(f"Confusion matrix saved to {path}")

    # ---- Predict: the test split, else the validation split ----
    if training_args.do_predict:
        split = "test" if "test" in pages else "validation" if "validation" in pages else None
        if split is None:
            logger.warning("--do_predict: there is neither a test nor a validation split; nothing to predict.")
        else:
            output = trainer.predict(pages[split], metric_key_prefix="predict")
            if trainer.is_world_process_zero():
                logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
                probabilities = np.exp(logits - logits.max(-1, keepdims=True))
                probabilities /= probabilities.sum(-1, keepdims=True)
                path = os.path.join(training_args.output_dir, "predictions.jsonl")
                with open(path, "w", encoding="utf-8") as writer:
                    for example, scores in zip(raw[split].select_columns(["id", "label"]), probabilities):
                        record = {
                            "id": example["id"],
                            "label": label_list[example["label"]],
                            "predicted_label": names[int(scores.argmax())],
                            "score": float(scores.max()),
                        }
                        writer.write(json.dumps(record) + "\n")
                logger.info(f"Predictions for the {split} split written to {path}")

    dataset_name = os.path.basename(os.path.normpath(data_args.dataset_dir)) if data_args.dataset_dir else None
    card_kwargs = {
        "finetuned_from": base_models or None,
        "tasks": "text-classification",
        "dataset": dataset_name or "RVL-CDIP-style page images",
        "language": "en",
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    else:
        trainer.create_model_card(**card_kwargs)

    if metrics:
        print(f"accuracy = {metrics['eval_accuracy']:.4f}  macro_f1 = {metrics['eval_macro_f1']:.4f}")
    print(f"Model saved to {os.path.abspath(training_args.output_dir)}")
    return metrics


def _mp_fn(index):
    # For xla_spawn (TPUs)
    main()


if __name__ == "__main__":
    main()
