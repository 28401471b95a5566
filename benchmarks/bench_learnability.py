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
Learnability of every alignment objective on real pages: each objective alone trains a fresh AETNetModel (no task
head, no task loss) on a fixed set of FUNSD training pages, and its loss is compared with its own chance level
(`AlignmentObjective.chance_level`: the loss of the best prediction that ignores the document). An objective whose
loss does not fall clearly below that level learns nothing at this size, whatever it adds to a task.

Beside the losses it records how far apart the documents' normalised image and text features are (mean 1 - cosine
over pairs of pages, first and last step): 0 is a collapse, where no contrastive term can do better than chance.

`tests/test_learnability.py` runs the same loop (`train_objective_alone`) on tiny inked pages in CI; this script is
the check at a size and on data that a study would use (by default the `study` preset: 64 px pages in 8 px patches).
Each page is its first `--max-length` tokens (one window), the set is fixed (no shuffling, no augmentation), and the
queue holds `--queue-size` entries.

    python benchmarks/bench_learnability.py --dataset_dir ../shared/data/funsd --size study \
        --out benchmarks/results/learnability-study-funsd.json

With `--pretrained` (a `examples/run_pretraining.py` output folder) every model starts from its pre-trained LayoutLMv3,
ViT and RoBERTa and reads the pages with its tokenizer (`--random-encoders vision,text` keeps random aligners, for
the comparison):

    python benchmarks/bench_learnability.py --dataset_dir ../shared/data/funsd --pretrained outputs/pretrained-study \
        --spatial-bias-init locality --out benchmarks/results/pretrained-study-cpu/learnability.json

Writes the JSON (per objective: losses and chance levels per step, the final ratio), a `.md` table and a `.png` of
loss / chance level against the step beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import transformers
from bench_lib import hardware
from transformers import LayoutLMv3ImageProcessorPil

from aetnet import AETNetConfig, AETNetModel, AETNetProcessor
from aetnet.alignment import registered_objectives
from aetnet.configuration_aetnet import IMAGE_FEATURE_POOLINGS, SPATIAL_BIAS_INITS
from aetnet.data import load_funsd, train_layoutlmv3_tokenizer


LAST = 5  # the ratio is the mean loss of the last LAST steps over their mean chance level


def ratio_to_chance(losses: list[float], chances: list[float], last: int = LAST) -> float:
    """Mean loss of the last `last` steps as a fraction of the mean chance level over the same steps."""
    return (sum(losses[-last:]) / last) / (sum(chances[-last:]) / last)


def feature_spread(features: torch.Tensor) -> float:
    """Mean 1 - cosine over the pairs of different documents of `(B, E)` normalised features: 0 means collapsed."""
    similarity = features.detach().float() @ features.detach().float().T
    return float((1 - similarity[~torch.eye(len(similarity), dtype=torch.bool)]).mean())


def train_objective_alone(
    model: AETNetModel,
    batch: dict,
    name: str,
    steps: int,
    learning_rate: float,
    stop_below: float | None = None,
    spreads: list[tuple[float, float]] | None = None,
) -> tuple[list[float], list[float]]:
    """
    Train `model` (built with only objective `name`) on the fixed `batch` with AdamW; the loss and the objective's
    chance level of every step. With `stop_below`, stop as soon as the ratio to chance falls below it. `spreads`, if
    given, receives the `feature_spread` of the aligners' image and text features at every step.
    """
    chances = []
    objective = model.objectives[name]

    def record(module, args):
        chances.append(module.chance_level(args[0]))
        if spreads is not None:
            spreads.append((feature_spread(args[0].image_feat), feature_spread(args[0].text_feat)))

    hook = objective.register_forward_pre_hook(record)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    losses = []
    try:
        for _ in range(steps):
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if stop_below is not None and len(losses) >= LAST and ratio_to_chance(losses, chances) < stop_below:
                break
    finally:
        hook.remove()
    return losses, chances


def funsd_batch(
    dataset_dir: str, pages: int, size: str, max_length: int, queue_size: int, seed: int, pretrained: Path | None = None
):
    """(config, batch): the first `pages` FUNSD training forms, one window each, and a config of that size; with
    `pretrained` (a `run_pretraining.py` output folder) the pages are prepared by its LayoutLMv3's tokenizer and image
    processor, and the config is `None` (`pretrained_model` builds the model)."""
    forms = load_funsd(dataset_dir, splits=("train",))["train"].select(range(pages))
    if pretrained is None:
        tokenizer = train_layoutlmv3_tokenizer(list(forms["words"]), vocab_size=2000, model_max_length=max_length)
        config = AETNetConfig.from_preset(size, vocab_size=len(tokenizer), max_length=max_length, queue_size=queue_size)
        side = config.layout_config.input_size
        image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": side, "width": side})
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained / "layoutlmv3")
        image_processor = LayoutLMv3ImageProcessorPil.from_pretrained(pretrained / "layoutlmv3", apply_ocr=False)
        config = None
    processor = AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)
    encoding = processor(
        list(forms["image"]),
        list(forms["words"]),
        boxes=list(forms["bboxes"]),
        boxes_normalized=True,
        max_length=max_length,
        padding="max_length",
        truncation=True,
        return_overflowing_tokens=False,
        stride=0,
        return_tensors="pt",
    )
    keys = ("input_ids", "bbox", "attention_mask", "pixel_values")
    return config, {key: encoding[key] for key in keys}


def pretrained_model(args: argparse.Namespace, name: str) -> AETNetModel:
    """AETNetModel with objective `name` alone on the encoders of `args.pretrained` (those of `args.random_encoders`
    with random weights), seeded like the from-scratch models."""
    folder = args.pretrained
    torch.manual_seed(args.seed)
    return AETNetModel.from_encoders_pretrained(
        str(folder / "layoutlmv3"),
        str(folder / "vit"),
        str(folder / "roberta"),
        random_encoders=args.random_encoders,
        alignment_objectives=[name],
        queue_size=args.queue_size,
        spatial_bias_init=args.spatial_bias_init,
        feature_centering=args.feature_centering,
        image_feature_pooling=args.image_feature_pooling,
    ).train()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="the FUNSD folder (training_data/, testing_data/)")
    parser.add_argument("--size", default="study", help="AETNet preset (default study)")
    parser.add_argument("--objectives", default=",".join(registered_objectives()), help="comma-separated")
    parser.add_argument("--pages", type=int, default=8, help="fixed training pages (one batch)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per page")
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--spatial-bias-init",
        default="random",
        choices=SPATIAL_BIAS_INITS,
        help="LayoutLMv3's 2D bias tables at the start (AETNetConfig.spatial_bias_init; default random)",
    )
    parser.add_argument(
        "--pretrained",
        type=Path,
        help="a run_pretraining.py output folder (layoutlmv3/, vit/, roberta/): start from its encoders and tokenizer "
        "instead of random weights of --size",
    )
    parser.add_argument(
        "--feature-centering",
        type=float,
        help="with --pretrained: AETNetConfig.feature_centering, the running centre's momentum (default: none)",
    )
    parser.add_argument(
        "--image-feature-pooling",
        default="cls",
        choices=IMAGE_FEATURE_POOLINGS,
        help="with --pretrained: AETNetConfig.image_feature_pooling, the ViT's [CLS] or its mean patch state",
    )
    parser.add_argument(
        "--random-encoders",
        default="",
        help="with --pretrained: comma-separated encoders (layout, vision, text) that keep random weights",
    )
    parser.add_argument("--out", type=Path, required=True, help="result JSON; .md and .png are written beside it")
    args = parser.parse_args(argv)
    args.random_encoders = [name for name in args.random_encoders.split(",") if name]
    if args.random_encoders and args.pretrained is None:
        parser.error(f"--random-encoders {','.join(args.random_encoders)} needs --pretrained")
    if args.pretrained is not None:
        missing = [name for name in ("layoutlmv3", "vit", "roberta") if not (args.pretrained / name).is_dir()]
        if missing:
            parser.error(f"--pretrained {args.pretrained}: no {', '.join(missing)} folder (run_pretraining's output)")
    args.objectives = [name for name in args.objectives.split(",") if name]
    unknown = sorted(set(args.objectives) - set(registered_objectives()))
    if unknown or not args.objectives:
        parser.error(f"--objectives: unknown {unknown or 'none given'}; choose among {registered_objectives()}")
    for name in ("pages", "steps", "max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.pages < 2:
        parser.error(f"--pages must be at least 2 (contrastive terms need other pages), got {args.pages}")
    return args


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for index, row in enumerate(rows):
        ratios = [loss / chance for loss, chance in zip(row["losses"], row["chances"])]
        axis.plot(range(1, len(ratios) + 1), ratios, color=f"C{index}", label=row["objective"])
    axis.axhline(1.0, color="black", linewidth=1, linestyle="--")
    axis.set_xlabel("step (one fixed batch)")
    axis.set_ylabel("loss / chance level")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config, batch = funsd_batch(
        args.dataset_dir, args.pages, args.size, args.max_length, args.queue_size, args.seed, args.pretrained
    )
    if config is not None:
        config.spatial_bias_init = args.spatial_bias_init
    rows = []
    for name in args.objectives:
        start = time.perf_counter()
        if config is None:
            model = pretrained_model(args, name)
        else:
            config.alignment_objectives = [name]
            torch.manual_seed(args.seed)
            model = AETNetModel(config).train()
        spreads = []
        losses, chances = train_objective_alone(model, batch, name, args.steps, args.learning_rate, spreads=spreads)
        ratio = ratio_to_chance(losses, chances)
        rows.append(
            {
                "objective": name,
                "first_loss": losses[0],
                "last_loss": sum(losses[-LAST:]) / LAST,
                "chance": sum(chances[-LAST:]) / LAST,
                "ratio": ratio,
                "seconds": round(time.perf_counter() - start, 1),
                "image_spread": [spreads[0][0], spreads[-1][0]],
                "text_spread": [spreads[0][1], spreads[-1][1]],
                "losses": losses,
                "chances": chances,
            }
        )
        print(
            f"{name}: loss {losses[0]:.3f} -> {rows[-1]['last_loss']:.3f}, chance {rows[-1]['chance']:.3f}, "
            f"ratio {ratio:.2f} ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    result = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            # Called from another script (`argv` given), the command is still this script's.
            "command": "python "
            + shlex.join(sys.argv if argv is None else ["benchmarks/bench_learnability.py", *argv]),
            "hardware": hardware(torch.device("cpu")),
            "software": f"torch {torch.__version__}, transformers {transformers.__version__}",
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    lines = [
        f"| objective | first loss | loss (last {LAST} steps) | chance level | loss / chance "
        "| image features 1 - cos, first -> last step | text features 1 - cos | s |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| `{r['objective']}` | {r['first_loss']:.3f} | {r['last_loss']:.3f} | {r['chance']:.3f} | "
            f"{r['ratio']:.2f} | {r['image_spread'][0]:.1e} -> {r['image_spread'][1]:.1e} "
            f"| {r['text_spread'][0]:.1e} -> {r['text_spread'][1]:.1e} | {r['seconds']:.0f} |"
            for r in rows
        ),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(lines))
    return result


__all__ = ["feature_spread", "funsd_batch", "main", "pretrained_model", "ratio_to_chance", "train_objective_alone"]


if __name__ == "__main__":
    main()
