"""Model loading in a dtype, chunked completion log-probs, gradient checkpointing, mixed precision."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen2ForCausalLM

from stages.core.critic import ValueHead
from stages.core.modeling import (completion_logits, completion_logprobs, enable_gradient_checkpointing, load_causal_lm,
                                  saved_dtype, tiny_qwen2_config, token_logprobs)
from stages.core.precision import MixedPrecision

VOCAB = 97
CPU = torch.device("cpu")


def tiny_model(seed: int = 0, num_layers: int = 2) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=VOCAB, hidden_size=32, num_layers=num_layers, num_heads=4,
                                              num_kv_heads=2, max_position_embeddings=64))


def left_padded_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Three rows: prompts of 4, 2 and 6 tokens left-padded to 6, then 5 completion tokens
    (the last two rows' completions end in right padding, as a rollout batch does)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 11), generator=generator)  # (B, L)
    attention = torch.ones_like(ids)
    attention[0, :2] = 0
    attention[1, :4] = 0
    attention[1, -2:] = 0
    attention[2, -1:] = 0
    ids[attention == 0] = 0
    return ids, attention, 5


def reference_logprobs(model, ids, attention, width, temperature):
    """The straightforward computation: full (B, T, V) logits, float32 log-softmax, entropy."""
    logits = completion_logits(model, ids, attention, width)  # (B, T, V)
    logp = token_logprobs(logits, ids[:, -width:], temperature)
    scaled = logits.float() / temperature
    entropy = -(torch.softmax(scaled, -1) * torch.log_softmax(scaled, -1)).sum(-1)
    return logp, entropy


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 15, 4096])
def test_chunked_logprobs_equal_the_full_logits_computation_values_and_gradients(chunk_tokens):
    ids, attention, width = left_padded_batch()
    weights = torch.rand(3, width)  # an arbitrary loss on both outputs exercises every gradient path

    model = tiny_model()
    expected_logp, expected_entropy = reference_logprobs(model, ids, attention, width, temperature=0.7)
    ((expected_logp * weights).sum() + expected_entropy.sum()).backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    logp, entropy = completion_logprobs(model, ids, attention, width, temperature=0.7, with_entropy=True,
                                        chunk_tokens=chunk_tokens)
    assert logp.dtype == torch.float32 and entropy.dtype == torch.float32 and logp.shape == (3, width)
    torch.testing.assert_close(logp, expected_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-5, rtol=1e-5)
    ((logp * weights).sum() + entropy.sum()).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_left_padding_does_not_change_a_rows_logprobs():
    model = tiny_model().eval()
    ids, attention, width = left_padded_batch()
    with torch.no_grad():
        batched, _ = completion_logprobs(model, ids, attention, width, chunk_tokens=3)
        alone, _ = completion_logprobs(model, ids[:1, 2:], attention[:1, 2:], width, chunk_tokens=3)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


def test_without_entropy_returns_none_and_same_logprobs():
    model = tiny_model().eval()
    ids, attention, width = left_padded_batch()
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, ids, attention, width, chunk_tokens=2)
        expected, _ = reference_logprobs(model, ids, attention, width, temperature=1.0)
    assert entropy is None
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_refused_with_the_field_named():
    model = tiny_model()
    ids, attention, _ = left_padded_batch()
    with pytest.raises(ValueError, match="chunk_tokens"):
        completion_logprobs(model, ids, attention, 5, chunk_tokens=0)
    with pytest.raises(ValueError, match="completion tokens"):
        completion_logprobs(model, ids, attention, ids.shape[1])


def test_float32_logprobs_from_bfloat16_weights():
    model = tiny_model()
    ids, attention, width = left_padded_batch()
    with torch.no_grad():
        full_precision, _ = completion_logprobs(model, ids, attention, width)
        model_bf16 = model.to(torch.bfloat16)
        logp, entropy = completion_logprobs(model_bf16, ids, attention, width, with_entropy=True, chunk_tokens=4)
        expected, expected_entropy = reference_logprobs(model_bf16, ids, attention, width, temperature=1.0)
    assert logp.dtype == torch.float32 and entropy.dtype == torch.float32
    # The softmax is in float32: equal to the straightforward bf16-logits computation ...
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-5, rtol=1e-5)
    # ... and close to the float32 model (bf16 weights and activations: a few 1e-2 at most).
    assert (logp - full_precision).abs().max() < 0.1


def test_gradient_checkpointing_gives_equal_policy_gradients():
    ids, attention, width = left_padded_batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(num_layers=3).train()
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert model.is_gradient_checkpointing
        logp, entropy = completion_logprobs(model, ids, attention, width, with_entropy=True, chunk_tokens=4)
        (logp.sum() + 0.1 * entropy.sum()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_checkpointing_gives_equal_value_head_critic_gradients():
    ids, attention, _ = left_padded_batch()
    grads = []
    for checkpointing in (False, True):
        critic = ValueHead(tiny_model(num_layers=3)).train()
        torch.nn.init.normal_(critic.value_head.weight)  # the zero init would give the trunk no gradient
        if checkpointing:
            enable_gradient_checkpointing(critic.model)
        critic.values(ids, attention).pow(2).sum().backward()
        grads.append({name: p.grad.clone() for name, p in critic.named_parameters() if p.grad is not None})
    assert len(grads[0]) > 2  # the trunk got gradients, not only the head
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_load_causal_lm_in_a_dtype_auto_and_with_checkpointing(tmp_path):
    tiny_model().to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert saved_dtype(tmp_path / "bf16") == "bfloat16"
    assert next(load_causal_lm(tmp_path / "bf16", device=CPU, dtype="auto").parameters()).dtype == torch.bfloat16
    assert next(load_causal_lm(tmp_path / "bf16", device=CPU).parameters()).dtype == torch.float32
    loaded = load_causal_lm(tmp_path / "bf16", device=CPU, dtype="float16", gradient_checkpointing=True)
    assert next(loaded.parameters()).dtype == torch.float16 and loaded.is_gradient_checkpointing
    with pytest.raises(ValueError, match="dtype"):
        load_causal_lm(tmp_path / "bf16", device=CPU, dtype="float8")


# ---------------------------------------------------------------- mixed precision
def regression_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 8, generator=generator)
    targets = inputs @ torch.randn(8, 1, generator=generator) + 0.5
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, inputs, targets


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_mixed_precision_trains_a_tiny_model_with_float32_master_weights(dtype):
    model, inputs, targets = regression_problem()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    precision = MixedPrecision(dtype, "cpu")
    losses, num_nonfinite_norms = [], 0
    for _ in range(60):
        with precision.autocast():
            prediction = model(inputs)
            assert prediction.dtype == (torch.float32 if dtype == "float32" else getattr(torch, dtype))
            loss = (prediction.float() - targets).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        grad_norm = precision.step(optimizer, model.parameters(), max_grad_norm=10.0)
        assert torch.isfinite(loss)
        num_nonfinite_norms += not (grad_norm == grad_norm and abs(grad_norm) != float("inf"))
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert precision.num_skipped_steps == num_nonfinite_norms
    # fp16: the first steps overflow at GradScaler's initial scale of 2**16 and are skipped while
    # the scale halves; after that calibration every step goes through.
    assert precision.num_skipped_steps <= (10 if dtype == "float16" else 0)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())


def test_float16_scaler_scales_the_loss_and_unscales_the_gradients():
    model, inputs, targets = regression_problem()
    precision = MixedPrecision("float16", "cpu")
    assert precision.loss_scale == 65536.0  # GradScaler's initial scale
    loss = (model(inputs) - targets).pow(2).mean()
    precision.backward(loss)
    scaled_grad = model[0].weight.grad.clone()
    model.zero_grad()
    loss = (model(inputs) - targets).pow(2).mean()
    loss.backward()
    torch.testing.assert_close(scaled_grad / precision.loss_scale, model[0].weight.grad)


def test_float16_step_with_an_injected_inf_is_skipped_and_counted():
    model, inputs, targets = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = MixedPrecision("float16", "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    scale_before = precision.loss_scale
    with precision.autocast():
        loss = (model(inputs).float() - targets).pow(2).mean()
    precision.backward(loss)
    model[0].weight.grad[0, 0] = float("inf")  # an overflow in one gradient entry
    grad_norm = precision.step(optimizer, model.parameters(), max_grad_norm=1.0)
    assert grad_norm == float("inf") or grad_norm != grad_norm
    assert precision.num_skipped_steps == 1
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))  # no update applied
    assert precision.loss_scale == scale_before / 2  # the scaler backs off
    # The next, finite step goes through.
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        loss = (model(inputs).float() - targets).pow(2).mean()
    precision.backward(loss)
    precision.step(optimizer, model.parameters(), max_grad_norm=1.0)
    assert precision.num_skipped_steps == 1
    assert not all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_precision_state_round_trips_and_refuses_another_dtype():
    model, inputs, targets = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = MixedPrecision("float16", "cpu")
    precision.backward((model(inputs) - targets).pow(2).mean())
    model[0].bias.grad[0] = float("nan")
    precision.step(optimizer, model.parameters(), max_grad_norm=1.0)  # skipped; scale halves
    restored = MixedPrecision("float16", "cpu")
    restored.load_state_dict(precision.state_dict())
    assert restored.num_skipped_steps == 1 and restored.loss_scale == precision.loss_scale == 32768.0
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision("bfloat16", "cpu").load_state_dict(precision.state_dict())
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision("float64", "cpu")


def test_float32_autocast_is_a_no_op():
    precision = MixedPrecision("float32", "cpu")
    with precision.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert precision.scaler is None and precision.loss_scale == 1.0
