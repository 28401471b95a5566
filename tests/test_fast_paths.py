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
AETNet on transformers' native attention (`attn_implementation`): it reaches LayoutLMv3, both aligners and both
momentum copies, at the top level or per sub-config; sdpa (the default) equals eager in outputs, alignment losses and
gradients; eager returns LayoutLMv3's attention probabilities exactly as stock LayoutLMv3 does. Also: AETNet under
`torch.compile` equals eager AETNet, and its forward issues the same tensor operations and Python calls whatever the
number of tokens and patches (no Python loops over them).
"""

import collections
import copy
import sys

import pytest
import torch
from conftest import DEVICES
from torch.utils._python_dispatch import TorchDispatchMode

from aetnet import AETNetConfig, AETNetForTokenClassification


VOCAB, IMAGE, NUM_LABELS = 99, 16, 3
ENCODERS = ("layoutlmv3", "vision_model", "text_model", "vision_model_m", "text_model_m")


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: intra-op threads cost more than they save, and stall whenever a core is busy elsewhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_aetnet(image=IMAGE, max_length=64, **kwargs) -> AETNetForTokenClassification:
    config = AETNetConfig.from_preset(
        "tiny", vocab_size=VOCAB, max_length=max_length, num_labels=NUM_LABELS, queue_size=8, **kwargs
    )
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = 0.0
    config.layout_config.input_size = config.vision_config.image_size = image
    torch.manual_seed(0)
    model = AETNetForTokenClassification(config)
    with torch.no_grad():  # large relative biases, so that a wrongly applied bias would show
        for name in ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias"):
            getattr(model.aetnet.layoutlmv3.encoder, name).weight.normal_(0.0, 1.0)
    return model


def make_inputs(batch_size=3, length=12, image=IMAGE, seed=0) -> dict:
    """Ids, ordered boxes, a padding mask with two padded rows of different lengths, pixels and labels."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch_size, length), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones(batch_size, length, dtype=torch.long)
    for row, kept in ((1, length * 2 // 3), (2, length // 3)):
        if row < batch_size:
            attention_mask[row, kept:] = 0
    corner = torch.randint(0, 800, (batch_size, length, 2), generator=generator)
    bbox = torch.cat([corner, corner + torch.randint(1, 200, (batch_size, length, 2), generator=generator)], dim=-1)
    return dict(
        input_ids=input_ids,
        bbox=bbox,
        attention_mask=attention_mask,
        pixel_values=torch.randn(batch_size, 3, image, image, generator=generator),
        labels=torch.randint(0, NUM_LABELS, (batch_size, length), generator=generator),
    )


def implementations(model) -> dict[str, str]:
    return {name: getattr(model.aetnet, name).config._attn_implementation for name in ENCODERS}


def aetnet_step(model, inputs, module=None, bf16=False, device="cpu"):
    """Training forward (task + alignment: `loss` is the whole objective) and backward; outputs and gradients."""
    model.to(device).zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        outputs = model(**{key: value.to(device) for key, value in inputs.items()})
    outputs.loss.backward()
    module = model if module is None else module
    grads = {name: p.grad.float().cpu() for name, p in module.named_parameters() if p.grad is not None}
    return outputs, grads


def assert_grad_close(actual, expected, name, rtol=1e-5):
    """Elementwise to `rtol`, with an absolute slack of `rtol` times the tensor's largest entry: an entry that
    cancels to near zero carries the rounding of the large terms it came from (floor 1e-6 for all-zero gradients)."""
    atol = max(rtol * expected.abs().max().item(), 1e-6)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_sdpa_is_the_default_in_every_encoder():
    assert set(implementations(tiny_aetnet()).values()) == {"sdpa"}


@pytest.mark.parametrize(
    "requested, expected",
    [
        ("eager", dict.fromkeys(ENCODERS, "eager")),
        (
            {"layout_config": "eager", "vision_config": "sdpa", "text_config": "eager"},
            {
                "layoutlmv3": "eager",
                "vision_model": "sdpa",
                "text_model": "eager",
                "vision_model_m": "sdpa",
                "text_model_m": "eager",
            },
        ),
    ],
)
def test_attn_implementation_reaches_every_encoder_from_config_load_and_set(requested, expected, tmp_path):
    assert implementations(tiny_aetnet(attn_implementation=requested)) == expected
    tiny_aetnet().save_pretrained(tmp_path)
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path, attn_implementation=requested)
    assert implementations(loaded) == expected
    model = tiny_aetnet()
    model.set_attn_implementation(requested)
    assert implementations(model) == expected


def test_a_config_saved_with_fusion_attention_still_loads(tmp_path):
    tiny_aetnet().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(config_file.read_text().replace('"embed_dim"', '"fusion_attention": "sdpa",\n  "embed_dim"'))
    loaded = AETNetForTokenClassification.from_pretrained(tmp_path)
    assert not hasattr(loaded.config, "fusion_attention")
    assert set(implementations(loaded).values()) == {"sdpa"}


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_equals_eager_in_outputs_losses_and_gradients_fp32(device):
    eager, sdpa = tiny_aetnet(attn_implementation="eager"), tiny_aetnet()
    sdpa.load_state_dict(eager.state_dict())
    inputs = make_inputs()
    eager_out, eager_grads = aetnet_step(eager.train(), inputs, device=device)
    sdpa_out, sdpa_grads = aetnet_step(sdpa.train(), inputs, device=device)
    torch.testing.assert_close(sdpa_out.logits, eager_out.logits, rtol=1e-5, atol=1e-5)
    assert sdpa_out.alignment_losses.keys() == {"ditc", "imc", "glitc", "pita"}
    for name, value in eager_out.alignment_losses.items():
        torch.testing.assert_close(sdpa_out.alignment_losses[name], value, rtol=1e-5, atol=1e-6)
    assert sdpa_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        assert_grad_close(sdpa_grads[name], grad, name)


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_equals_eager_under_bf16_autocast(device):
    eager, sdpa = tiny_aetnet(attn_implementation="eager"), tiny_aetnet()
    sdpa.load_state_dict(eager.state_dict())
    inputs = make_inputs()
    eager_out, eager_grads = aetnet_step(eager.train(), inputs, bf16=True, device=device)
    sdpa_out, sdpa_grads = aetnet_step(sdpa.train(), inputs, bf16=True, device=device)
    error = (sdpa_out.logits.float() - eager_out.logits.float()).norm() / eager_out.logits.float().norm()
    assert error <= 1e-2
    # bf16 keeps 8 bits of mantissa (eps 7.8e-3), and the contrastive terms divide by a temperature of 0.07: 3e-2 of
    # each gradient's norm. A key bias has zero exact gradient (softmax ignores a per-row shift): both give rounding
    # noise there, held to 3e-2 of the global gradient norm.
    total = torch.cat([g.flatten() for g in eager_grads.values()]).norm().item()
    for name, grad in eager_grads.items():
        allowed = 3e-2 * (total if name.endswith(("key.bias", "k_proj.bias")) else grad.norm().item())
        assert (sdpa_grads[name] - grad).norm().item() <= allowed + 1e-7, name


def test_eager_returns_the_attention_probabilities_of_stock_layoutlmv3():
    model = tiny_aetnet(attn_implementation="eager", fusion_injection="none").eval()
    stock = model.to_layoutlmv3()
    assert stock.config._attn_implementation == "eager"
    inputs = make_inputs()
    inputs.pop("labels")
    with torch.no_grad():
        mine, theirs = model(**inputs, output_attentions=True), stock(**inputs, output_attentions=True)
    assert len(mine.attentions) == 2 and mine.attentions[0].shape == (3, 4, 12 + 17, 12 + 17)
    for a, b in zip(mine.attentions, theirs.attentions):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(mine.logits, theirs.logits)


def test_flex_attention_inference_equals_sdpa():
    # torch's FlexAttention has no backward on CPU, so this checks inference (compiling its kernel takes most of
    # this test's time).
    flex, sdpa = tiny_aetnet(attn_implementation="flex_attention").eval(), tiny_aetnet().eval()
    assert set(implementations(flex).values()) == {"flex_attention"}
    flex.load_state_dict(sdpa.state_dict())
    inputs = make_inputs(batch_size=2)
    inputs.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(flex(**inputs).logits, sdpa(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_sdpa_padding_does_not_leak_into_real_tokens():
    model = tiny_aetnet().eval()
    inputs = make_inputs()
    inputs.pop("labels")
    changed = copy.deepcopy(inputs)
    changed["input_ids"][2, 4:] = 7  # only padded positions of page 2 change
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        before, after = model(**inputs).logits, model(**changed).logits
    torch.testing.assert_close(after[real], before[real], rtol=1e-5, atol=1e-6)


def test_torch_compile_fullgraph_training_step_equals_eager():
    # aot_eager traces forward and backward with no graph break allowed (fullgraph), without C++ code generation,
    # which takes minutes on two cores; inductor compiles the same graph.
    reference = tiny_aetnet().train()
    compiled_model = copy.deepcopy(reference)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    inputs = make_inputs()
    (ref_out, ref_grads), (out, grads) = aetnet_step(reference, inputs), aetnet_step(compiled, inputs, compiled_model)
    torch.testing.assert_close(out.logits, ref_out.logits, rtol=1e-5, atol=1e-5)
    assert out.alignment_losses.keys() == {"ditc", "imc", "glitc", "pita"}
    for name, value in ref_out.alignment_losses.items():
        torch.testing.assert_close(out.alignment_losses[name], value, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        assert_grad_close(grads[name], grad, name)
    # The in-place queue update inside the compiled graph happened, and identically.
    for name in ("image_queue", "text_queue", "queue_ptr", "queue_filled"):
        torch.testing.assert_close(getattr(compiled_model.aetnet, name), getattr(reference.aetnet, name))
    assert compiled_model.aetnet.queue_filled.item() == 3


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _count_forward(model, inputs):
    """Tensor operations dispatched and Python function calls made by one training forward (losses included)."""
    calls = collections.Counter()

    def profiler(frame, event, arg):
        if event == "call":
            calls[(frame.f_code.co_filename, frame.f_code.co_name)] += 1

    counter = _OpCounter()
    sys.setprofile(profiler)
    try:
        with counter:
            model(**inputs)
    finally:
        sys.setprofile(None)
    return counter.counts, calls


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_forward_work_does_not_grow_with_tokens_or_patches(implementation):
    """A Python loop over tokens or patches would add operations and calls per token or patch: 5x the tokens and
    4x the patches must leave both counts unchanged."""
    cases = []
    for length, image in ((8, 16), (40, 32)):
        model = tiny_aetnet(image=image, attn_implementation=implementation).train()
        cases.append((model, make_inputs(batch_size=2, length=length, image=image)))
    for case in cases:
        _count_forward(*case)  # first calls of an operator register it lazily
    (small_ops, small_calls), (large_ops, large_calls) = (_count_forward(*case) for case in cases)
    assert sum(small_ops.values()) > 500
    assert small_ops == large_ops
    assert small_calls == large_calls
