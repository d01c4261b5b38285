"""The hf rollout backend's sampling loop: log-prob contract, stops on token ids, top-p, row dropping."""
from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from stages.core import rollout_hf
from stages.core.modeling import completion_logprobs, tiny_qwen2_config
from stages.core.rollout import SamplingSettings
from stages.core.rollout_hf import HFBackend, StopStringDetector, sample_next_tokens, top_p_filter
from stages.core.tokenizer import build_tiny_tokenizer

LOGPROB_ATOL = 1e-4  # the KV-cached incremental forward vs one full forward: summation order only


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def policy(tokenizer):
    torch.manual_seed(0)
    config = tiny_qwen2_config(vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                               max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id)
    return Qwen2ForCausalLM(config).eval()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def trainer_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp, _ = completion_logprobs(model, ids, torch.ones_like(ids), len(completion), temperature=temperature)
    return logp[0]


PROMPTS = ["Use 3 5 7 to make 22. <think>", "Hi", "Numbers: 1 2 3 4, target 10. Assistant: <think>"]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_are_the_trainers_tempered_logprobs_with_left_padding(policy, tokenizer, temperature):
    backend = HFBackend(policy, tokenizer)
    prompts = [encode(tokenizer, p) for p in PROMPTS]  # three lengths: the batch is left-padded
    settings = SamplingSettings(num_samples=3, max_new_tokens=20, temperature=temperature, seed=3)
    groups = backend.generate(prompts, settings)
    assert [len(g) for g in groups] == [3, 3, 3]
    for prompt, group in zip(prompts, groups):
        for completion in group:
            assert len(completion.token_ids) == len(completion.logprobs) >= 1
            expected = trainer_logprobs(policy, prompt, completion.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=LOGPROB_ATOL, rtol=0)


def test_greedy_matches_transformers_generate_on_a_padded_batch(policy, tokenizer):
    prompts = [encode(tokenizer, p) for p in PROMPTS]
    settings = SamplingSettings(num_samples=1, max_new_tokens=16, temperature=0.0)
    completions = [g[0] for g in HFBackend(policy, tokenizer).generate(prompts, settings)]
    for prompt, completion in zip(prompts, completions):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            expected = policy.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=16, pad_token_id=tokenizer.pad_token_id)[0, len(prompt):]
        assert completion.token_ids == expected.tolist()[:len(completion.token_ids)]
        # greedy log-probs are untempered: log_softmax(logits)
        torch.testing.assert_close(torch.tensor(completion.logprobs), trainer_logprobs(policy, prompt, completion.token_ids),
                                   atol=LOGPROB_ATOL, rtol=0)


def test_seed_reproduces_groups_and_samples_differ(policy, tokenizer):
    backend = HFBackend(policy, tokenizer)
    prompt = encode(tokenizer, PROMPTS[0])
    settings = SamplingSettings(num_samples=4, max_new_tokens=12, seed=11)
    ids = lambda groups: [[c.token_ids for c in g] for g in groups]  # noqa: E731
    first = backend.generate([prompt, prompt], settings)
    assert ids(first) == ids(backend.generate([prompt, prompt], settings))
    assert ids(first) != ids(backend.generate([prompt, prompt], SamplingSettings(num_samples=4, max_new_tokens=12, seed=12)))
    assert len({tuple(t) for g in ids(first) for t in g}) == 8


def test_generation_restores_the_models_training_mode(policy, tokenizer):
    policy.train()
    try:
        HFBackend(policy, tokenizer).generate([encode(tokenizer, "Hi")], SamplingSettings(num_samples=1, max_new_tokens=2))
        assert policy.training
    finally:
        policy.eval()


def test_eos_is_kept_and_ends_the_row(policy, tokenizer):
    eos = tokenizer.eos_token_id

    class EosAfterThree(torch.nn.Module):
        """Wraps the policy; forces EOS as the 4th sampled token of every row."""

        def __init__(self):
            super().__init__()
            self.inner, self.calls = policy, 0
            self.config = policy.config

        def forward(self, **kwargs):
            out = self.inner(**kwargs)
            self.calls += 1
            if self.calls == 4:  # the prefill gives token 1; call 4 gives token 4
                out.logits[..., eos] = 1e4
            return out

    backend = HFBackend(EosAfterThree(), tokenizer, device=torch.device("cpu"))
    group = backend.generate([encode(tokenizer, "Hi")], SamplingSettings(num_samples=2, max_new_tokens=10, seed=0))[0]
    for completion in group:
        assert completion.token_ids[-1] == eos and len(completion.token_ids) == 4
        assert completion.finish_reason == "stop" and not completion.truncated
        assert tokenizer.eos_token not in completion.text


def test_completions_without_a_stop_are_cut_at_max_new_tokens(policy, tokenizer):
    group = HFBackend(policy, tokenizer).generate([encode(tokenizer, "Hi")], SamplingSettings(num_samples=2, max_new_tokens=5))[0]
    for completion in group:
        if completion.finish_reason == "length":
            assert len(completion.token_ids) == 5 and completion.truncated


# ---------------------------------------------------------------- stop strings on token ids
@pytest.mark.parametrize("text, stop, expected_end", [
    ("ab <answer>7</answer> tail", "</answer>", "ab <answer>7</answer>"),  # the added tag token
    ("ab </ans" + "wer> tail", "wer>", "ab </answer>"),  # spelled byte by byte
    ("x = 1; y = 2 -- done", " -- ", "x = 1; y = 2 -- "),  # ends in a space
    ("price: 3\u20ac then more", "\u20ac", "price: 3\u20ac"),  # one character spread over three byte tokens
    ("no stop here", "</answer>", None),
], ids=["added-token", "bytes", "space", "multibyte", "none"])
def test_stop_detector_finds_the_first_completing_token(tokenizer, text, stop, expected_end):
    detector = StopStringDetector(tokenizer, (stop, "never-here"), torch.device("cpu"))
    ids = encode(tokenizer, text)
    end = None
    for index in range(len(ids)):
        if detector.may_complete(torch.tensor([ids[index]])).item() and detector.completes(ids[:index + 1]):
            end = index + 1
            break
    if expected_end is None:
        assert end is None
    else:
        assert end is not None and tokenizer.decode(ids[:end]) == expected_end


def test_stop_detector_rejects_empty_strings_and_flags_few_tokens(tokenizer):
    with pytest.raises(ValueError, match="stop_strings"):
        StopStringDetector(tokenizer, ("",), torch.device("cpu"))
    detector = StopStringDetector(tokenizer, ("</answer>",), torch.device("cpu"))
    # Only '>' (one byte token), the '</answer>' tag and the stray UTF-8 bytes can complete it.
    assert detector.can_complete.sum().item() < 140
    assert not StopStringDetector(tokenizer, (), torch.device("cpu")).may_complete(torch.tensor([5, 62])).any()


def test_generation_stops_at_the_first_stop_string(policy, tokenizer):
    backend = HFBackend(policy, tokenizer)
    stops = ("e", "a ")
    settings = SamplingSettings(num_samples=8, max_new_tokens=40, temperature=1.5, stop_strings=stops, seed=1)
    group = backend.generate([encode(tokenizer, PROMPTS[0])], settings)[0]
    stopped = [c for c in group if c.finish_reason == "stop" and c.token_ids[-1] != tokenizer.eos_token_id]
    assert stopped, "with these common characters some samples must hit a stop string"
    for completion in stopped:
        # Token granularity: the last token completes a stop string (it may carry text past it,
        # e.g. the '</answer>' tag completes "e"); without that token there is none.
        assert any(s in completion.text for s in stops)
        before = tokenizer.decode(completion.token_ids[:-1])
        assert not any(s in before for s in stops), "must end at the first stop string"
        assert len(completion.token_ids) == len(completion.logprobs)


# ---------------------------------------------------------------- sampling helpers
def test_top_p_filter_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.3, 0.5]])
    torch.testing.assert_close(top_p_filter(probs, 0.5), torch.tensor([[0.0, 0.6, 0.0], [0.0, 0.0, 0.5]]))
    torch.testing.assert_close(top_p_filter(probs, 0.75), torch.tensor([[0.0, 0.6, 0.3], [0.0, 0.3, 0.5]]))
    torch.testing.assert_close(top_p_filter(probs, 0.85), torch.tensor([[0.0, 0.6, 0.3], [0.2, 0.3, 0.5]]))
    torch.testing.assert_close(top_p_filter(probs, 1.0), probs)


def test_top_p_samples_only_the_nucleus_and_scores_without_it():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)  # probs ~ .64 .24 .09 .03
    ids, logp = sample_next_tokens(logits, temperature=1.0, top_p=0.8)
    assert set(ids.tolist()) == {0, 1}  # 0.64 < 0.8 <= 0.64 + 0.24
    torch.testing.assert_close(logp, torch.log_softmax(logits, -1).gather(-1, ids[:, None]).squeeze(-1))
    share_of_first = (ids == 0).float().mean().item()
    assert 0.67 < share_of_first < 0.80  # renormalised over the nucleus: 0.64 / 0.88 = 0.73


def test_top_p_backend_logprobs_are_untruncated(policy, tokenizer):
    prompt = encode(tokenizer, PROMPTS[0])
    settings = SamplingSettings(num_samples=4, max_new_tokens=12, top_p=0.5, seed=5)
    for completion in HFBackend(policy, tokenizer).generate([prompt], settings)[0]:
        torch.testing.assert_close(torch.tensor(completion.logprobs), trainer_logprobs(policy, prompt, completion.token_ids),
                                   atol=LOGPROB_ATOL, rtol=0)


def test_sampling_race_follows_the_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(4000, 1)
    ids, _ = sample_next_tokens(logits, temperature=1.0, top_p=1.0)
    shares = torch.bincount(ids, minlength=3).float() / len(ids)
    torch.testing.assert_close(shares, torch.tensor([0.5, 0.3, 0.2]), atol=0.03, rtol=0)


def test_dropping_finished_rows_does_not_change_any_row(policy, tokenizer, monkeypatch):
    # Stop strings of common characters finish rows at different steps; each row's sampling noise
    # is its own, so the batch it shares (compacted or not) must not matter.
    prompts = [encode(tokenizer, PROMPTS[0])]
    settings = SamplingSettings(num_samples=8, max_new_tokens=24, temperature=1.5, stop_strings=("e", "a", "0"), seed=4)
    results = {}
    for fraction in (0.01, 2.0):  # drop as soon as anything finishes / never drop
        monkeypatch.setattr(rollout_hf, "COMPACT_WHEN_FINISHED_FRACTION", fraction)
        results[fraction] = HFBackend(policy, tokenizer).generate(prompts, settings)[0]
    lengths = {len(c.token_ids) for c in results[0.01]}
    assert len(lengths) > 2, f"rows must finish at different steps for this test to mean anything: {lengths}"
    for dropped, kept in zip(results[0.01], results[2.0]):
        assert dropped.token_ids == kept.token_ids and dropped.finish_reason == kept.finish_reason
        torch.testing.assert_close(torch.tensor(dropped.logprobs), torch.tensor(kept.logprobs), atol=1e-5, rtol=0)



def test_compute_dtype_samples_under_autocast_like_the_trainer(policy, tokenizer):
    seen = []
    handle = policy.register_forward_pre_hook(lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        backend = HFBackend(policy, tokenizer, compute_dtype="bfloat16")
        prompt = encode(tokenizer, PROMPTS[0])
        completion = backend.generate([prompt], SamplingSettings(num_samples=1, max_new_tokens=8, seed=2))[0][0]
    finally:
        handle.remove()
    assert seen and all(seen)
    assert next(policy.parameters()).dtype == torch.float32  # master weights untouched
    ids = torch.tensor([prompt + completion.token_ids])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, _ = completion_logprobs(policy, ids, torch.ones_like(ids), len(completion.token_ids))
    # bf16 arithmetic: the incremental and the full forward round differently, so a loose bound.
    torch.testing.assert_close(torch.tensor(completion.logprobs), expected[0], atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="dtype"):
        HFBackend(policy, tokenizer, compute_dtype="int8")


@pytest.mark.parametrize("fraction", [0.01, 2.0])  # rows dropped as soon as one finishes / never
def test_lean_decode_samples_what_the_models_forward_samples(policy, tokenizer, monkeypatch, fraction):
    """The lean Qwen2 step (preallocated cache, grouped-query matmul attention) against the
    model's own forward: same tokens, log-probs to float rounding, on left-padded groups."""
    monkeypatch.setattr(rollout_hf, "COMPACT_WHEN_FINISHED_FRACTION", fraction)
    prompts = [encode(tokenizer, p) for p in PROMPTS]
    settings = SamplingSettings(num_samples=4, max_new_tokens=24, temperature=1.2, stop_strings=("e", "0"), seed=6)
    lean = HFBackend(policy, tokenizer).generate(prompts, settings)
    model = HFBackend(policy, tokenizer, lean_decode=False).generate(prompts, settings)
    assert rollout_hf.LeanQwen2Decoder.supports(policy)
    lengths = {len(c.token_ids) for group in lean for c in group}
    assert len(lengths) > 2, f"rows must finish at different steps: {lengths}"
    for lean_group, model_group in zip(lean, model):
        for a, b in zip(lean_group, model_group):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


def test_lean_decode_declines_other_architectures(tokenizer):
    config = tiny_qwen2_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=4)
    config.use_sliding_window, config.sliding_window = True, 8
    assert not rollout_hf.LeanQwen2Decoder.supports(Qwen2ForCausalLM(config))


def test_distinct_prompts_prefill_once_and_keep_row_order():
    distinct, inverse = rollout_hf.distinct_prompts([[1, 2], [3], [1, 2], [3], [4]])
    assert distinct == [[1, 2], [3], [4]] and inverse == [0, 1, 0, 1, 2]
