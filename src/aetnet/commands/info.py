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
`aetnet info`: summarise a checkpoint without loading its weights: task, label set, the encoders and the alignment
settings, and the parameters per component, with the total and the part used at inference.
"""

from __future__ import annotations

import json
from collections import Counter

from aetnet.commands import EXIT_OK, UsageError


def register_subcommand(subparsers) -> None:
    """Add `aetnet info` and its options to the `aetnet` sub-parsers."""
    parser = subparsers.add_parser("info", help="summarise a checkpoint: config, labels, parameters per component")
    parser.add_argument("model", metavar="MODEL", help="checkpoint folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=info_command)


def _component_counts(model) -> tuple[dict[str, int], set[str]]:
    """Parameters per top-level component of the base model (heads apart) and the components used only in training."""
    prefix = model.base_model_prefix
    counts = Counter()
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        component = parts[1] if parts[0] == prefix and len(parts) > 1 else f"head: {parts[0]}"
        counts[component] += parameter.numel()
    training_only = set()
    config = model.config
    if getattr(config, "model_type", None) == "aetnet":
        # Projections, temperature and momentum copies serve the alignment losses only; the aligners themselves are
        # read at inference unless their features are not injected.
        training_only = {c for c in counts if c.endswith("_m") or c in ("vision_proj", "text_proj", "temp")}
        if config.fusion_injection == "none":
            training_only |= {"vision_model", "text_model"}
    return dict(counts), training_only


def info_command(args) -> int:
    """`aetnet info`: the summary of MODEL, as text or with `--json` as JSON."""
    import torch
    from transformers import AutoConfig, AutoModel

    from aetnet.entities import is_bio
    from aetnet.tasks import RELATION_EXTRACTION, model_class, task_of

    try:
        config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read a config from {args.model}: {error}") from None
    try:
        task = task_of(config)
    except ValueError:
        task = None
    # Built on the meta device: counting parameters needs shapes, not weights.
    with torch.device("meta"):
        if task == RELATION_EXTRACTION:  # no Auto class: the relation class itself (see `model_class`)
            model = model_class(task, config)(config)
        else:
            model = (model_class(task) if task else AutoModel).from_config(config)
    counts, training_only = _component_counts(model)
    if task == RELATION_EXTRACTION:  # its head classifies pairs: the labels that name something are entity types
        labels = list(model.config.entity_labels)
    else:
        labels = [config.id2label[i] for i in range(config.num_labels)] if task else []
    summary = {
        "model": args.model,
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "task": task,
        "labels": labels,
        "bio": is_bio(labels) if labels else None,
        "parameters": counts,
        "total_parameters": sum(counts.values()),
        "inference_parameters": sum(n for c, n in counts.items() if c not in training_only),
        "config": _config_summary(config),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"Model:         {summary['model']} ({summary['architecture']}, model_type {summary['model_type']})")
    print(f"Task:          {task or 'unknown (no task head in config.architectures)'}")
    if labels:
        bio = " (BIO)" if summary["bio"] else ""
        print(f"Labels ({len(labels)}){bio}: {', '.join(labels)}")
    for key, value in summary["config"].items():
        print(f"{key + ':':<14} {value}")
    print("Parameters:")
    for component, count in counts.items():
        note = "  (training only)" if component in training_only else ""
        print(f"  {component:<28} {count:>14,}{note}")
    print(f"  {'total':<28} {summary['total_parameters']:>14,}")
    print(f"  {'used at inference':<28} {summary['inference_parameters']:>14,}")
    return EXIT_OK


def _config_summary(config) -> dict[str, str]:
    def encoder(sub) -> str:
        text = f"{sub.model_type}: hidden {sub.hidden_size}, {sub.num_hidden_layers} layers"
        text += f", {sub.num_attention_heads} heads"
        if getattr(sub, "vocab_size", None):
            text += f", vocab {sub.vocab_size}"
        if getattr(sub, "input_size", None) or getattr(sub, "image_size", None):
            text += f", image {getattr(sub, 'input_size', None) or sub.image_size} px / patch {sub.patch_size}"
        return text

    if getattr(config, "model_type", None) != "aetnet":
        return {"Encoder": encoder(config)}
    return {
        "Fusion": encoder(config.layout_config) + f", {config.layout_config.max_position_embeddings - 2} positions",
        "Vision": encoder(config.vision_config),
        "Text": encoder(config.text_config),
        "Alignment": f"{' '.join(config.alignment_objectives)}; injection {config.fusion_injection}, "
        f"embed_dim {config.embed_dim}, queue {config.queue_size}",
    }


__all__ = ["info_command", "register_subcommand"]
