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
Throughput of LayoutLMv3's pre-training step (`aetnet.pretraining`): pages per second of the whole step (the
collator's span and block masks and word-patch labels, then MLM + MIM + WPA forward, backward and optimizer step)
against the same stock `LayoutLMv3Model` trained by a plain loop on the same unmasked batch with one linear token
head (what the encoder costs by itself), the share of the step spent preparing masks and labels, and peak memory.

    python benchmarks/bench_pretraining.py --preset study --batch_size 8 --seq_len 512 --steps 10

Writes a JSON (`--out`) with every timing, the versions, the hardware and the command. On CPU, peak memory is the
process's peak RSS read after each variant (the plain loop runs first, so the second reading is the pre-training
step's peak whenever it is the larger); on CUDA, `torch.cuda.max_memory_allocated` per variant.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from bench_lib import hardware, synchronize
from torch import nn
from transformers import LayoutLMv3Model

from aetnet.pretraining import DataCollatorForLayoutLMv3PreTraining, LayoutLMv3ForPreTraining, pretraining_configs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="study", choices=["tiny", "study", "small", "base"])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per variant.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON file to write (default: print only).")
    return parser.parse_args(argv)


def make_features(config, batch_size: int, seq_len: int, seed: int = 0) -> list[dict]:
    """Windows as `AETNetProcessor` gives them: `<s> ... </s>`, words of two tokens with one box each, a page."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(batch_size):
        ids = torch.randint(5, config.vocab_size, (seq_len,), generator=generator)
        ids[0], ids[-1] = config.bos_token_id, config.eos_token_id
        corner = torch.randint(0, 900, (seq_len // 2 + 1, 2), generator=generator)
        boxes = torch.cat([corner, corner + torch.randint(1, 100, corner.shape, generator=generator)], dim=-1)
        bbox = boxes.repeat_interleave(2, dim=0)[:seq_len]
        word_index = torch.arange(seq_len) // 2
        bbox[0], bbox[-1], word_index[0], word_index[-1] = 0, 0, -1, -1
        pixels = torch.randn(3, config.input_size, config.input_size, generator=generator)
        features.append(
            dict(
                input_ids=ids, bbox=bbox, attention_mask=torch.ones(seq_len), pixel_values=pixels, word_index=word_index
            )
        )
    return features


def _peak_memory(device: torch.device) -> float:
    """GiB: CUDA's peak allocation since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(step, steps: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def plain_loop_step(config, features, device):
    """The stock encoder with one linear token head, trained by a plain loop on the unmasked batch."""
    encoder = LayoutLMv3Model(config).to(device).train()
    head = nn.Linear(config.hidden_size, config.vocab_size).to(device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-5)
    batch = {key: torch.stack([f[key] for f in features]).to(device) for key in ("input_ids", "bbox", "pixel_values")}
    length = batch["input_ids"].shape[1]

    def step():
        hidden = encoder(**batch).last_hidden_state[:, :length]
        loss = nn.functional.cross_entropy(head(hidden).flatten(0, 1), batch["input_ids"].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def pretraining_step(config, features, device, collate_times: list[float]):
    """The package's step: the collator's masks and labels, then `LayoutLMv3ForPreTraining` on the masked batch."""
    model = LayoutLMv3ForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    collator = DataCollatorForLayoutLMv3PreTraining.from_config(config, seed=0)

    def step():
        start = time.perf_counter()
        batch = {key: value.to(device) for key, value in collator(features).items()}
        collate_times.append(time.perf_counter() - start)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    config = pretraining_configs(args.preset, vocab_size=args.vocab_size, max_length=args.seq_len).layout
    features = make_features(config, args.batch_size, args.seq_len)
    torch.manual_seed(0)
    result = {"command": " ".join(["python", *sys.argv]), "args": vars(args), "hardware": hardware(device)}
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    plain = _timed(plain_loop_step(config, features, device), args.steps, args.warmup, device)
    result["plain_loop"] = {"step_s": statistics.median(plain), "peak_memory_gib": _peak_memory(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    collate_times: list[float] = []
    ours = _timed(pretraining_step(config, features, device, collate_times), args.steps, args.warmup, device)
    collate = statistics.median(collate_times[args.warmup :])
    result["pretraining"] = {
        "step_s": statistics.median(ours),
        "collate_s": collate,
        "collate_share": collate / statistics.median(ours),
        "peak_memory_gib": _peak_memory(device),
    }
    for name in ("plain_loop", "pretraining"):
        result[name]["pages_per_s"] = args.batch_size / result[name]["step_s"]
    result["step_ratio"] = result["pretraining"]["step_s"] / result["plain_loop"]["step_s"]
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
