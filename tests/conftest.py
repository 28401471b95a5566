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
"""Test-wide settings: no network, deterministic CPU runs, and a quiet transformers."""

import importlib.util
import os
import socket
import sys
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


torch.set_num_threads(2)

# The example scripts import their shared plumbing (`utils_aetnet.py`, `utils_aetnet_data.py`) from their own folder,
# which is on `sys.path` when a script runs; tests that import a script or those modules in-process need it too.
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.append(str(EXAMPLES_DIR))

# Devices of the device-parametrised tests (fast paths, mixed precision): the CPU, and a GPU where one is present. The
# GPU cases are absent, not skipped, on a machine without one (as in CI); `pytest -k cuda` runs only them.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture
def restore_logging():
    """For tests that run an example script in-process: the script sets the log levels and thread count globally."""
    import datasets
    import transformers

    verbosity = transformers.utils.logging.get_verbosity()
    datasets_verbosity = datasets.utils.logging.get_verbosity()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is faster on one thread of a busy 2-core machine
    yield
    transformers.utils.logging.set_verbosity(verbosity)
    datasets.utils.logging.set_verbosity(datasets_verbosity)
    torch.set_num_threads(threads)


def load_example(name: str):
    """Import `examples/<name>.py` as a module, so that a test can call its `main()` in-process."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def tiny_config(num_labels: int = 3, **kwargs):
    """The `tiny` preset over a 99-token vocabulary, queue of 8, no dropout (so that two forwards agree)."""
    from aetnet import AETNetConfig

    config = AETNetConfig.from_preset(
        "tiny", vocab_size=99, max_length=32, queue_size=8, num_labels=num_labels, **kwargs
    )
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = 0.0
    return config


def tiny_documents(count: int = 4, seq_len: int = 10, image: int = 16, num_labels: int = 3, seed: int = 0):
    """Token-classification windows for `tiny_config`: `<s> ... </s>` ids, ordered boxes (none for the special
    tokens), labels and a page each, as the collator takes them."""
    generator = torch.Generator().manual_seed(seed)
    documents = []
    for _ in range(count):
        input_ids = torch.randint(5, 99, (seq_len,), generator=generator)
        input_ids[0], input_ids[-1] = 0, 2
        corner = torch.randint(0, 900, (seq_len, 2), generator=generator)
        bbox = torch.cat([corner, corner + 60], dim=-1)
        bbox[0] = bbox[-1] = 0
        documents.append(
            dict(
                input_ids=input_ids,
                bbox=bbox,
                attention_mask=torch.ones(seq_len, dtype=torch.long),
                labels=torch.randint(0, num_labels, (seq_len,), generator=generator),
                pixel_values=torch.randn(3, image, image, generator=generator),
            )
        )
    return documents


def random_pages(config, count: int = 4, seq_len: int = 12, seed: int = 0) -> dict:
    """`count` pages of random token ids and random pixels for an `AETNetConfig` (the aligners' document features)."""
    generator = torch.Generator().manual_seed(seed)
    side = config.layout_config.input_size
    return dict(
        input_ids=torch.randint(5, config.layout_config.vocab_size, (count, seq_len), generator=generator),
        pixel_values=torch.randn(count, 3, side, side, generator=generator),
    )


def save_tiny_encoders(root: Path, words: list[str]) -> list[str]:
    """Tiny local LayoutLMv3 (with a tokenizer trained on `words` and a 16 px image processor), ViT and RoBERTa
    checkpoints in `root/layoutlmv3`, `root/vit` and `root/roberta` (`run_pretraining.py`'s layout); their paths."""
    from transformers import (
        LayoutLMv3Config,
        LayoutLMv3ImageProcessorPil,
        LayoutLMv3Model,
        RobertaConfig,
        RobertaModel,
        ViTConfig,
        ViTModel,
    )

    from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer

    tokenizer = train_layoutlmv3_tokenizer([" ".join(words)] * 2, vocab_size=400)
    shared = dict(hidden_size=36, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    paths = [root / "layoutlmv3", root / "vit", root / "roberta"]
    LayoutLMv3Model(
        LayoutLMv3Config(
            **shared, vocab_size=len(tokenizer), coordinate_size=6, shape_size=6, input_size=16, patch_size=4
        )
    ).save_pretrained(paths[0])
    tokenizer.save_pretrained(paths[0])
    LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}).save_pretrained(paths[0])
    ViTModel(ViTConfig(**shared, image_size=16, patch_size=4), add_pooling_layer=False).save_pretrained(paths[1])
    RobertaModel(RobertaConfig(**shared, vocab_size=len(tokenizer)), add_pooling_layer=False).save_pretrained(paths[2])
    return [str(path) for path in paths]


def free_port() -> int:
    """A free local TCP port, for the rendezvous of the tests' 2-process gloo groups."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
