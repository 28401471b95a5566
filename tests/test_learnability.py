"""
Learnability: every registered alignment objective, trained alone on a small fixed set of documents, must fall clearly
below its own chance level (`AlignmentObjective.chance_level`), so that an objective that silently stops learning (a
detached feature, a lost gradient, a wrong target) fails CI. The cases iterate over the registry: a new objective is
covered as soon as it is registered and defines its chance level.

The pages are 32 px in 4 px patches (64 cells), not the `tiny` preset's 16 px: at 16 px different random pages give
nearly identical [CLS] features, and the document-level objectives cannot learn (issue 14). Each page shows its
text as ink in the tokens' boxes, so that what the text says about the page is visible on it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from aetnet import AETNetModel
from aetnet.alignment import get_objective, prior_entropy, registered_objectives
from aetnet.data_collator import AETNetDataCollator
from aetnet.objective_tia import box_pixel_mask

from conftest import tiny_config, tiny_documents

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_learnability import LAST, ratio_to_chance, train_objective_alone  # noqa: E402


IMAGE_SIZE = 32
NUM_DOCUMENTS = 8
STEPS = 200
# Passing: within STEPS steps, the mean loss of the last LAST steps below this fraction of their mean chance level
# (`bench_learnability.ratio_to_chance`).
MARGIN = 0.8
LEARNING_RATE = 5e-3


def inked_documents(count: int, seed: int) -> list[dict]:
    """
    `tiny_documents` whose pages show their text: white, with ink (-1) in every token's box, as a rendered page
    has. Random-noise pages carry nothing the text could align with: TIA's covers and TIM's swaps would not be
    visible, and the page-level objectives would only memorise noise.
    """
    documents = tiny_documents(count=count, seq_len=16, image=IMAGE_SIZE, seed=seed)
    for document in documents:
        boxed = (document["bbox"] != 0).any(dim=-1)
        ink = box_pixel_mask(document["bbox"][None], boxed[None], IMAGE_SIZE, IMAGE_SIZE)[0]
        document["pixel_values"] = torch.where(ink, -1.0, 1.0).expand(3, -1, -1).clone()
    return documents


def train_alone(name: str, seed: int, steps: int = STEPS) -> tuple[list[float], list[float]]:
    """
    Train a tiny AETNetModel with only `name` enabled on fixed documents, for `steps` steps or until the loss is
    clearly below chance; (losses, chance levels) per step.
    """
    torch.manual_seed(seed)
    config = tiny_config(alignment_objectives=[name])  # queue of 8
    config.layout_config.input_size = config.vision_config.image_size = IMAGE_SIZE
    model = AETNetModel(config).train()
    batch = AETNetDataCollator(pad_token_id=1)(inked_documents(NUM_DOCUMENTS, seed))
    batch.pop("labels")
    return train_objective_alone(model, batch, name, steps, LEARNING_RATE, stop_below=MARGIN)


# Measured (seed 0, lr 5e-3, 2026-12-02): after 200 steps GLITC ends at 0.58 x chance, XMM-image 0.76, DITC 0.56, the
# others below 0.2; TIA and TIM stay at 1.00 x their label prior for 300 steps (also with 4 x 4 coarse boxes, lr 2e-2
# or no injection). From random weights they need LayoutLMv3 to learn where each token's box lies on the patch
# grid (its 2D relative-position tables get no gradient: transformers builds that bias under `no_grad`, so only the
# learnt 2D embeddings and patch positions can do it), which a pretrained model brings and 200 steps do not.
# TIA's mark is strict: the day it learns here, the mark must go. TIM's is not: with 8 pairs a step its loss is
# noisy around the prior, and a 5-step mean can dip below the margin by chance (it did once in a full-suite run).
FROM_SCRATCH_TOO_SLOW = {"tia": True, "tim": False}
# The package's objectives; toys that other test modules register (at import) are not meant to learn.
BUILT_IN = [name for name in registered_objectives() if get_objective(name).__module__.startswith("aetnet.")]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                reason="stays at its label prior from random weights (see above)", strict=FROM_SCRATCH_TOO_SLOW[name]
            ),
        )
        if name in FROM_SCRATCH_TOO_SLOW
        else name
        for name in BUILT_IN
    ],
)
def test_objective_learns_below_chance(name):
    losses, chances = train_alone(name, seed=0)
    assert all(c > 0 for c in chances), f"{name}: chance levels {chances[:3]}... must be positive"
    ratio = ratio_to_chance(losses, chances)
    assert ratio < MARGIN, (
        f"{name} did not learn: last-{LAST} loss {sum(losses[-LAST:]) / LAST:.3f} is {ratio:.2f} x its chance "
        f"level {sum(chances[-LAST:]) / LAST:.3f} (needs < {MARGIN}); first losses {losses[:3]}"
    )


def test_prior_entropy_is_the_loss_of_the_best_constant_prediction():
    counts = torch.tensor([2, 6, 0])
    p = counts[:2] / 8.0
    assert prior_entropy(counts) == pytest.approx(float(-(p * p.log()).sum()))
    assert prior_entropy(torch.tensor([5])) == 0.0 and prior_entropy(torch.tensor([0, 0])) == 0.0


FUNSD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "funsd"


@pytest.mark.shared_data
def test_the_benchmark_runs_each_objective_alone_on_real_funsd_pages(tmp_path):
    from bench_learnability import main

    out = tmp_path / "learn.json"
    argv = ["--dataset_dir", str(FUNSD_DIR), "--size", "tiny", "--pages", "2", "--max-length", "32", "--steps", "6"]
    result = main([*argv, "--objectives", "ditc,tia", "--out", str(out)])
    assert [row["objective"] for row in result["rows"]] == ["ditc", "tia"]
    ditc = result["rows"][0]
    assert len(ditc["losses"]) == len(ditc["chances"]) == 6
    # log N over the two pages and the filled part of the 8-entry queue (two more entries a step, empty at first)
    assert ditc["chances"] == pytest.approx([math.log(2 + min(2 * step, 8)) for step in range(6)])
    assert (out.with_suffix(".md")).read_text().count("\n") == 4 and out.with_suffix(".png").stat().st_size > 5000
    spreads = [spread for row in result["rows"] for spread in row["image_spread"] + row["text_spread"]]
    assert all(-1e-6 <= spread <= 2.0 for spread in spreads)  # 1 - cos, up to rounding
