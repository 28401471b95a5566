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
"""Train a small byte-level BPE tokenizer in the LayoutLMv3 (RoBERTa) format without downloading anything.

The Hugging Face Hub is not always reachable (CI, air-gapped clusters), yet the processor, the examples and the tests
all need a `LayoutLMv3Tokenizer`. [`train_layoutlmv3_tokenizer`] builds one from local text with the same special
tokens and ids as `roberta-base` (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4), so token ids keep their
meaning for LayoutLMv3 and for the RoBERTa aligner; only the vocabulary is smaller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LayoutLMv3Tokenizer


# Order fixes the ids: RoBERTa puts <s>, <pad>, </s>, <unk> first and the trainer assigns ids in list order.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

_BYTE_ALPHABET_SIZE = len(pre_tokenizers.ByteLevel.alphabet())


def _iter_texts(texts: Iterable[str] | Iterable[list[str]]) -> Iterator[str]:
    """Yield one string per document; pre-split documents (lists of words) are joined with single spaces."""
    for index, text in enumerate(texts):
        if isinstance(text, str):
            yield text
        elif isinstance(text, (list, tuple)) and all(isinstance(word, str) for word in text):
            yield " ".join(text)
        else:
            raise ValueError(
                f"`texts[{index}]` must be a string or a list of strings, got {type(text).__name__}: {text!r:.80}"
            )


def train_layoutlmv3_tokenizer(
    texts: Iterable[str] | Iterable[list[str]],
    vocab_size: int = 8000,
    min_frequency: int = 2,
    show_progress: bool = False,
    model_max_length: int = 512,
) -> LayoutLMv3Tokenizer:
    """
    Train a byte-level BPE [`LayoutLMv3Tokenizer`] on local text.

    The pre-tokenizer is byte-level with `add_prefix_space=True`, exactly as in `LayoutLMv3Tokenizer`, so every word
    of a pre-split document is encoded the same way at training and at use time. The full 256-symbol byte alphabet
    is always in the vocabulary, so no input is ever mapped to `<unk>`. Training is deterministic: the same texts
    and arguments give the same vocabulary and merges.

    Args:
        texts (`Iterable[str]` or `Iterable[list[str]]`):
            Training documents, either as strings or as lists of words (e.g. FUNSD words), which are joined with
            spaces.
        vocab_size (`int`, *optional*, defaults to 8000):
            Target vocabulary size, special tokens and the byte alphabet included. Must be at least 261
            (256 bytes + 5 special tokens). Small corpora may stop below it.
        min_frequency (`int`, *optional*, defaults to 2):
            Minimum pair count for a merge to be learned.
        show_progress (`bool`, *optional*, defaults to `False`):
            Show the `tokenizers` progress bar.
        model_max_length (`int`, *optional*, defaults to 512):
            Stored as `tokenizer.model_max_length` (LayoutLMv3 has 512 text positions).

    Returns:
        [`LayoutLMv3Tokenizer`]: a fast tokenizer that round-trips through `save_pretrained` /
        `AutoTokenizer.from_pretrained`.

    Example:

    ```python
    >>> from aetnet.data.tokenizer_training import train_layoutlmv3_tokenizer

    >>> tokenizer = train_layoutlmv3_tokenizer(["Invoice number 42", "Total amount due"], vocab_size=300)
    >>> tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id
    (0, 1, 2)
    ```
    """
    minimum_size = _BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if not isinstance(vocab_size, int) or vocab_size < minimum_size:
        raise ValueError(
            f"`vocab_size` must be an int >= {minimum_size} (byte alphabet + special tokens), got {vocab_size!r}"
        )
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"`min_frequency` must be an int >= 1, got {min_frequency!r}")

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    bpe.train_from_iterator(_iter_texts(texts), trainer=trainer)

    model_state = json.loads(bpe.to_str())["model"]
    # tokenizers < 0.20 serialises merges as "a b" strings, newer versions as ["a", "b"] pairs.
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]
    return LayoutLMv3Tokenizer(vocab=model_state["vocab"], merges=merges, model_max_length=model_max_length)


__all__ = ["SPECIAL_TOKENS", "train_layoutlmv3_tokenizer"]
