"""Tests of AETNetProcessor, window merging and the offline tokenizer trainer (tiny tokenizer and images, real OCR)."""

import json
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from transformers import AutoTokenizer, LayoutLMv3ImageProcessorPil

from aetnet.processing_aetnet import AETNetProcessor, first_subword_mask, merge_window_predictions
from aetnet.tokenizer_utils import train_layoutlmv3_tokenizer


VOCAB = ["invoice", "total", "amount", "due", "date", "name", "address", "phone", "number", "company", "the", "of"]
LOGGER = "aetnet.processing_aetnet"


def corpus(seed: int = 0, num_docs: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(25)) for _ in range(num_docs)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_layoutlmv3_tokenizer(corpus(), vocab_size=320)


@pytest.fixture
def processor(tokenizer):
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16})
    return AETNetProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture
def process(processor):
    """The processor with short windows (the default stride of 128 needs max_length > 130)."""

    def call(*args, **kwargs):
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("stride", 16)
        return processor(*args, **kwargs)

    return call


def make_document(num_words: int, seed: int = 0, width: int = 200, height: int = 100):
    """Words mixing known words (one token) and unknown strings (several tokens), with in-page pixel boxes."""
    rng = random.Random(seed)
    words = [
        rng.choice(VOCAB) if rng.random() < 0.5 else rng.choice(VOCAB) + "zq" * rng.randint(1, 4)
        for _ in range(num_words)
    ]
    boxes = []
    for _ in range(num_words):
        x0, y0 = rng.randint(0, width - 20), rng.randint(0, height - 10)
        boxes.append([x0, y0, x0 + rng.randint(1, 20), y0 + rng.randint(1, 10)])
    labels = [rng.randint(0, 6) for _ in range(num_words)]
    return words, boxes, labels


def word_runs(word_ids: list[int]) -> list[tuple[int, int]]:
    """(position, word) of every position where a new word starts."""
    return [(j, w) for j, w in enumerate(word_ids) if w >= 0 and (j == 0 or word_ids[j - 1] != w)]


# --------------------------------------------------------------------------------------------- basic outputs


def test_keys_shapes_and_first_subtoken_labels(process, processor):
    words, boxes, labels = make_document(12)
    out = process(
        Image.new("RGB", (200, 100), "white"),
        words,
        boxes=boxes,
        word_labels=labels,
        max_length=64,
        return_tensors="pt",
    )
    expected = {
        "input_ids",
        "attention_mask",
        "bbox",
        "labels",
        "word_index",
        "overflow_to_sample_mapping",
        "pixel_values",
    }
    assert set(out.keys()) == expected
    assert out["input_ids"].shape == (1, 64) and out["bbox"].shape == (1, 64, 4)
    assert out["pixel_values"].shape == (1, 3, 16, 16) and out["pixel_values"].dtype == torch.float32
    assert out["overflow_to_sample_mapping"].tolist() == [0]
    word_ids = out["word_index"][0].tolist()
    starts = word_runs(word_ids)
    assert [w for _, w in starts] == list(range(12))  # every word, in order, once
    expected_labels = [-100] * 64
    for position, word in starts:
        expected_labels[position] = labels[word]
    assert out["labels"][0].tolist() == expected_labels
    # Multi-token words exist, so the check above really excludes continuation sub-tokens.
    assert sum(w >= 0 for w in word_ids) > 12
    assert word_ids[0] == -1 and out["input_ids"][0, 0] == processor.tokenizer.cls_token_id
    for name in ("input_ids", "bbox", "attention_mask", "pixel_values"):
        assert name in processor.model_input_names


def test_pixel_boxes_are_normalised_from_original_page_size(process):
    # 200 x 100 page: x -> 5 * x, y -> 10 * y.
    out = process(Image.new("L", (200, 100)), ["total", "due"], boxes=[[20, 10, 40, 30], [0, 0, 200, 100]])
    word_ids, bbox = out["word_index"][0], out["bbox"][0]
    assert bbox[word_ids.index(0)] == [100, 100, 200, 300]
    assert bbox[word_ids.index(1)] == [0, 0, 1000, 1000]
    assert bbox[0] == [0, 0, 0, 0]
    normalised = process(Image.new("L", (200, 100)), ["total"], boxes=[[100, 100, 200, 300]], boxes_normalized=True)
    assert normalised["bbox"][0][1] == [100, 100, 200, 300]


def test_out_of_range_boxes_are_clipped_with_a_counting_warning(process, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = process(Image.new("RGB", (200, 100)), ["total", "due"], boxes=[[-5, 10, 250, 30], [0, 0, 10, 10]])
    assert "2 box coordinate(s)" in caplog.text
    assert out["bbox"][0][1] == [0, 100, 1000, 300]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        process(Image.new("RGB", (200, 100)), ["total"], boxes=[[0, 0, 1003, 1200]], boxes_normalized=True)
    assert "2 box coordinate(s)" in caplog.text


@pytest.mark.parametrize(
    "bad_box, message",
    [
        ([30, 0, 10, 5], r"boxes\[0\]\[1\]` must satisfy x0 <= x1 and y0 <= y1, got \[30.0, 0.0, 10.0, 5.0\]"),
        ([0, 9, 10, 5], r"boxes\[0\]\[1\]` must satisfy x0 <= x1 and y0 <= y1, got \[0.0, 9.0, 10.0, 5.0\]"),
        ([1, 2, 3], r"boxes\[0\]\[1\]` must be 4 coordinates .* got \[1, 2, 3\]"),
        ([1, 2, 3, 4, 5], r"boxes\[0\]\[1\]` must be 4 coordinates .* got \[1, 2, 3, 4, 5\]"),
        ([0, float("nan"), 3, 4], r"boxes\[0\]\[1\]` contains NaN or inf: \[0.0, nan, 3.0, 4.0\]"),
        ([0, 0, float("inf"), 4], r"boxes\[0\]\[1\]` contains NaN or inf"),
        (["a", 0, 1, 2], r"boxes\[0\]\[1\]` must hold numbers, got \['a', 0, 1, 2\]"),
        ("abcd", r"boxes\[0\]\[1\]` must be 4 coordinates .* got 'abcd'"),
    ],
)
def test_malformed_boxes_raise_with_index_and_value(process, bad_box, message):
    with pytest.raises(ValueError, match=message):
        process(Image.new("RGB", (200, 100)), ["total", "due"], boxes=[[0, 0, 1, 1], bad_box])


def test_malformed_box_in_second_document_names_the_document(process):
    image = Image.new("RGB", (200, 100))
    with pytest.raises(ValueError, match=r"boxes\[1\]\[0\]"):
        process([image, image], [["total"], ["due"]], boxes=[[[0, 0, 1, 1]], [[5, 0, 1, 1]]])


@pytest.mark.parametrize(
    "words, boxes, labels, message",
    [
        (["a", "b"], [[0, 0, 1, 1]], None, "Document 0 has 2 words but 1 boxes"),
        (["a"], [[0, 0, 1, 1]], [0, 1], "Document 0 has 1 words but 2 word_labels"),
        ([["a"], ["b"]], [[[0, 0, 1, 1]]], None, "2 document\\(s\\) of words but 1 of boxes"),
        ([["a"], ["b", "c"]], [[[0, 0, 1, 1]], [[0, 0, 1, 1]]], None, "Document 1 has 2 words but 1 boxes"),
        (["a", 3], [[0, 0, 1, 1]] * 2, None, r"words\[0\]\[1\]` must be a string, got 3"),
    ],
)
def test_length_and_type_mismatches_raise(process, words, boxes, labels, message):
    batched = isinstance(words[0], list)
    images = [Image.new("RGB", (10, 10))] * (len(words) if batched else 1)
    with pytest.raises(ValueError, match=message):
        process(images if batched else images[0], words, boxes=boxes, word_labels=labels)


def test_image_count_must_match_documents(process):
    with pytest.raises(ValueError, match="Got 2 image"):
        process([Image.new("RGB", (10, 10))] * 2, ["a"], boxes=[[0, 0, 1, 1]])


# --------------------------------------------------------------------------------------------- windows


def full_token_layout(tokenizer, words, boxes):
    """Token ids and word ids of the whole document without truncation (independent of the windowing code)."""
    encoding = tokenizer(words, boxes=boxes, add_special_tokens=False)
    return encoding["input_ids"], encoding.word_ids()


def test_overflow_windows_cover_every_word_and_label_only_true_first_subtokens(process, tokenizer):
    documents = [make_document(300, seed=1), make_document(150, seed=2)]
    images = [Image.new("RGB", (200, 100), "white"), Image.new("RGB", (200, 100), "black")]
    max_length, stride = 64, 16
    out = process(
        images,
        [d[0] for d in documents],
        boxes=[d[1] for d in documents],
        word_labels=[d[2] for d in documents],
        max_length=max_length,
        stride=stride,
        return_tensors="pt",
    )
    mapping = out["overflow_to_sample_mapping"].tolist()
    assert mapping == sorted(mapping) and set(mapping) == {0, 1} and len(mapping) > 10
    for window, document in enumerate(mapping):  # each window carries its own page: white (1.0) or black (-1.0)
        assert torch.all(out["pixel_values"][window] == (1.0 if document == 0 else -1.0)), (window, document)

    content = max_length - 2
    window_starts_mid_word = 0
    for document, (words, _, labels) in enumerate(documents):
        full_ids, full_word_ids = full_token_layout(tokenizer, words, [[0, 0, 0, 0]] * len(words))
        first_position = {}
        for position, word in enumerate(full_word_ids):
            first_position.setdefault(word, position)
        windows = [i for i, d in enumerate(mapping) if d == document]
        labelled_first_positions = set()
        for k, window in enumerate(windows):
            start = k * (content - stride)  # the tokenizer's overflow rule, checked on the token ids below
            ids = out["input_ids"][window].tolist()
            word_ids = out["word_index"][window].tolist()
            length = sum(w >= 0 for w in word_ids)
            assert ids[1 : 1 + length] == full_ids[start : start + length]
            assert word_ids[1 : 1 + length] == full_word_ids[start : start + length]
            window_starts_mid_word += first_position[word_ids[1]] < start
            for position, label in enumerate(out["labels"][window].tolist()):
                if label == -100:
                    continue
                word = word_ids[position]
                global_position = start + position - 1
                assert global_position == first_position[word], "label on a continuation sub-token"
                assert label == labels[word]
                labelled_first_positions.add(word)
        assert labelled_first_positions == set(range(len(words)))  # no word silently lost
    assert window_starts_mid_word > 0  # the case the stock tokenizer mislabels is exercised


def test_word_longer_than_window_is_split_not_lost(process, processor):
    words = ["total", "zq" * 60, "due"]
    out = process(
        Image.new("RGB", (50, 50)),
        words,
        boxes=[[0, 0, 1, 1]] * 3,
        word_labels=[1, 2, 3],
        max_length=16,
        stride=4,
        return_tensors="pt",
    )
    word_ids = out["word_index"]
    windows_with_long_word = (word_ids == 1).any(dim=1).sum().item()
    assert windows_with_long_word > 2
    labelled = out["labels"][out["labels"] != -100].tolist()
    assert labelled.count(2) == 1 and 1 in labelled and 3 in labelled
    merged = processor.merge_window_predictions(
        torch.randn(*word_ids.shape, 4), word_ids, out["overflow_to_sample_mapping"]
    )
    assert merged[0].shape == (3, 4) and torch.isfinite(merged[0]).all()


def test_truncation_without_overflow_warns_with_count(process, caplog):
    words, boxes, _ = make_document(100, seed=3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = process(Image.new("RGB", (200, 100)), words, boxes=boxes, max_length=32, return_overflowing_tokens=False)
    kept = len({w for w in out["word_index"][0] if w >= 0})
    assert out["overflow_to_sample_mapping"] == [0]
    assert f"{100 - kept} word(s) in 1 document(s)" in caplog.text


def test_empty_words_are_kept_as_unknown_token(process, processor, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = process(
            Image.new("RGB", (20, 20)), ["total", "", "due"], boxes=[[0, 0, 1, 1]] * 3, word_labels=[1, 2, 3]
        )
    assert "1 empty word(s)" in caplog.text
    word_ids = out["word_index"][0]
    assert out["input_ids"][0][word_ids.index(1)] == processor.tokenizer.unk_token_id
    assert [label for label in out["labels"][0] if label != -100] == [1, 2, 3]


def test_stride_that_does_not_fit_raises_instead_of_panicking(process):
    with pytest.raises(ValueError, match="`stride` \\(62\\) must be smaller than the 62 word tokens"):
        process(Image.new("RGB", (20, 20)), ["a"], boxes=[[0, 0, 1, 1]], max_length=64, stride=62)
    with pytest.raises(ValueError, match=r"question\[0\]` takes"):
        process(
            Image.new("RGB", (20, 20)),
            "what is the total amount due of the invoice",
            ["total"],
            boxes=[[0, 0, 1, 1]],
            max_length=16,
            stride=4,
        )


# --------------------------------------------------------------------------------------------- merging


def one_hot_logits(ids: torch.Tensor, num_classes: int, scale: float = 20.0) -> torch.Tensor:
    """Logits that name `ids` (a class per token; -1 tokens get class 0): the merged probabilities' argmax."""
    return torch.nn.functional.one_hot(ids.long().clamp(min=0), num_classes).float() * scale


def test_first_subword_mask_skips_continued_leading_runs():
    word_ids = torch.tensor(
        [
            [-1, 0, 0, 1, 1, -1],  # doc 0, window 0
            [-1, 1, 2, 2, 3, -1],  # doc 0, window 1: starts inside word 1 (seen in window 0)
            [-1, 4, 4, 5, -1, -1],  # doc 0, window 2: word 4 not in window 1 -> a true start
            [-1, 0, 1, -1, -1, -1],  # doc 1: same word ids, other document
        ]
    )
    mask = first_subword_mask(word_ids, torch.tensor([0, 0, 0, 1]))
    assert mask.tolist() == [
        [False, True, False, True, False, False],
        [False, False, True, False, True, False],
        [False, True, False, True, False, False],
        [False, True, True, False, False, False],
    ]


def test_merge_window_predictions_averages_probabilities_of_overlaps_by_hand():
    word_ids = torch.tensor(
        [
            [-1, 0, 1, 1, 2, -1],  # doc 0, window 0
            [-1, 2, 3, 4, 4, -1],  # doc 0, window 1: ambiguous leading word 2 -> ignored; words 3, 4 new
            [-1, 3, 5, -1, -1, -1],  # doc 0, window 2: leading word 3 also in window 1 -> ignored
            [-1, -1, 0, 1, -1, -1],  # doc 1 (a QA-like window: -1 before the words)
        ]
    )
    mapping = torch.tensor([0, 0, 0, 1])
    logits = torch.zeros(4, 6, 2)
    logits[0, 1] = torch.tensor([1.0, 0.0])  # word 0
    logits[0, 2] = torch.tensor([2.0, 0.0])  # word 1 first sub-token
    logits[0, 3] = torch.tensor([100.0, -100.0])  # word 1 continuation: ignored
    logits[0, 4] = torch.tensor([3.0, 1.0])  # word 2
    logits[1, 1] = torch.tensor([-50.0, 50.0])  # word 2 again, ambiguous start: ignored
    logits[1, 2] = torch.tensor([4.0, 0.0])  # word 3
    logits[1, 3] = torch.tensor([5.0, 0.0])  # word 4
    logits[2, 2] = torch.tensor([6.0, 2.0])  # word 5
    logits[3, 2] = torch.tensor([7.0, 0.0])  # doc 1 word 0
    logits[3, 3] = torch.tensor([8.0, 0.0])  # doc 1 word 1
    merged = merge_window_predictions(logits, word_ids, mapping)
    assert len(merged) == 2
    expected = torch.tensor([[1.0, 0], [2, 0], [3, 1], [4, 0], [5, 0], [6, 2]]).softmax(-1)
    torch.testing.assert_close(merged[0], expected)
    torch.testing.assert_close(merged[1], torch.tensor([[7.0, 0], [8, 0]]).softmax(-1))
    # One (length, num_labels) tensor per window, unpadded, gives the same.
    ragged = [logits[w, : int((word_ids[w] >= 0).nonzero().max()) + 1] for w in range(4)]
    rows = [row[: len(logit)].tolist() for row, logit in zip(word_ids, ragged)]
    for merged_row, ragged_row in zip(merged, merge_window_predictions(ragged, rows, mapping)):
        torch.testing.assert_close(merged_row, ragged_row)

    # Word 1 starts (non-leading) in two windows: both votes count, as probabilities. Word 9 leads a window but is
    # absent from the previous one, so it is a true start. Words 2-8 and 10 never appear: NaN rows.
    word_ids = torch.tensor([[-1, 0, 1, -1], [-1, 9, 1, -1]])
    logits = torch.zeros(2, 4, 3)
    logits[0, 1], logits[0, 2] = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 10.0, 9.0])
    logits[1, 1], logits[1, 2] = torch.tensor([5.0, 0.0, 0.0]), torch.tensor([6.0, 0.0, 0.0])
    merged = merge_window_predictions(logits, word_ids, torch.tensor([0, 0]), num_words=11)[0]
    expected = (torch.tensor([0.0, 10.0, 9.0]).softmax(-1) + torch.tensor([6.0, 0.0, 0.0]).softmax(-1)) / 2
    torch.testing.assert_close(merged[1], expected)
    # Averaged logits (3, 5, 4.5) would say class 1; averaged probabilities say class 0: window 0's large logits
    # count as one vote, not by their margin.
    assert int(merged[1].argmax()) == 0
    torch.testing.assert_close(merged[0], torch.tensor([1.0, 0.0, 0.0]).softmax(-1))
    torch.testing.assert_close(merged[9], torch.tensor([5.0, 0.0, 0.0]).softmax(-1))
    assert torch.isnan(merged[2:9]).all() and torch.isnan(merged[10]).all()


def test_merge_window_predictions_validates_inputs():
    with pytest.raises(ValueError, match="must have shape"):
        merge_window_predictions(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="windows of each document must be consecutive"):
        merge_window_predictions(torch.zeros(3, 3, 2), torch.zeros(3, 3, dtype=torch.long), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"word_ids\[0\]\[1\]` = 3 is out of range for document 0"):
        merge_window_predictions(torch.zeros(1, 3, 2), torch.tensor([[-1, 3, -1]]), torch.tensor([0]), num_words=2)


def test_processor_windows_merge_back_to_every_word(process, processor):
    documents = [make_document(300, seed=4), make_document(40, seed=5)]
    out = process(
        [Image.new("RGB", (200, 100))] * 2,
        [d[0] for d in documents],
        boxes=[d[1] for d in documents],
        max_length=64,
        stride=16,
        return_tensors="pt",
    )
    word_ids = out["word_index"]
    # Fake logits that name each token's word (classes 0-299) and document (classes 300-301): the merged
    # probabilities must name them back.
    document = out["overflow_to_sample_mapping"][:, None].expand_as(word_ids)
    logits = torch.cat([one_hot_logits(word_ids, 300, 20.0), one_hot_logits(document, 2, 10.0)], dim=-1)
    merged = processor.merge_window_predictions(
        logits, word_ids, out["overflow_to_sample_mapping"], num_words=[300, 40]
    )
    for index, scores in enumerate(merged):
        assert scores.shape == (len(documents[index][0]), 302)
        assert scores[:, :300].argmax(-1).tolist() == list(range(len(documents[index][0])))
        assert torch.all(scores[:, 300:].argmax(-1) == index)


# --------------------------------------------------------------------------------------------- QA and OCR


def test_question_answering_inputs(process, processor):
    words, boxes, _ = make_document(120, seed=6)
    question = "what is the total amount"
    out = process(
        Image.new("RGB", (200, 100)), question, words, boxes=boxes, max_length=48, stride=8, return_tensors="pt"
    )
    assert out["input_ids"].shape[0] > 1
    question_ids = processor.tokenizer(question.split(), boxes=[[0, 0, 0, 0]] * 5, add_special_tokens=False)[
        "input_ids"
    ]
    for window in range(out["input_ids"].shape[0]):
        ids, word_ids = out["input_ids"][window].tolist(), out["word_index"][window].tolist()
        assert ids[1 : 1 + len(question_ids)] == question_ids  # whole question in every window
        assert all(w == -1 for w in word_ids[: 1 + len(question_ids) + 2])
        assert all(b == [0, 0, 0, 0] for b in out["bbox"][window, : 1 + len(question_ids)].tolist())
    merged = processor.merge_window_predictions(
        one_hot_logits(out["word_index"], 120), out["word_index"], out["overflow_to_sample_mapping"]
    )
    assert merged[0].argmax(-1).tolist() == list(range(120))
    batched = process(
        [Image.new("RGB", (200, 100))] * 2,
        ["what is the total", "which date"],
        [words[:5], words[5:9]],
        boxes=[boxes[:5], boxes[5:9]],
        max_length=32,
        stride=4,
    )
    assert batched["overflow_to_sample_mapping"] == [0, 1]
    assert max(batched["word_index"][1]) == 3


# --------------------------------------------------------------------------------------------- LayoutLMv3 parity


@pytest.mark.parametrize("qa", [False, True], ids=["words", "question"])
def test_output_is_a_batch_encoding_whose_word_ids_match_layoutlmv3_processor(processor, qa):
    """`encoding.word_ids(i)` (and `sequence_ids(i)`) of every window are those of the stock LayoutLMv3Processor on
    the same inputs, and `word_index` is derived from them; a `BatchFeature` has no `word_ids` method at all."""
    from transformers import BatchEncoding, LayoutLMv3Processor

    documents = [make_document(90, seed=11), make_document(30, seed=12)]
    images = [Image.new("RGB", (200, 100), "white")] * 2
    words = [d[0] for d in documents]
    normalized = [
        [[c * 1000 // (200 if i % 2 == 0 else 100) for i, c in enumerate(box)] for box in d[1]] for d in documents
    ]
    questions = ["what is the total amount", "which date"] if qa else None
    window = {"max_length": 48, "stride": 8, "truncation": "only_second" if qa else True}
    ours = processor(
        images,
        questions if qa else words,
        text_pair=words if qa else None,
        boxes=normalized,
        boxes_normalized=True,
        padding="max_length",
        return_tensors="pt",
        **window,
    )
    stock_processor = LayoutLMv3Processor(
        image_processor=LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": 16, "width": 16}),
        tokenizer=processor.tokenizer,
    )
    stock = stock_processor(
        images,
        questions if qa else words,
        text_pair=words if qa else None,
        boxes=normalized,
        padding="max_length",
        return_overflowing_tokens=True,
        return_tensors="pt",
        **window,
    )
    assert isinstance(ours, BatchEncoding) and ours.encodings is not None
    assert len(ours["input_ids"]) == len(stock["input_ids"]) > 2
    assert torch.equal(ours["input_ids"], stock["input_ids"]) and torch.equal(ours["bbox"], stock["bbox"])
    content = 1 if qa else 0
    for i in range(len(ours["input_ids"])):
        assert ours.word_ids(i) == stock.word_ids(i)
        assert ours.sequence_ids(i) == stock.sequence_ids(i)
        pairs = zip(stock.word_ids(i), stock.sequence_ids(i))
        assert ours["word_index"][i].tolist() == [w if w is not None and s == content else -1 for w, s in pairs]
    assert "word_ids" not in ours  # the tensor field is `word_index`; `word_ids` is the method
    if qa:  # the question's tokens have word ids (sequence 0) but no word index
        assert ours.word_ids(0)[1] == 0 and ours.sequence_ids(0)[1] == 0 and ours["word_index"][0, 1] == -1
    # `token_to_word` and friends come with the encodings too.
    position = ours["word_index"][0].tolist().index(3)
    assert ours.token_to_word(0, position) == 3


def test_merge_window_predictions_takes_ragged_word_index_rows(processor):
    words, boxes, _ = make_document(120, seed=13)
    out = processor(Image.new("RGB", (200, 100)), words, boxes=boxes, max_length=40, stride=8, padding=False)
    rows = out["word_index"]
    assert len({len(row) for row in rows}) > 1  # the last window is shorter
    length = max(len(row) for row in rows)
    logits = torch.full((len(rows), length, 120), -5.0)
    for i, row in enumerate(rows):
        logits[i, : len(row)] = one_hot_logits(torch.tensor(row), 120)
    (merged,) = processor.merge_window_predictions(logits, rows, out["overflow_to_sample_mapping"])
    assert merged.argmax(-1).tolist() == list(range(120))


def render_page() -> Image.Image:
    image = Image.new("RGB", (900, 240), "white")
    ImageDraw.Draw(image).text((40, 80), "INVOICE TOTAL 1234", fill="black", font=ImageFont.load_default(size=48))
    return image


def test_ocr_with_real_tesseract(process, processor):
    page = render_page()
    out = process(page.convert("L"), apply_ocr=True, max_length=32, stride=4)
    words, boxes = out["words"][0], out["boxes"][0]
    assert [w.upper() for w in words] == ["INVOICE", "TOTAL", "1234"]
    assert all(0 <= c <= 1000 for box in boxes for c in box)
    assert boxes[0][2] <= boxes[1][0] and boxes[1][2] <= boxes[2][0]  # left to right
    assert 200 <= boxes[0][1] <= boxes[0][3] <= 700  # the text line sits in the middle band of the page
    assert out["bbox"][0][out["word_index"][0].index(2)] == boxes[2]
    assert processor.apply_tesseract(page) == (words, boxes)
    question = process(page, "what is the total?", apply_ocr=True, max_length=32, stride=4)
    assert question["words"] == [words] and max(max(row) for row in question["word_index"]) == 2
    with pytest.raises(ValueError, match="bounding boxes"):
        process(page, ["a"], boxes=[[0, 0, 1, 1]], apply_ocr=True)
    with pytest.raises(ValueError, match="word labels"):
        process(page, word_labels=[1], apply_ocr=True)


# --------------------------------------------------------------------------------------------- images


def test_image_modes_and_arrays_give_the_same_pixels(process):
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))  # 32 x 32 gradient
    reference = process(Image.fromarray(gray).convert("RGB"), ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
    variants = {
        "L": Image.fromarray(gray),
        "P": Image.fromarray(gray).convert("P"),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "I": Image.fromarray(gray.astype(np.int32) * 257),
        "F": Image.fromarray(gray.astype(np.float32) / 255),
        "RGBA": Image.fromarray(gray).convert("RGBA"),
        "LA": Image.fromarray(gray).convert("LA"),
        "numpy HW uint8": gray,
        "numpy HWC uint8": np.repeat(gray[..., None], 3, axis=-1),
        "numpy CHW float": np.repeat(gray[None], 3, axis=0).astype(np.float32) / 255,
        "numpy HW uint16": gray.astype(np.uint16) * 257,
        "torch CHW": torch.from_numpy(np.repeat(gray[None], 3, axis=0)),
    }
    assert variants["I;16"].mode.startswith("I;16") and variants["I"].mode == "I" and variants["F"].mode == "F"
    for name, image in variants.items():
        out = process(image, ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
        torch.testing.assert_close(out["pixel_values"], reference["pixel_values"], atol=1e-6, rtol=0, msg=name)


def test_transparent_and_bilevel_pages(process):
    transparent = process(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
    assert torch.all(transparent["pixel_values"] == 1.0)  # paper is white, not black
    bilevel = process(Image.new("1", (20, 20), 0), ["a"], boxes=[[0, 0, 1, 1]], return_tensors="pt")
    assert torch.all(bilevel["pixel_values"] == -1.0)
    with pytest.raises(ValueError, match=r"images\[0\]` float pixels must be in"):
        process(np.full((4, 4), -3.0), ["a"], boxes=[[0, 0, 1, 1]])


# --------------------------------------------------------------------------------------------- augmented view, saving


def test_augmented_view_only_changes_the_momentum_view(process):
    words, boxes, labels = make_document(10)
    image = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)))
    plain = process(image, words, boxes=boxes, word_labels=labels, return_tensors="pt")
    first = process(
        image,
        words,
        boxes=boxes,
        word_labels=labels,
        return_tensors="pt",
        return_augmented_view=True,
        augmentation_generator=torch.Generator().manual_seed(0),
    )
    second = process(
        image,
        words,
        boxes=boxes,
        word_labels=labels,
        return_tensors="pt",
        return_augmented_view=True,
        augmentation_generator=torch.Generator().manual_seed(0),
    )
    for key in plain:
        torch.testing.assert_close(first[key], plain[key])  # online view, boxes and labels untouched
    assert first["pixel_values_aug"].shape == plain["pixel_values"].shape
    assert not torch.equal(first["pixel_values_aug"], plain["pixel_values"])
    torch.testing.assert_close(first["pixel_values_aug"], second["pixel_values_aug"])


def test_save_and_load_round_trip(process, processor, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "AETNetProcessor"
    assert config["image_processor"]["size"] == {"height": 16, "width": 16}
    reloaded = AETNetProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, LayoutLMv3ImageProcessorPil)
    assert reloaded.image_processor.apply_ocr is False
    words, boxes, labels = make_document(30)
    kwargs = dict(boxes=boxes, word_labels=labels, max_length=32, stride=8, return_tensors="pt")
    image = Image.new("RGB", (200, 100), "gray")
    before, after = process(image, words, **kwargs), reloaded(image, words, **kwargs)
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(before[key], after[key])


# --------------------------------------------------------------------------------------------- tokenizer trainer


def test_tokenizer_training_is_deterministic_and_round_trips(tmp_path):
    first = train_layoutlmv3_tokenizer(corpus(1), vocab_size=300)
    second = train_layoutlmv3_tokenizer(corpus(1), vocab_size=300)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert (
        first.backend_tokenizer.to_str()
        != train_layoutlmv3_tokenizer(corpus(2), vocab_size=300).backend_tokenizer.to_str()
    )
    special = [first.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    assert special == [0, 1, 2, 3, 4]
    assert (first.cls_token_id, first.pad_token_id, first.sep_token_id, first.unk_token_id) == (0, 1, 2, 3)
    words = ["invoice", "totals", "Zürich", "€42"]
    encoded = first(words, boxes=[[0, 0, 1, 1]] * 4)["input_ids"]
    assert first.unk_token_id not in encoded  # byte-level: nothing unknown
    assert first.decode(encoded, skip_special_tokens=True).strip() == " ".join(words)
    first.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "LayoutLMv3Tokenizer" and reloaded.model_max_length == 512
    assert reloaded(words, boxes=[[0, 0, 1, 1]] * 4)["input_ids"] == encoded


def test_tokenizer_training_accepts_word_lists_and_validates_arguments():
    from_words = train_layoutlmv3_tokenizer([doc.split() for doc in corpus(3)], vocab_size=300)
    from_text = train_layoutlmv3_tokenizer(corpus(3), vocab_size=300)
    assert from_words.backend_tokenizer.to_str() == from_text.backend_tokenizer.to_str()
    assert len(from_words) <= 300
    with pytest.raises(ValueError, match="`vocab_size` must be an int >= 261"):
        train_layoutlmv3_tokenizer(corpus(), vocab_size=100)
    with pytest.raises(ValueError, match="`min_frequency`"):
        train_layoutlmv3_tokenizer(corpus(), min_frequency=0)
    with pytest.raises(ValueError, match=r"`texts\[1\]` must be a string or a list of strings"):
        train_layoutlmv3_tokenizer(["fine", 3])
