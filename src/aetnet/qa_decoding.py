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
The one span decoder of extractive document question answering: start / end logits of a question's windows -> the
answer's first and last page word.

`examples/run_docvqa.py` (through [`~aetnet.data.docvqa.postprocess_qa_predictions`]), `aetnet predict` and
[`~aetnet.inference.DocumentPredictor`] all call [`best_answer_spans`], so that evaluation scores the very answers
that inference gives. This module imports numpy only, so that checkpoints can ship it with their pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


NO_ANSWER = {"start_word": -1, "end_word": -1, "score": 0.0}


def _log_softmax_over(logits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`log softmax(logits)` with the normaliser taken over `positions` only (the other entries are meaningless)."""
    top = logits[positions].max()
    return logits - (top + np.log(np.exp(logits[positions] - top).sum()))


def best_answer_spans(
    start_logits: Sequence,
    end_logits: Sequence,
    word_index: Sequence[Sequence[int]],
    window_to_example: Sequence[int] | None = None,
    num_examples: int | None = None,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> list[dict]:
    """
    The best answer span of every question (example) over all of its windows.

    The rule: in each window, the `n_best_size` highest start logits and end logits over the page-word tokens give
    the candidates `(start, end)` with `start <= end` and at most `max_answer_length` tokens, as in transformers'
    `run_qa.py` / `utils_qa.py`. A candidate scores `p(start) * p(end)`, each a softmax of the window's logits over
    its page-word tokens *and its `<s>` token* (position 0); the highest-scoring candidate over all the windows of the
    question wins (ties: the earlier window, then the higher start logit).

    Why this score. Within one window it ranks the candidates exactly as the sum of start and end logits of
    `utils_qa.py` does (the normaliser is the same for every candidate of the window). Across windows the raw logits
    are not comparable: the training loss is a softmax cross-entropy per window, which leaves every window's logits
    free up to a constant of its own, so a window's logits mean something only against each other. What training
    does pin down is the window's distribution, and in it the `<s>` token is the target of every window that lacks
    the answer ([`~aetnet.data.docvqa.answer_token_positions`]): keeping `<s>` in the normaliser makes the score the
    model's probability that the answer starts and ends there *in this window*, so a window that says "not here"
    (most of its mass on `<s>`) cannot win with its best guess. A softmax over the page words alone (what
    `aetnet predict` did before) erases exactly that signal and lets any window's best guess look certain. It is also
    the normaliser of transformers' `document-question-answering` pipeline (page words and `<s>` open, `<s>` never an
    answer), so that pipeline, `aetnet predict` and evaluation rank answers alike.

    Args:
        start_logits, end_logits (sequence of 1-D arrays or tensors, or a 2-D array): one row of logits per window;
            positions beyond the window's `word_index` row (LayoutLMv3's visual tokens, batch padding) are ignored.
        word_index (`Sequence[Sequence[int]]`): the processor's `word_index` of each window: the page word of every
            token, -1 for the question, special and padding tokens.
        window_to_example (`Sequence[int]`, *optional*): the question (0-based) of each window; by default all
            windows belong to question 0.
        num_examples (`int`, *optional*): the number of questions; by default one more than the largest of
            `window_to_example`.
        n_best_size (`int`, *optional*, defaults to 20): start and end candidates tried per window.
        max_answer_length (`int`, *optional*, defaults to 30): the longest answer, in tokens.

    Returns:
        `list[dict]`: per question, `start_word` and `end_word` (inclusive page-word indices) and `score` (the
        `p(start) * p(end)` above, in [0, 1]); `-1`, `-1` and 0.0 when no window has a valid span.
    """
    if window_to_example is None:
        window_to_example = [0] * len(word_index)
    if not len(start_logits) == len(end_logits) == len(window_to_example) == len(word_index):
        raise ValueError(
            f"Got {len(start_logits)} start and {len(end_logits)} end logit rows, {len(word_index)} word_index rows "
            f"and {len(window_to_example)} window indices: one of each per window."
        )
    if num_examples is None:
        num_examples = max((int(example) for example in window_to_example), default=-1) + 1
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"`n_best_size` and `max_answer_length` must be >= 1, got {n_best_size}, {max_answer_length}")
    best = [(-np.inf, dict(NO_ANSWER)) for _ in range(num_examples)]
    rows = zip(start_logits, end_logits, word_index, window_to_example)
    for window, (starts, ends, ids, example) in enumerate(rows):
        example = int(example)
        if not 0 <= example < num_examples:
            raise ValueError(f"`window_to_example[{window}]` is {example}, outside the {num_examples} questions.")
        score, span = _best_window_span(starts, ends, ids, n_best_size, max_answer_length)
        # Strictly greater: on a tie the earlier window keeps the answer.
        if score > best[example][0]:
            best[example] = (score, span)
    return [span for _, span in best]


def _best_window_span(starts, ends, ids, n_best_size: int, max_answer_length: int) -> tuple[float, dict | None]:
    """The best span of one window and its log score (the rule of [`best_answer_spans`]); `(-inf, None)` when the
    window has no page word or no valid span."""
    ids = np.asarray(ids).reshape(-1)
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1)
    length = min(len(ids), len(starts), len(ends))
    context = np.flatnonzero(ids[:length] >= 0)
    best_score, best_span = -np.inf, None
    if not context.size:
        return best_score, best_span
    normaliser = np.union1d(context, [0])
    log_starts, log_ends = _log_softmax_over(starts, normaliser), _log_softmax_over(ends, normaliser)
    # Stable sorts: equal logits keep reading order, so that both call sites break ties alike.
    start_candidates = context[np.argsort(-starts[context], kind="stable")[:n_best_size]]
    end_candidates = context[np.argsort(-ends[context], kind="stable")[:n_best_size]]
    for start in start_candidates:
        for end in end_candidates:
            if end < start or end - start + 1 > max_answer_length:
                continue
            score = log_starts[start] + log_ends[end]
            if score > best_score:
                best_score = score
                best_span = {"start_word": int(ids[start]), "end_word": int(ids[end]), "score": float(np.exp(score))}
    return best_score, best_span


__all__ = ["NO_ANSWER", "best_answer_spans"]
