"""Stage: GRPO (and its variants) with verifier rewards -- the R1-Zero training loop.

Each step reads top to bottom: sample a group of G completions per prompt, score them with the
configured rewards, compute advantages, update the policy (clipped surrogate, KL to the frozen
reference) for ``num_epochs`` x ``num_minibatches``, log, sync the rollout backend, checkpoint.
Every choice of estimator, aggregation and KL estimator is a name looked up in
``stages/core/algorithms.py``.

Checkpoints and partial logs live in the scratch directory beside the declared outputs; a rerun
after a crash resumes from the last complete checkpoint (model, optimizer, scheduler, RNG, data
position), but only if the checkpoint was made with the same config and start model.

    python -m stages.grpo --config results/.config/runs/r1zero/grpo.json --input model=results/models/tiny/model \\
        --input train=results/data/countdown/train.jsonl --output model=results/r1zero/grpo/model \\
        --output metrics=results/r1zero/grpo/metrics.jsonl --output scratch=results/r1zero/grpo
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import random
import shutil
import time
from pathlib import Path

import torch

from pipeline.algorithm_config import AlgorithmConfig, GuardConfig
from pipeline.artifacts import atomic_directory, config_hash, file_hash, provenance, read_json, read_jsonl, write_json_atomic
from pipeline.metrics import MetricsLogger
from pipeline.stage_cli import run_stage
from stages.core import algorithms as algos
from stages.core.guards import GuardStop, TrainingGuards
from stages.core.modeling import completion_logits, load_causal_lm, load_tokenizer, pick_device, set_cpu_threads, token_logprobs
from stages.core.prompting import encode_prompts
from stages.core.rollout import Completion, SamplingSettings, make_backend, resolve_backend_name, vllm_max_model_len
from stages.core.scoring import prefetch_code_results, score_completions

log = logging.getLogger("r1zero.grpo")


# ---------------------------------------------------------------- batches
@dataclasses.dataclass
class RolloutBatch:
    """B = num groups x G completions, flattened group by group."""

    rows: list[dict]  # (B,) the example row of each completion
    completions: list[Completion]  # (B,)
    input_ids: torch.Tensor  # (B, P + T) left-padded prompt, right-padded completion
    attention_mask: torch.Tensor  # (B, P + T)
    completion_mask: torch.Tensor  # (B, T) 1.0 on real completion tokens
    rollout_logprobs: torch.Tensor  # (B, T) from the backend
    truncated: torch.Tensor  # (B,) bool

    @property
    def num_completion_tokens(self) -> int:
        return self.completion_mask.shape[1]


def build_batch(rows: list[dict], prompt_ids: list[list[int]], completions: list[Completion], pad_id: int) -> RolloutBatch:
    prompt_width = max(len(p) for p in prompt_ids)
    completion_width = max(1, max(len(c.token_ids) for c in completions))
    size = len(completions)
    input_ids = torch.full((size, prompt_width + completion_width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    completion_mask = torch.zeros((size, completion_width))
    rollout_logprobs = torch.zeros((size, completion_width))
    for row, (prompt, completion) in enumerate(zip(prompt_ids, completions)):
        length = len(completion.token_ids)
        input_ids[row, prompt_width - len(prompt):prompt_width] = torch.tensor(prompt)
        attention[row, prompt_width - len(prompt):prompt_width + length] = 1
        if length:
            input_ids[row, prompt_width:prompt_width + length] = torch.tensor(completion.token_ids)
            completion_mask[row, :length] = 1.0
            rollout_logprobs[row, :length] = torch.tensor(completion.logprobs)
    truncated = torch.tensor([c.truncated for c in completions])
    return RolloutBatch(rows, completions, input_ids, attention, completion_mask, rollout_logprobs, truncated)


def slice_batch(batch: RolloutBatch, index: torch.Tensor) -> RolloutBatch:
    picked = index.tolist()
    return RolloutBatch([batch.rows[i] for i in picked], [batch.completions[i] for i in picked], batch.input_ids[index],
                        batch.attention_mask[index], batch.completion_mask[index], batch.rollout_logprobs[index],
                        batch.truncated[index])


# ---------------------------------------------------------------- data order
class PromptStream:
    """Epoch-shuffled prompt order with a position that checkpoints save and restore."""

    def __init__(self, num_rows: int, seed: int, position: int = 0):
        self.num_rows, self.seed, self.position = num_rows, seed, position

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.num_rows))
        random.Random(self.seed * 100003 + epoch).shuffle(order)
        return order

    def take(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            epoch, offset = divmod(self.position, self.num_rows)
            out.append(self._order(epoch)[offset])
            self.position += 1
        return out


# ---------------------------------------------------------------- the trainer
class GRPOTrainer:
    def __init__(self, config: dict, inputs: dict, device: torch.device):
        self.config, self.device = config, device
        self.algo = AlgorithmConfig.model_validate(config["algorithm"])
        self.guards = TrainingGuards(GuardConfig.model_validate(config["guards"]))
        self.weights_by_task = config["rewards"]
        self.rows = read_jsonl(inputs["train"])
        if not self.rows:
            raise ValueError(f"{inputs['train']}: no training rows")
        self.tokenizer = load_tokenizer(inputs["model"])
        self.prompt_ids = encode_prompts(self.tokenizer, self.rows)
        self.policy = load_causal_lm(inputs["model"], device=device)
        self.reference = self._frozen_copy(self.policy) if self.algo.uses_reference else None
        self.critic = algos_critic(self.policy, self.algo, inputs["model"]) if self.algo.uses_critic else None
        self.optimizer = torch.optim.AdamW(self._trainable_parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        self.critic_optimizer = self._make_critic_optimizer()
        warmup = max(1, config["warmup_steps"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.kl_controller = algos.make_kl_controller(self.algo)
        # With one epoch of one minibatch and nothing needing old log-probs before the update,
        # the update's own forward gives them: one forward pass per step saved.
        self.single_pass = (self.algo.num_epochs == 1 and self.algo.num_minibatches == 1
                            and self.algo.kl_mode == "loss" and not self.algo.uses_critic)
        self.stream = PromptStream(len(self.rows), config["seed"])
        self.sampling = SamplingSettings(num_samples=config["group_size"], max_new_tokens=config["max_new_tokens"],
                                         temperature=config["temperature"], top_p=config["top_p"],
                                         stop_strings=tuple(config["stop_strings"]))
        self.backend_name = resolve_backend_name(config["rollout"]["backend"])
        log.info("rollout backend: %s (asked for %r)", self.backend_name, config["rollout"]["backend"])
        self.backend = make_rollout_backend(self.backend_name, self.policy, self.tokenizer, inputs["model"], config, device)
        self.last_rollouts: list[dict] = []  # the latest step's completions, kept every logging.rollouts_every steps

    # ------------------------------------------------------------ setup helpers
    @staticmethod
    def _frozen_copy(model):
        reference = copy.deepcopy(model)
        reference.eval()
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
        return reference

    def _trainable_parameters(self):
        params = list(self.policy.parameters())
        if self.critic is not None and self.critic.shares_policy_trunk:
            params += list(self.critic.parameters())  # the value head rides on the policy optimiser
        return params

    def _make_critic_optimizer(self):
        if self.critic is None or self.critic.shares_policy_trunk:
            return None
        return torch.optim.AdamW(self.critic.parameters(), lr=self.algo.critic_lr or self.config["lr"])

    # ------------------------------------------------------------ sample
    def sample(self, step: int) -> tuple[RolloutBatch, dict]:
        """Sample groups; with dynamic sampling, keep only groups with reward spread (DAPO)."""
        wanted = self.config["prompts_per_step"]
        group = self.config["group_size"]
        kept_rows, kept_prompts, kept_completions, kept_scores, all_scores = [], [], [], [], []
        stats = {"sampling_rounds": 0, "groups_sampled": 0}
        while True:
            stats["sampling_rounds"] += 1
            indices = self.stream.take(wanted)
            # A seed per (step, round): a resumed run samples exactly what an uninterrupted one would.
            settings = dataclasses.replace(self.sampling, seed=self.config["seed"] * 1_000_003 + step * 101 + stats["sampling_rounds"])
            groups = self.backend.generate([self.prompt_ids[i] for i in indices], settings)
            stats["groups_sampled"] += len(groups)
            prefetch_code_results([c.text for group_ in groups for c in group_],
                                  [self.rows[i] for i in indices for _ in range(group)])
            for index, completions in zip(indices, groups):
                rows = [self.rows[index]] * group
                scored = score_completions([c.text for c in completions], rows, self.weights_by_task)
                all_scores.append(scored)
                spread = max(scored.totals) - min(scored.totals) > 1e-6
                if self.algo.dynamic_sampling and not spread:
                    continue
                kept_rows += rows
                kept_prompts += [self.prompt_ids[index]] * group
                kept_completions += completions
                kept_scores.append(scored)
            enough = len(kept_scores) >= wanted
            if not self.algo.dynamic_sampling or enough or stats["sampling_rounds"] >= self.algo.max_sampling_rounds:
                break
        keep = min(len(kept_scores), wanted) if self.algo.dynamic_sampling else len(kept_scores)
        stats["groups_kept"] = keep
        batch = build_batch(kept_rows[:keep * group], kept_prompts[:keep * group], kept_completions[:keep * group],
                            self.tokenizer.pad_token_id) if keep else None
        return batch, {"scores": kept_scores[:keep], "all_scores": all_scores, **stats}

    # ------------------------------------------------------------ score
    def rewards_of(self, batch: RolloutBatch, scores: list) -> tuple[torch.Tensor, dict]:
        totals = torch.tensor([t for s in scores for t in s.totals], dtype=torch.float)  # (B,)
        metrics = {}
        if self.algo.truncation == "overlong_penalty":
            lengths = batch.completion_mask.sum(-1).long()  # (B,)
            penalty = algos.overlong_penalty(lengths, self.config["max_new_tokens"], self.algo.overlong_buffer_tokens,
                                             self.algo.overlong_penalty_factor)  # (B,)
            totals = totals + penalty
            metrics["reward/overlong_penalty"] = penalty.mean().item()
        return totals, metrics

    # ------------------------------------------------------------ forward passes
    def policy_forward(self, batch: RolloutBatch, with_values: bool = False):
        """Log-probs (B, T), entropy (B, T) and, for a value-head critic, values (B, T)."""
        ids = batch.input_ids.to(self.device)
        attention = batch.attention_mask.to(self.device)
        width = batch.num_completion_tokens
        targets = ids[:, -width:]  # (B, T)
        values = None
        if with_values and self.critic is not None and self.critic.shares_policy_trunk:
            logits, all_values = self.critic.model(ids, attention)  # (B, L, V), (B, L)
            logits, values = logits[:, -width - 1:-1], all_values[:, -width - 1:-1]
        else:
            logits = completion_logits(self.policy, ids, attention, width)  # (B, T, V)
        logp = token_logprobs(logits, targets, self.config["temperature"])  # (B, T)
        need_entropy_grad = self.algo.entropy_coef > 0
        with torch.set_grad_enabled(need_entropy_grad and torch.is_grad_enabled()):
            entropy = algos.entropy_from_logits(logits.float() / self.config["temperature"])  # (B, T)
        return logp, entropy, values

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        width = batch.num_completion_tokens
        logits = completion_logits(self.reference, ids, attention, width)
        return token_logprobs(logits, ids[:, -width:], self.config["temperature"])  # (B, T)

    @torch.no_grad()
    def critic_values(self, batch: RolloutBatch) -> torch.Tensor:
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        width = batch.num_completion_tokens
        return self.critic.values(ids, attention)[:, -width - 1:-1]  # (B, T)

    # ------------------------------------------------------------ advantage
    def advantages(self, batch: RolloutBatch, rewards: torch.Tensor, mask: torch.Tensor, old_logp, ref_logp):
        """(B,) or (B, T) advantages, (B, T) returns for the critic (or None), and metrics."""
        metrics = {}
        kl_tokens = None
        if ref_logp is not None and self.algo.kl_mode == "reward":
            kl_tokens = algos.KL_ESTIMATORS[self.algo.kl_estimator](old_logp, ref_logp) * mask  # (B, T)
        if self.algo.advantage_estimator == "gae":
            token_rewards = algos.outcome_to_token_rewards(rewards, mask)  # (B, T)
            if self.algo.kl_mode == "reward" and kl_tokens is not None:
                token_rewards = algos.kl_penalised_rewards(token_rewards, kl_tokens, self.kl_controller.beta)
            old_values = self.critic_values(batch).to(mask.device) * mask  # (B, T)
            advantages, returns = algos.gae_advantages(token_rewards, old_values, mask, self.algo.gamma, self.algo.gae_lambda)
            if self.algo.whiten_advantages:
                advantages = algos.masked_whiten(advantages, mask)
            metrics["critic/values_mean"] = algos.masked_mean(old_values, mask).item()
            return advantages, (returns, old_values), metrics
        if self.algo.kl_mode == "reward" and kl_tokens is not None:
            rewards = rewards - self.kl_controller.beta * kl_tokens.sum(-1)  # sequence KL folded into the reward
        estimator = algos.ADVANTAGE_ESTIMATORS[self.algo.advantage_estimator]
        advantages = estimator(rewards, self.config["group_size"], eps=self.algo.advantage_eps)  # (B,)
        return advantages, None, metrics

    # ------------------------------------------------------------ update
    def loss_mask(self, batch: RolloutBatch) -> torch.Tensor:
        mask = batch.completion_mask.to(self.device)  # (B, T)
        if self.algo.truncation == "mask":
            mask = algos.drop_truncated(mask, batch.truncated.to(self.device))
        return mask

    def update(self, batch: RolloutBatch, advantages, critic_targets, old_logp, ref_logp):
        """Optimiser steps over the batch; returns averaged stats and, when ``old_logp`` is None
        (one on-policy pass), the pre-update log-probs and entropy computed on the way."""
        aggregate = algos.LOSS_AGGREGATIONS[self.algo.loss_aggregation]
        constant = self.algo.effective_loss_constant(self.config["max_new_tokens"])
        size = batch.input_ids.shape[0]
        stats: dict[str, list[float]] = {}
        on_policy = None
        for _ in range(self.algo.num_epochs):
            order = torch.randperm(size) if self.algo.num_minibatches > 1 else torch.arange(size)
            for chunk in order.chunk(self.algo.num_minibatches):
                mini = slice_batch(batch, chunk)
                mask = self.loss_mask(mini)
                logp, entropy, values = self.policy_forward(mini, with_values=critic_targets is not None)
                if old_logp is None:  # single on-policy pass: the pre-update log-probs are these
                    on_policy = (logp.detach(), entropy.detach())
                mini_old = on_policy[0] if old_logp is None else old_logp[chunk]
                mini_adv = advantages[chunk].to(self.device)
                per_token, policy_stats = algos.policy_loss(
                    logp, mini_old, mini_adv, mask, clip_eps_low=self.algo.clip_eps_low,
                    clip_eps_high=self.algo.clip_eps_high, dual_clip_c=self.algo.dual_clip_c)  # (B, T)
                loss = aggregate(per_token, mask, constant=constant)
                if ref_logp is not None and self.algo.kl_mode == "loss":
                    kl = algos.KL_ESTIMATORS[self.algo.kl_estimator](logp, ref_logp[chunk])  # (B, T)
                    loss = loss + self.kl_controller.beta * aggregate(kl, mask, constant=constant)
                if self.algo.entropy_coef > 0:
                    loss = loss - self.algo.entropy_coef * aggregate(entropy, mask, constant=constant)
                if critic_targets is not None:
                    loss = loss + self.critic_loss(mini, chunk, values, critic_targets, mask, stats)
                self.optimizer.zero_grad(set_to_none=True)
                if self.critic_optimizer is not None:
                    self.critic_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable_parameters(), self.config["max_grad_norm"])
                self.optimizer.step()
                if self.critic_optimizer is not None:
                    torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.config["max_grad_norm"])
                    self.critic_optimizer.step()
                for key, value in {"loss": loss.item(), "grad_norm": float(grad_norm),
                                   "clip_frac": policy_stats["clip_frac"], "ratio_mean": policy_stats["ratio_mean"]}.items():
                    stats.setdefault(key, []).append(float(value))
        self.scheduler.step()
        return {key: sum(values) / len(values) for key, values in stats.items()}, on_policy

    def critic_loss(self, mini, chunk, values, critic_targets, mask, stats) -> torch.Tensor:
        returns, old_values = critic_targets
        if values is None:  # separate critic: its own forward
            ids, attention = mini.input_ids.to(self.device), mini.attention_mask.to(self.device)
            values = self.critic.values(ids, attention)[:, -mini.num_completion_tokens - 1:-1]  # (b, T)
        loss, value_stats = algos.value_loss(values, old_values[chunk], returns[chunk], mask, clip_eps=self.algo.value_clip_eps)
        stats.setdefault("critic/value_loss", []).append(loss.item())
        return self.algo.value_coef * loss

    # ------------------------------------------------------------ one step
    def step(self, step: int) -> dict:
        started = time.time()
        # sample
        batch, sample_stats = self.sample(step)
        sample_s = time.time() - started
        sampled = sample_stats.pop("all_scores")
        if batch is None:  # dynamic sampling found no group with reward spread: nothing to learn from
            log.warning("step %d: no group with reward spread after %d sampling rounds; update skipped",
                        step, sample_stats["sampling_rounds"])
            return {"step": step, "skipped": 1.0, **sampled_reward_metrics(sampled), "time/step_s": time.time() - started,
                    **{k: v for k, v in sample_stats.items() if k != "scores"}}
        # score
        scores = sample_stats.pop("scores")
        rewards, reward_metrics = self.rewards_of(batch, scores)  # (B,)
        mask = self.loss_mask(batch)  # (B, T)
        self.last_rollouts = [{"id": row["id"], "completion": c.text, "reward": r, "finish_reason": c.finish_reason}
                              for row, c, r in zip(batch.rows, batch.completions, rewards.tolist())]
        # old and reference log-probs (no grad); one on-policy pass gets the old ones from the update itself
        old_logp = entropy = None
        if not self.single_pass:
            with torch.no_grad():
                old_logp, entropy, _ = self.policy_forward(batch)  # (B, T)
        ref_logp = self.reference_logprobs(batch) if self.reference is not None else None
        # advantage
        advantages, critic_targets, adv_metrics = self.advantages(batch, rewards.to(self.device), mask, old_logp, ref_logp)
        # update
        update_started = time.time()
        update_stats, on_policy = self.update(batch, advantages, critic_targets, old_logp, ref_logp)
        if on_policy is not None:
            old_logp, entropy = on_policy
        # sync: the backend must sample from the updated weights next step
        self.backend.sync_weights(self.policy)
        metrics = self.step_metrics(step, batch, scores, rewards, old_logp, ref_logp, entropy, mask)
        self.kl_controller.update(metrics.get("kl", 0.0), len(batch.completions))
        metrics.update(reward_metrics)
        metrics.update(adv_metrics)
        metrics.update(update_stats)
        metrics.update(sample_stats)
        metrics["kl_coef"] = self.kl_controller.beta
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["time/sample_s"] = sample_s
        metrics["time/update_s"] = time.time() - update_started
        metrics["time/step_s"] = time.time() - started
        metrics["throughput/tokens_per_s"] = float(batch.completion_mask.sum()) / max(1e-9, metrics["time/step_s"])
        return metrics

    def step_metrics(self, step, batch, scores, rewards, old_logp, ref_logp, entropy, mask) -> dict:
        group = self.config["group_size"]
        lengths = batch.completion_mask.sum(-1)  # (B,)
        completion_mask = batch.completion_mask.to(self.device)
        parts = [p for s in scores for p in s.parts]
        names = sorted({name for part in parts for name in part})
        metrics = {"step": step, "reward/total": rewards.mean().item(), "reward/std": rewards.std(unbiased=False).item()}
        metrics.update({f"reward/{name}": sum(p.get(name, 0.0) for p in parts) / len(parts) for name in names})
        metrics["accuracy"] = sum(c for s in scores for c in s.correct) / len(parts)
        metrics["completions/mean_length"] = lengths.mean().item()
        metrics["completions/max_length"] = lengths.max().item()
        metrics["completions/clipped_ratio"] = batch.truncated.float().mean().item()
        if group > 1:  # with one sample per prompt (PPO presets) every group trivially has zero spread
            metrics["frac_reward_zero_std"] = (algos.group_reward_std(rewards, group) < 1e-6).float().mean().item()
        metrics["entropy"] = algos.masked_mean(entropy, completion_mask).item()
        if ref_logp is not None:
            metrics["kl"] = algos.masked_mean(algos.KL_ESTIMATORS[self.algo.kl_estimator](old_logp, ref_logp), completion_mask).item()
        # Stale-weights detector: the backend's log-probs against the trainer's, same tokens.
        metrics["rollout/logprob_abs_diff"] = algos.masked_mean((batch.rollout_logprobs.to(self.device) - old_logp).abs(), completion_mask).item()
        return metrics


def sampled_reward_metrics(scores: list) -> dict:
    """Reward and accuracy over everything sampled (kept or not), for steps without an update."""
    totals = [t for s in scores for t in s.totals]
    correct = [c for s in scores for c in s.correct]
    return {"reward/total": sum(totals) / max(1, len(totals)), "accuracy": sum(correct) / max(1, len(correct))}


def algos_critic(policy, algo: AlgorithmConfig, model_dir: str):
    from stages.core.critic import make_critic

    return make_critic(policy, algo.critic, base_model_dir=model_dir if algo.critic == "separate" else None)


def make_rollout_backend(name: str, policy, tokenizer, model_dir: str, config: dict, device: torch.device):
    if name == "hf":
        return make_backend("hf", model=policy, tokenizer=tokenizer, device=device, batch_size=config["rollout"]["batch_size"])
    from stages.core.modeling import resolve_model_path

    return make_backend("vllm", model_dir=resolve_model_path(model_dir), tokenizer=tokenizer,
                        gpu_memory_utilization=config["rollout"]["gpu_memory_utilization"],
                        enable_sleep_mode=config["rollout"]["enable_sleep_mode"], seed=config["seed"],
                        max_model_len=vllm_max_model_len(policy.config), dtype=str(policy.dtype).removeprefix("torch."))



# ---------------------------------------------------------------- checkpoints
def run_identity(config: dict, inputs: dict) -> str:
    """What a checkpoint must match to be resumed: the config and the start model and data."""
    model_dir = Path(inputs["model"])
    model_marker = model_dir / "meta.json" if (model_dir / "meta.json").exists() else model_dir
    settings = {k: v for k, v in config.items() if k != "_runtime"}
    return config_hash({"config": settings, "model": file_hash(model_marker), "train": file_hash(inputs["train"])})


def save_checkpoint(trainer: GRPOTrainer, scratch: Path, step: int, identity: str, keep: int) -> None:
    root = scratch / "checkpoints"
    with atomic_directory(root / f"step_{step:06d}") as tmp:
        trainer.policy.save_pretrained(tmp / "model")
        state = {"optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
        if trainer.critic is not None:
            trainer.critic.save(tmp / "critic")
            if trainer.critic_optimizer is not None:
                state["critic_optimizer"] = trainer.critic_optimizer.state_dict()
        if trainer.reference is not None:
            state["reference"] = trainer.reference.state_dict()
        torch.save(state, tmp / "trainer_state.pt")
        write_json_atomic(tmp / "progress.json", {"next_step": step + 1, "data_position": trainer.stream.position,
                                                  "kl_beta": trainer.kl_controller.beta, "identity": identity,
                                                  "guard_streaks": trainer.guards.streaks})
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(scratch: Path, identity: str) -> Path | None:
    """The newest complete checkpoint made for this identity; stale scratch is moved aside."""
    checkpoints = sorted((scratch / "checkpoints").glob("step_*"))
    if not checkpoints:
        return None
    progress = checkpoints[-1] / "progress.json"
    if not progress.exists() or read_json(progress).get("identity") != identity:
        stale = scratch / f"stale-{int(time.time())}"
        log.warning("checkpoints in %s were made with another config or start model; moved to %s", scratch, stale)
        stale.mkdir(parents=True)
        for path in [scratch / "checkpoints", scratch / "metrics.partial.jsonl"]:
            if path.exists():
                shutil.move(str(path), str(stale / path.name))
        return None
    return checkpoints[-1]


def restore(trainer: GRPOTrainer, checkpoint: Path) -> int:
    from safetensors.torch import load_file

    progress = read_json(checkpoint / "progress.json")
    weights = {}
    for shard in sorted((checkpoint / "model").glob("*.safetensors")):
        weights.update(load_file(shard, device=str(trainer.device)))
    missing, unexpected = trainer.policy.load_state_dict(weights, strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:  # lm_head is tied to the embeddings
        raise RuntimeError(f"checkpoint {checkpoint}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    if trainer.reference is not None:
        trainer.reference.load_state_dict(state["reference"])
    if trainer.critic is not None:
        restore_critic(trainer.critic, checkpoint / "critic")
        if trainer.critic_optimizer is not None:
            trainer.critic_optimizer.load_state_dict(state["critic_optimizer"])
    trainer.stream.position = progress["data_position"]
    trainer.kl_controller.beta = progress["kl_beta"]
    trainer.guards.streaks.update(progress.get("guard_streaks", {}))
    trainer.backend.sync_weights(trainer.policy)
    return progress["next_step"]


def restore_critic(critic, directory: Path) -> None:
    from stages.core.critic import ValueHead, value_head_path

    if critic.shares_policy_trunk:  # the trunk is the policy (restored above); only the head is new
        critic.model.load_head(value_head_path(directory))
    else:
        critic.model.load_state_dict(ValueHead.from_pretrained(directory).state_dict())


# ---------------------------------------------------------------- main
def train(trainer: GRPOTrainer, config: dict, inputs: dict, scratch: Path) -> int:
    """The loop; returns the number of steps this invocation trained."""
    from tqdm import tqdm

    identity = run_identity(config, inputs)
    checkpoint = latest_checkpoint(scratch, identity)
    start = restore(trainer, checkpoint) if checkpoint else 0
    if checkpoint:
        log.info("resumed from %s: continuing at step %d of %d", checkpoint.name, start, config["steps"])
    logger = MetricsLogger(scratch / "metrics.partial.jsonl", resume_from_step=start,
                           tensorboard_dir=scratch / "tensorboard" if config["logging"]["tensorboard"] else None,
                           wandb_project=config["logging"]["wandb_project"] if config["logging"]["wandb"] else None,
                           run_name=config["run"], config=config)
    trained = 0
    try:
        for step in tqdm(range(start, config["steps"]), desc=f"grpo {config['run']}", initial=start, total=config["steps"], mininterval=5):
            if trainer.algo.ref_refresh_steps and step and step % trainer.algo.ref_refresh_steps == 0 and trainer.reference is not None:
                trainer.reference.load_state_dict(trainer.policy.state_dict())
            metrics = trainer.step(step)
            trained += 1
            for warning in trainer.guards.check(step, metrics):
                log.warning(warning)
            logger.log(metrics)
            if step % config["logging"]["rollouts_every"] == 0:
                logger.log_rollouts(scratch / "rollouts", step, trainer.last_rollouts)
            if (step + 1) % config["checkpoint_every"] == 0 or step + 1 == config["steps"]:
                save_checkpoint(trainer, scratch, step, identity, config["keep_checkpoints"])
    finally:
        logger.close()
    return trained


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    set_cpu_threads(config.get("_runtime", {}).get("threads"))
    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    device = pick_device(config["device"])
    scratch = Path(outputs["scratch"])
    trainer = GRPOTrainer(config, inputs, device)
    try:
        trained = train(trainer, config, inputs, scratch)
    except GuardStop as stop:
        raise SystemExit(f"grpo {config['run']}: training guard stopped the run: {stop}") from None
    finally:
        trainer.backend.close()
    records = read_jsonl(scratch / "metrics.partial.jsonl")
    steps_logged = [r["step"] for r in records]
    if steps_logged != list(range(config["steps"])):
        raise RuntimeError(f"grpo {config['run']}: metrics cover steps {steps_logged[:3]}...{steps_logged[-3:]} "
                           f"but {config['steps']} steps were asked for; the scratch dir {scratch} is inconsistent")
    with atomic_directory(outputs["model"]) as out_dir:
        trainer.policy.save_pretrained(out_dir)
        trainer.tokenizer.save_pretrained(out_dir)
        write_json_atomic(out_dir / "meta.json", provenance(
            stage="grpo", config=config, inputs=inputs, started_at=started,
            extra={"rollout_backend": trainer.backend_name, "steps_trained_this_invocation": trained,
                   "final_metrics": records[-1] if records else None}))
    shutil.copyfile(scratch / "metrics.partial.jsonl", str(outputs["metrics"]) + ".tmp")
    Path(str(outputs["metrics"]) + ".tmp").replace(outputs["metrics"])
    log.info("grpo %s: %d steps (%d this invocation) in %.0f s", config["run"], config["steps"], trained, time.time() - started)


if __name__ == "__main__":
    run_stage(main, description=__doc__)
