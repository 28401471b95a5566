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
The relation extraction part of `aetnet predict`: its options ([`add_relation_options`]), where a relation
checkpoint's entities come from (`--entities FILE.json` in FUNSD's annotation shape, or the predicted entities of a
token classification `--entity-model CKPT`), the checks of those options, made before any page is read so that a bad
option is a usage error (exit 2) naming the option and the offending value, and the
[`~aetnet.inference.relations.RelationPredictor`] that runs MODEL.

Kept apart from `predict.py`, which runs every checkpoint, so that each module reads in one go.
"""

from __future__ import annotations

from pathlib import Path

from aetnet.commands import UsageError, read_json_option


_LOAD_ERRORS = (OSError, ValueError, RuntimeError, AssertionError)  # torch: AssertionError for CUDA on a CPU build


def add_relation_options(parser) -> None:
    """Add the options of a relation extraction checkpoint to the `aetnet predict` parser, as a group of their own."""
    relations = parser.add_argument_group(
        "relation extraction", "a relation checkpoint links the page's entities, given or predicted"
    )
    relations.add_argument(
        "--entities",
        metavar="FILE",
        help='the page\'s entities, in FUNSD\'s annotation shape: [{"label": "question", "words": [{"text": ..., '
        '"box": [x0, y0, x1, y1]}, ...]}, ...] in pixels (a FUNSD annotations/*.json file works as is), or an object '
        "mapping page names, file names or paths to such lists; the page's words are then the entities' words",
    )
    relations.add_argument(
        "--entity-model",
        metavar="CKPT",
        help="a token classification checkpoint whose predicted entities (from OCR or --words-json) are linked",
    )
    relations.add_argument(
        "--link-threshold", type=float, default=None, help="link probability from which a pair is a link (0.5)"
    )
    relations.add_argument("--one-head-per-tail", action="store_true", help="keep only the best question per answer")


def _is_entity_list(value) -> bool:
    return isinstance(value, list) or (isinstance(value, dict) and isinstance(value.get("form"), list))


def load_entities_json(path: str | None) -> dict | None:
    """
    The `--entities` file: one page's entities (a list, FUNSD's `form` list, or a whole FUNSD annotation file
    `{"form": [...]}`), returned as `{None: entities}`, or an object mapping page names (file names, stems, paths) to
    such entries. Only the shape is checked here; the entities themselves once MODEL's entity types are known.
    """
    if path is None:
        return None
    data = read_json_option(path, "--entities")
    if _is_entity_list(data):
        return {None: data}
    if not isinstance(data, dict):
        raise UsageError(
            f"--entities {path} must hold a list of entities (FUNSD's `form` list), a FUNSD annotation "
            f'{{"form": [...]}}, or an object mapping page names to such lists; got {type(data).__name__}'
        )
    bad = [key for key, entry in data.items() if not _is_entity_list(entry)]
    if bad:
        raise UsageError(
            f"--entities {path}: entry {bad[0]!r} must be a list of entities or a FUNSD annotation with a `form` "
            f"list, got {type(data[bad[0]]).__name__}"
        )
    return data


def check_entities(entities: dict, entity_labels: list[str], path: str) -> None:
    """Check every page's entities against MODEL's entity types; the first problem is a usage error naming the file,
    the page entry, the entity and the value."""
    from aetnet.inference.relations import parse_entities

    for key, entry in entities.items():
        try:
            parse_entities(entry, entity_labels)
        except ValueError as error:
            where = "" if key is None else f" (page {key!r})"
            raise UsageError(f"--entities {path}{where}: {error}") from None


def reject_relation_options(args, task: str) -> None:
    """The relation options given with a MODEL that is not a relation extraction checkpoint are usage errors."""
    given = {
        "--entities": args.entities,
        "--entity-model": args.entity_model,
        "--link-threshold": args.link_threshold,
        "--one-head-per-tail": args.one_head_per_tail or None,
    }
    for option, value in given.items():
        if value is not None:
            raise UsageError(f"{option} needs a relation extraction model; MODEL does {task}")


def relation_predictor(args, model, processor, dtype: str | None) -> tuple[object, object | None]:
    """`(predictor, entity_predictor)`: the [`RelationPredictor`] of MODEL (already loaded) and, with
    `--entity-model`, the token classification predictor of the entities (else `None`), after the checks of the
    relation options."""
    from aetnet.inference.relations import RelationPredictor

    if args.entities is None and args.entity_model is None:
        raise UsageError(
            "MODEL does relation extraction, which links a page's entities: give them with --entities FILE.json "
            "(a list of {label, words: [{text, box}]}, FUNSD's annotation shape) or --entity-model CKPT (a token "
            "classification checkpoint that predicts them)"
        )
    if args.entities is not None and args.entity_model is not None:
        raise UsageError("give the entities with one of --entities and --entity-model, not both")
    if args.entities is not None and args.words_json is not None:
        raise UsageError(f"--entities {args.entities} gives the page's words (its entities' words): drop --words-json")
    if args.stride is not None:
        raise UsageError("--stride does not apply to relation extraction: its windows keep entities whole")
    threshold = 0.5 if args.link_threshold is None else args.link_threshold
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--link-threshold must be in [0, 1], got {threshold}")
    try:
        predictor = RelationPredictor(
            model,
            processor,
            device=args.device,
            dtype=dtype,
            batch_size=args.batch_size,
            max_length=args.max_length,
            threshold=threshold,
            one_head_per_tail=args.one_head_per_tail,
        )
    except _LOAD_ERRORS as error:
        raise UsageError(f"cannot run the model from {args.model} on --device {args.device}: {error}") from None
    if args.entity_model is None:
        return predictor, None
    return predictor, _entity_predictor(args, predictor.entity_labels, dtype)


def _entity_predictor(args, entity_labels: list[str], dtype: str | None):
    """The token classification `DocumentPredictor` of `--entity-model`, whose entity types MODEL must know."""
    from aetnet.inference import DocumentPredictor, load_checkpoint

    if not Path(args.entity_model).is_dir():
        raise UsageError(f"--entity-model {args.entity_model} is not a folder (a checkpoint with its processor)")
    try:
        model, processor, task = load_checkpoint(args.entity_model, device=args.device)
        if task != "token-classification":
            where = f"--entity-model {args.entity_model}"
            raise UsageError(f"{where} does {task}; it must be a token classification model")
        predictor = DocumentPredictor(
            model,
            processor,
            task=task,
            device=args.device,
            dtype=dtype,
            batch_size=args.batch_size,
            ocr_lang=args.ocr_lang,
            tesseract_config=args.tesseract_config,
        )
    except _LOAD_ERRORS as error:
        raise UsageError(f"cannot load --entity-model {args.entity_model}: {error}") from None
    types = {label[2:] if predictor.bio else label for label in predictor.labels if label != "O"}
    known = {label.upper() for label in entity_labels}
    unknown = sorted(kind for kind in types if kind.upper() not in known)
    if unknown:
        raise UsageError(
            f"--entity-model {args.entity_model} predicts entity types {unknown} that MODEL does not know (its "
            f"entity_labels: {entity_labels})"
        )
    return predictor


def relation_summary(result: dict) -> str:
    """The line `aetnet predict` prints for a page of links."""
    return f"{len(result['entities'])} entities, {len(result['links'])} links"


__all__ = [
    "add_relation_options",
    "check_entities",
    "load_entities_json",
    "reject_relation_options",
    "relation_predictor",
    "relation_summary",
]
