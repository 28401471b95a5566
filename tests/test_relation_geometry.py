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
"""The relation head's pair geometry (`relation_geometry`): entity boxes, pair features, what it lets a head learn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_relation_extraction import RelationExtractionModelTester

from aetnet import AETNetForRelationExtraction
from aetnet.modeling_aetnet_relation import RelationExtractionHead
from aetnet.relation_geometry import NUM_GEOMETRY_FEATURES, entity_boxes, pair_geometry
from aetnet.relations import decode_links, relation_scores


QUESTION, ANSWER = 1, 2


def test_an_entity_box_is_the_union_of_its_token_boxes():
    bbox = torch.tensor([[[0, 0, 0, 0], [100, 200, 150, 220], [160, 190, 300, 230], [500, 500, 600, 520]]])
    spans = torch.tensor([[[1, 3], [3, 4], [-1, -1]]])
    labels = torch.tensor([[QUESTION, ANSWER, -100]])
    boxes = entity_boxes(bbox, spans, labels)
    torch.testing.assert_close(boxes, torch.tensor([[[0.1, 0.19, 0.3, 0.23], [0.5, 0.5, 0.6, 0.52], [0.0] * 4]]))


def test_pair_features_of_an_answer_right_of_its_question():
    question, answer, below = [0.1, 0.2, 0.3, 0.22], [0.4, 0.2, 0.6, 0.22], [0.1, 0.5, 0.3, 0.52]
    features = pair_geometry(torch.tensor([question, question]), torch.tensor([answer, below]))
    assert features.shape == (2, NUM_GEOMETRY_FEATURES)
    # centre offset (x, y), edge gaps (x, y), in tenths of the page
    torch.testing.assert_close(features[0, :4], torch.tensor([3.0, 0.0, 1.0, -0.2]))
    torch.testing.assert_close(features[1, :4], torch.tensor([0.0, 3.0, -2.0, 2.8]))
    # overlap as a share of the shorter extent: a gap of half a box width, the same line; one above the other, a
    # vertical gap of 14 box heights (clamped at -2)
    torch.testing.assert_close(features[0, -2:], torch.tensor([-0.5, 1.0]))
    torch.testing.assert_close(features[1, -2:], torch.tensor([1.0, -2.0]))


def test_geometry_is_a_config_choice_and_needs_the_boxes():
    tester = RelationExtractionModelTester()
    inputs = tester.prepare_inputs(with_relations=False)
    box = AETNetForRelationExtraction(tester.get_config()).eval()
    none = AETNetForRelationExtraction(tester.get_config(relation_geometry="none")).eval()
    assert box.config.relation_geometry == "box" and none.relation_head.geometry is None
    assert not any(name.startswith("relation_head.geometry") for name in none.state_dict())
    none.load_state_dict(box.state_dict(), strict=False)
    with torch.no_grad():
        geometry = box.relation_head.geometry
        last = geometry.mlp[-1]
        last.weight.zero_(), last.bias.copy_(torch.tensor([0.0, 1.0]))  # the geometry term is then exactly (0, 1)
        difference = box(**inputs).logits - none(**inputs).logits
    torch.testing.assert_close(difference, torch.tensor([[0.0, 1.0]]).expand_as(difference))
    with pytest.raises(ValueError, match="`bbox` is required"):
        box(**{k: v for k, v in inputs.items() if k != "bbox"})
    with pytest.raises(ValueError, match=r"`relation_geometry` must be one of \('none', 'box'\), got 'pixels'"):
        AETNetForRelationExtraction(tester.get_config(relation_geometry="pixels"))


def forms(num_pages: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Pages of four rows, each a question with its answer to the right on the same line, at random heights; the
    token states carry no information, so only the boxes can tell which answer is whose."""
    rows = torch.rand(num_pages, 4, generator=generator).sort(-1).values * 800 + torch.arange(4) * 40
    left = torch.randint(20, 200, (num_pages, 4), generator=generator)
    question = torch.stack([left, rows, left + 150, rows + 20], dim=-1)
    answer = torch.stack([left + 250, rows, left + 450, rows + 20], dim=-1)
    bbox = torch.cat([torch.zeros(num_pages, 1, 4), torch.stack([question, answer], 2).flatten(1, 2)], 1).long()
    spans = torch.stack([torch.arange(1, 9), torch.arange(2, 10)], dim=-1).expand(num_pages, -1, -1)
    labels = torch.tensor([QUESTION, ANSWER] * 4).expand(num_pages, -1)
    relations = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]]).expand(num_pages, -1, -1)
    return {"bbox": bbox, "entity_spans": spans, "entity_labels": labels, "relations": relations}


@pytest.mark.parametrize("geometry, learns", [("box", True), ("none", False)])
def test_the_geometry_term_learns_links_that_only_the_boxes_tell(geometry, learns):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = SimpleNamespace(relation_geometry=geometry, relation_negatives_per_head=None)
    head = RelationExtractionHead(config, hidden_size=16, dropout=0.0)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        batch = forms(8, generator)
        states = torch.randn(8, 9, 16, generator=generator)
        loss = head(states, batch["entity_spans"], batch["entity_labels"], batch["relations"], bbox=batch["bbox"])
        optimizer.zero_grad(), loss["task_loss"].backward(), optimizer.step()
    head.eval()
    test = forms(16, generator)
    with torch.no_grad():
        out = head(
            torch.randn(16, 9, 16, generator=generator), test["entity_spans"], test["entity_labels"], bbox=test["bbox"]
        )
    pages = [{} for _ in range(16)]
    for (page, q, a), score in zip(out["pairs"].tolist(), out["scores"].tolist()):
        pages[page][(q, a)] = score
    predicted = [decode_links(scores, one_head_per_tail=True) for scores in pages]
    f1 = relation_scores(predicted, test["relations"].tolist())["f1"]
    assert (f1 > 0.9) if learns else (f1 < 0.5), f1
