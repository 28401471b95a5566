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
Overlapping windows of a long document and the way back: the default overlap, the document word of every token, the
first sub-token of every word, and [`merge_window_predictions`], the one rule that turns the token-classification
logits of a document's windows into one label distribution per word (used by the example scripts' evaluation and by
[`~aetnet.inference.DocumentPredictor`] alike).

This module imports torch and numpy only (the processor re-exports it), so that checkpoints can ship it as remote
code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch


if TYPE_CHECKING:
    from transformers.tokenization_utils_base import BatchEncoding


def default_stride(max_length: int) -> int:
    """The overlap of consecutive windows when none is given: `min(128, max_length // 4)` tokens, so that short
    windows (e.g. `max_length=128`) keep room for new words. `aetnet predict` and the example scripts use it."""
    return min(128, max_length // 4)


def word_index_rows(encoding: BatchEncoding, content_sequence: int = 0) -> list[list[int]]:
    """
    The document word of every token of every window of a tokenizer `encoding` (with its `encodings`): the index
    into the words of sequence `content_sequence` (0 for words alone, 1 for the words after a question), -1 for
    special, question and padding tokens. It is the `word_index` field of [`AETNetProcessor`]'s output, which stays
    in a dataset after `dataset.map` drops the encodings that `encoding.word_ids(i)` reads.
    """
    return [
        [w if w is not None and s == content_sequence else -1 for w, s in zip(e.word_ids, e.sequence_ids)]
        for e in encoding.encodings
    ]


def pad_rows(rows, length: int | None = None, value: float = -1) -> torch.Tensor:
    """
    Rows of different lengths (ragged lists, as a dataset column holds them, or tensors of shape `(length_i, ...)`)
    as one tensor of shape `(num_rows, length, ...)`: each row cut or right-padded with `value` to `length` (default:
    the longest row). A tensor or array is taken as already stacked, and only cut or padded along its second axis.
    """
    if isinstance(rows, (torch.Tensor, np.ndarray)):
        stacked = torch.as_tensor(rows)
        if length is None or stacked.shape[1] == length:
            return stacked
        stacked = stacked[:, :length]
        pad = (0, 0) * (stacked.dim() - 2) + (0, length - stacked.shape[1])
        return torch.nn.functional.pad(stacked, pad, value=value)
    rows = [torch.as_tensor(row) for row in rows]
    if length is None:
        length = max((len(row) for row in rows), default=0)
    if not rows:
        return torch.empty(0, length)
    padded = []
    for row in rows:
        row = row[:length]
        padded.append(torch.nn.functional.pad(row, (0, 0) * (row.dim() - 1) + (0, length - len(row)), value=value))
    return torch.stack(padded)


def pad_word_index(word_index, length: int | None = None) -> torch.Tensor:
    """Rows of `word_index` (a tensor, or ragged lists as a dataset column holds them) as one `(num_windows,
    length)` long tensor, cut or padded with -1 to `length` (default: the longest row)."""
    if not isinstance(word_index, (torch.Tensor, np.ndarray)):
        word_index = [torch.as_tensor(row, dtype=torch.long).reshape(-1) for row in word_index]
    return pad_rows(word_index, length, value=-1).long()


def first_subword_mask(word_ids: torch.Tensor, overflow_to_sample_mapping: torch.Tensor) -> torch.Tensor:
    """
    Mark, in every window, the tokens that are the *first* sub-token of their word.

    A window produced by the tokenizer's overflow can start in the middle of a word. Its leading tokens then belong
    to a word whose first sub-token lies in an earlier window, and must not carry the word's label (the stock
    tokenizer labels them, so labels leak onto continuation sub-tokens). The leading run of a window is kept only
    when its word does not occur in the previous window of the same document. The earliest window that contains a
    word always holds its first sub-token, so every word stays marked in at least one window; the only vote lost is
    a duplicate, when a window starts exactly on a word that the overlap already showed in the previous window.

    Args:
        word_ids (`torch.Tensor` of shape `(num_windows, seq_len)`): source word index per token, -1 elsewhere.
        overflow_to_sample_mapping (`torch.Tensor` of shape `(num_windows,)`): document index of each window; the
            windows of one document must be consecutive and in order, as the tokenizer returns them.

    Returns:
        `torch.BoolTensor` of shape `(num_windows, seq_len)`.
    """
    word_ids = torch.as_tensor(word_ids)
    mapping = torch.as_tensor(overflow_to_sample_mapping, device=word_ids.device)
    previous_token = torch.nn.functional.pad(word_ids[:, :-1], (1, 0), value=-1)
    run_start = (word_ids >= 0) & (word_ids != previous_token)
    leading = run_start & (previous_token < 0)
    # Word of the leading run of each window (the first content token), -1 for windows without words.
    has_word = (word_ids >= 0).any(dim=1)
    lead_word = word_ids.gather(1, (word_ids >= 0).int().argmax(dim=1, keepdim=True))[:, 0]
    lead_word = torch.where(has_word, lead_word, torch.full_like(lead_word, -1))
    previous_window = torch.roll(word_ids, shifts=1, dims=0)
    same_document = torch.zeros_like(has_word)
    same_document[1:] = mapping[1:] == mapping[:-1]
    continued = same_document & has_word & (previous_window == lead_word[:, None]).any(dim=1)
    return run_start & ~(leading & continued[:, None])


def merge_window_predictions(
    logits,
    word_ids,
    overflow_to_sample_mapping,
    num_words: int | Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """
    Merge the token-classification logits of overlapping windows into one probability distribution per word: the
    one rule of the example scripts' evaluation and of [`~aetnet.inference.DocumentPredictor`] (`aetnet predict`,
    the `document-token-classification` pipeline).

    The rule: for each word, take its first sub-token in every window that holds that first sub-token (see
    [`first_subword_mask`]; continuation sub-tokens are ignored, as in training), turn each window's logits into
    probabilities (softmax) and average them. The label is the argmax and its confidence the averaged probability.

    Why probabilities and not logits. A word near a window's edge is seen with half its context and can get large,
    confidently wrong logits; averaging logits lets such a window outvote the others by any margin, while averaging
    probabilities bounds every window's vote to 1 / (number of windows). The average of distributions is itself a
    distribution, so the confidence `aetnet predict` reports is the very score that chose the label; and it is how
    the page classes of a sequence-classification page are averaged over its windows.

    Args:
        logits (`torch.Tensor` of shape `(num_windows, seq_len, num_labels)`, or one `(length, num_labels)` tensor
            per window): the model's token logits, text part only; positions beyond a window's `word_ids` row are
            ignored.
        word_ids (`torch.Tensor` of shape `(num_windows, seq_len)`, or one list per window): the processor's
            `word_index` (-1 = no word). Ragged rows (a dataset column, unpadded windows) are padded or cut to
            `seq_len` with -1.
        overflow_to_sample_mapping (`torch.Tensor` of shape `(num_windows,)`): document index of each window, the
            windows of a document consecutive and in order. The processor numbers documents from 0 in every call:
            when windows of several calls are concatenated (e.g. `dataset.map`), add each call's first document
            index so that the ids are global.
        num_words (`int` or `list[int]`, *optional*): number of words per document (one int is used for all). By
            default, one more than the largest word index seen in the document.

    Returns:
        `list[torch.Tensor]`: one float tensor of shape `(num_words, num_labels)` of class probabilities per document
        (documents `0 .. max(mapping)`). A word that has no first sub-token in any window (e.g. dropped by truncation
        without overflow) gets a row of NaN rather than a made-up score.
    """
    logits, word_ids, mapping = _window_tensors(logits, word_ids, overflow_to_sample_mapping)
    mask = first_subword_mask(word_ids, mapping)
    token_document = mapping[:, None].expand_as(word_ids)
    counts_per_document = _words_per_document(num_words, word_ids, mapping, mask, token_document)
    counts = torch.tensor(counts_per_document, dtype=torch.long, device=logits.device)
    # One flat row per (document, word): scatter-add every first sub-token's probabilities into its row.
    offsets = torch.cumsum(counts, dim=0) - counts
    rows = (offsets[token_document] + word_ids)[mask]
    total = int(counts.sum())
    sums = torch.zeros(total, logits.shape[-1], dtype=torch.float32, device=logits.device)
    sums.index_add_(0, rows, logits[mask].float().softmax(-1))
    hits = torch.bincount(rows, minlength=total).to(sums.dtype)
    merged = sums / hits[:, None]  # 0 / 0 = NaN for words never seen
    return list(torch.split(merged, counts_per_document))


def _window_tensors(logits, word_ids, overflow_to_sample_mapping) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inputs of [`merge_window_predictions`] as tensors on the logits' device (ragged rows padded), checked:
    matching shapes, and the windows of each document consecutive."""
    if not isinstance(logits, (torch.Tensor, np.ndarray)):
        logits = pad_rows(logits, value=0.0)
    logits = torch.as_tensor(logits)
    if logits.dim() == 3 and not isinstance(word_ids, (torch.Tensor, np.ndarray)):
        word_ids = pad_word_index(word_ids, logits.shape[1])
    word_ids = torch.as_tensor(word_ids, device=logits.device).long()
    mapping = torch.as_tensor(overflow_to_sample_mapping, device=logits.device).long()
    if logits.dim() != 3 or logits.shape[:2] != word_ids.shape:
        raise ValueError(
            f"`logits` must have shape (num_windows, seq_len, num_labels) matching `word_ids` {tuple(word_ids.shape)},"
            f" got {tuple(logits.shape)}"
        )
    if mapping.shape != (word_ids.shape[0],):
        raise ValueError(
            f"`overflow_to_sample_mapping` must have shape ({word_ids.shape[0]},), got {tuple(mapping.shape)}"
        )
    run_starts = torch.ones_like(mapping, dtype=torch.bool)
    run_starts[1:] = mapping[1:] != mapping[:-1]
    if int(run_starts.sum()) != len(torch.unique(mapping)):
        raise ValueError(
            "The windows of each document must be consecutive in `overflow_to_sample_mapping`, got "
            f"{mapping.tolist()[:20]}; when concatenating several processor calls, make the document ids global."
        )
    return logits, word_ids, mapping


def _words_per_document(num_words, word_ids, mapping, mask, token_document) -> list[int]:
    """The number of words of every document (`num_words`, or one more than the largest word index seen), checked to
    hold every first sub-token's word."""
    num_documents = int(mapping.max()) + 1 if mapping.numel() else 0
    if num_words is None:
        seen_max = torch.full((num_documents,), -1, dtype=torch.long, device=word_ids.device)
        seen_max = seen_max.scatter_reduce(0, token_document.reshape(-1), word_ids.reshape(-1), reduce="amax")
        counts_per_document = (seen_max + 1).tolist()
    elif isinstance(num_words, int):
        counts_per_document = [num_words] * num_documents
    else:
        counts_per_document = list(num_words)
        if len(counts_per_document) != num_documents:
            raise ValueError(f"`num_words` has {len(counts_per_document)} entries for {num_documents} documents")
    counts = torch.tensor(counts_per_document, dtype=torch.long, device=word_ids.device)
    too_large = mask & (word_ids >= counts[token_document])
    if too_large.any():
        window, position = too_large.nonzero()[0].tolist()
        document = int(mapping[window])
        raise ValueError(
            f"`word_ids[{window}][{position}]` = {int(word_ids[window, position])} is out of range for document "
            f"{document} with `num_words` = {counts_per_document[document]}"
        )
    return counts_per_document


__all__ = [
    "default_stride",
    "first_subword_mask",
    "merge_window_predictions",
    "pad_rows",
    "pad_word_index",
    "word_index_rows",
]
