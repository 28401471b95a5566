"""
Every fast path equals its reference: the SDPA fusion attention against stock LayoutLMv3 eager attention (outputs and
gradients, fp32 to 1e-5, bf16 to 1e-2 relative), AETNet under `torch.compile` against eager AETNet, and AETNet's
forward issues the same tensor operations and Python calls whatever the number of tokens and patches (no Python
loops over them).
"""

import collections
import copy
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification
from transformers.models.layoutlmv3.modeling_layoutlmv3 import LayoutLMv3Encoder, LayoutLMv3SelfAttention

from conftest import DEVICES

from aetnet.configuration_aetnet import AETNetConfig
from aetnet.fast_attention import (
    LayoutLMv3SdpaEncoder,
    LayoutLMv3SdpaSelfAttention,
    combine_attention_bias,
    set_layoutlmv3_attention,
)
from aetnet.modeling_aetnet import AETNetForTokenClassification


VOCAB, IMAGE, NUM_LABELS = 99, 16, 3


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: intra-op threads cost more than they save, and stall whenever a core is busy elsewhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_layoutlmv3(**overrides) -> LayoutLMv3ForTokenClassification:
    """Tiny LayoutLMv3 without dropout and with large relative biases, so that a wrong bias would show."""
    config = LayoutLMv3Config(
        vocab_size=VOCAB, hidden_size=36, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        coordinate_size=6, shape_size=6, input_size=IMAGE, patch_size=4, max_position_embeddings=66,
        num_labels=NUM_LABELS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides,
    )
    torch.manual_seed(0)
    model = LayoutLMv3ForTokenClassification(config)
    with torch.no_grad():
        for name in ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias"):
            if hasattr(model.layoutlmv3.encoder, name):
                getattr(model.layoutlmv3.encoder, name).weight.normal_(0.0, 1.0)
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


def run(model, implementation, inputs, bf16=False, device="cpu"):
    """Switch `model` to `implementation`, run forward + backward on `device`; return the logits and every gradient
    (on the CPU)."""
    set_layoutlmv3_attention(model, implementation)
    model.to(device).zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        outputs = model(**{key: value.to(device) for key, value in inputs.items()})
    outputs.loss.backward()
    grads = {name: p.grad.cpu() for name, p in model.named_parameters() if p.grad is not None}
    return outputs.logits.float().cpu(), grads


def assert_grad_close(actual, expected, name, rtol=1e-5):
    """Elementwise to `rtol`, with an absolute slack of `rtol` times the tensor's largest entry: an entry that
    cancels to near zero carries the rounding of the large terms it came from (floor 1e-6 for all-zero gradients)."""
    atol = max(rtol * expected.abs().max().item(), 1e-6)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def relative_error(actual, expected):
    return ((actual.float() - expected.float()).norm() / expected.float().norm().clamp(min=1e-30)).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("relative, spatial", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("with_image", [True, False])
def test_sdpa_fusion_attention_equals_eager_fp32(relative, spatial, with_image, device):
    model = tiny_layoutlmv3(has_relative_attention_bias=relative, has_spatial_attention_bias=spatial)
    inputs = make_inputs()
    if not with_image:
        inputs.pop("pixel_values")
    eager_logits, eager_grads = run(model, "eager", inputs, device=device)
    sdpa_logits, sdpa_grads = run(model, "sdpa", inputs, device=device)
    torch.testing.assert_close(sdpa_logits, eager_logits, rtol=1e-5, atol=1e-5)
    assert sdpa_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        assert_grad_close(sdpa_grads[name], grad, name)


def test_sdpa_math_backend_equals_eager_fp32():
    # CPU training with attention dropout runs SDPA's math backend, dropout-free calls its flash kernel: check both.
    model = tiny_layoutlmv3()
    inputs = make_inputs()
    eager_logits, eager_grads = run(model, "eager", inputs)
    with sdpa_kernel(SDPBackend.MATH):
        sdpa_logits, sdpa_grads = run(model, "sdpa", inputs)
    torch.testing.assert_close(sdpa_logits, eager_logits, rtol=1e-5, atol=1e-5)
    for name, grad in eager_grads.items():
        assert_grad_close(sdpa_grads[name], grad, name)


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_fusion_attention_equals_eager_bf16_autocast(device):
    model = tiny_layoutlmv3()
    inputs = make_inputs()
    eager_logits, eager_grads = run(model, "eager", inputs, bf16=True, device=device)
    sdpa_logits, sdpa_grads = run(model, "sdpa", inputs, bf16=True, device=device)
    assert relative_error(sdpa_logits, eager_logits) <= 1e-2
    # The exact gradient of a key bias is zero (softmax ignores a per-row shift), so both paths return rounding noise
    # there: it is held to 1e-2 of the global gradient norm instead of its own.
    floor = 1e-2 * torch.cat([g.flatten() for g in eager_grads.values()]).norm().item()
    for name, grad in eager_grads.items():
        error = (sdpa_grads[name] - grad).norm().item()
        assert error <= 1e-2 * grad.norm().item() or (name.endswith("key.bias") and error <= floor), name


def test_sdpa_handles_fully_padded_rows_like_eager():
    model = tiny_layoutlmv3()
    inputs = make_inputs()
    inputs.pop("pixel_values")
    inputs["attention_mask"][2] = 0  # a page whose every token is padding: stock averages, it must not give NaN
    eager_logits, _ = run(model, "eager", inputs)
    sdpa_logits, _ = run(model, "sdpa", inputs)
    assert torch.isfinite(sdpa_logits).all()
    torch.testing.assert_close(sdpa_logits, eager_logits, rtol=1e-5, atol=1e-5)


def test_sdpa_padding_does_not_leak_into_real_tokens():
    model = tiny_layoutlmv3().eval()
    set_layoutlmv3_attention(model, "sdpa")
    inputs = make_inputs()
    inputs.pop("labels")
    changed = copy.deepcopy(inputs)
    changed["input_ids"][2, 4:] = 7  # only padded positions of page 2 change
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        before, after = model(**inputs).logits, model(**changed).logits
    torch.testing.assert_close(after[real], before[real], rtol=1e-5, atol=1e-6)


def test_output_attentions_falls_back_to_the_stock_path():
    model = tiny_layoutlmv3().eval()
    inputs = make_inputs()
    inputs.pop("labels")
    set_layoutlmv3_attention(model, "eager")
    with torch.no_grad():
        eager = model(**inputs, output_attentions=True)
        set_layoutlmv3_attention(model, "sdpa")
        sdpa = model(**inputs, output_attentions=True)
    assert len(sdpa.attentions) == 2 and sdpa.attentions[0].shape == (3, 4, 12 + 17, 12 + 17)
    for mine, stock in zip(sdpa.attentions, eager.attentions):
        torch.testing.assert_close(mine, stock)


def test_switching_keeps_weights_and_can_be_undone():
    model = tiny_layoutlmv3()
    keys = list(model.state_dict())
    assert set_layoutlmv3_attention(model, "sdpa") == 3  # two self-attentions and the encoder
    assert type(model.layoutlmv3.encoder) is LayoutLMv3SdpaEncoder
    assert all(type(layer.attention.self) is LayoutLMv3SdpaSelfAttention for layer in model.layoutlmv3.encoder.layer)
    assert list(model.state_dict()) == keys
    assert set_layoutlmv3_attention(model, "sdpa") == 0
    assert set_layoutlmv3_attention(model, "eager") == 3
    assert type(model.layoutlmv3.encoder) is LayoutLMv3Encoder
    assert type(model.layoutlmv3.encoder.layer[0].attention.self) is LayoutLMv3SelfAttention
    with pytest.raises(ValueError, match="implementation.*flash"):
        set_layoutlmv3_attention(model, "flash")


def test_combined_bias_accepts_bool_masks_and_is_aligned():
    torch.manual_seed(0)
    rel_pos, rel_2d_pos = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :].expand(2, 1, 5, 5)
    additive = torch.zeros(2, 1, 5, 5).masked_fill(~keep, torch.finfo(torch.float32).min)
    from_bool = combine_attention_bias(keep, rel_pos, rel_2d_pos, 9, True, True, torch.float32)
    from_float = combine_attention_bias(additive, rel_pos, rel_2d_pos, 9, True, True, torch.float32)
    torch.testing.assert_close(from_bool, from_float)
    torch.testing.assert_close(from_float[1], (rel_pos[1] + rel_2d_pos[1]) / 3)
    assert from_float.stride(-2) % 16 == 0
    assert torch.isfinite(combine_attention_bias(additive, None, None, 9, True, True, torch.bfloat16)).all()
    assert combine_attention_bias(None, rel_pos, rel_2d_pos, 9, False, True, torch.float32) is None


def tiny_aetnet(fusion_attention="eager", image=IMAGE, max_length=64) -> AETNetForTokenClassification:
    config = AETNetConfig.from_preset(
        "tiny", vocab_size=VOCAB, max_length=max_length, num_labels=NUM_LABELS, queue_size=8,
        fusion_attention=fusion_attention,
    )
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = 0.0
    config.layout_config.input_size = config.vision_config.image_size = image
    torch.manual_seed(0)
    return AETNetForTokenClassification(config)


def aetnet_step(model, inputs, module=None):
    """Forward with all losses and backward through `model`; the gradients of `module` (default: `model`)."""
    outputs = model(**inputs)
    loss = outputs.loss + sum(outputs.alignment_losses.values())
    loss.backward()
    module = model if module is None else module
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return outputs, grads


def test_fusion_attention_config_field_selects_the_sdpa_path():
    with pytest.raises(ValueError, match="fusion_attention.*flash"):
        AETNetConfig.from_preset("tiny", vocab_size=VOCAB, fusion_attention="flash")
    eager, sdpa = tiny_aetnet("eager"), tiny_aetnet("sdpa")
    assert type(sdpa.aetnet.layoutlmv3.encoder) is LayoutLMv3SdpaEncoder
    assert type(eager.aetnet.layoutlmv3.encoder) is LayoutLMv3Encoder
    # The aligners' attention is transformers' own SDPA path in both (numerically checked by transformers).
    for model in (eager, sdpa):
        assert model.aetnet.vision_model.config._attn_implementation == "sdpa"
        assert model.aetnet.text_model.config._attn_implementation == "sdpa"
    sdpa.load_state_dict(eager.state_dict())
    inputs = make_inputs()
    eager_out, eager_grads = aetnet_step(eager.train(), inputs)
    sdpa_out, sdpa_grads = aetnet_step(sdpa.train(), inputs)
    torch.testing.assert_close(sdpa_out.logits, eager_out.logits, rtol=1e-5, atol=1e-5)
    for name, value in eager_out.alignment_losses.items():
        torch.testing.assert_close(sdpa_out.alignment_losses[name], value, rtol=1e-5, atol=1e-6)
    for name, grad in eager_grads.items():
        assert_grad_close(sdpa_grads[name], grad, name)


def test_torch_compile_fullgraph_training_step_equals_eager():
    # aot_eager traces forward and backward with no graph break allowed (fullgraph), without C++ code generation,
    # which takes minutes on two cores; inductor compiles the same graph.
    reference = tiny_aetnet("sdpa").train()
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


def test_forward_work_does_not_grow_with_tokens_or_patches():
    """A Python loop over tokens or patches would add operations and calls per token or patch: 5x the tokens and
    4x the patches must leave both counts unchanged, for both fusion attentions."""
    cases = []
    for length, image in ((8, 16), (40, 32)):
        model = tiny_aetnet("eager", image=image).train()
        cases.append((model, make_inputs(batch_size=2, length=length, image=image)))
    for implementation in ("eager", "sdpa"):
        for case in cases:
            set_layoutlmv3_attention(case[0], implementation)
            _count_forward(*case)  # first calls of an operator register it lazily
        (small_ops, small_calls), (large_ops, large_calls) = (_count_forward(*case) for case in cases)
        assert sum(small_ops.values()) > 500
        assert small_ops == large_ops, implementation
        assert small_calls == large_calls, implementation
