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

import dataclasses
import functools
import logging
import random
import shutil
import time
from pathlib import Path

import torch

from pipeline.algorithm_config import AlgorithmConfig, GuardConfig
from pipeline.code_deps import code_hash
from pipeline.artifacts import atomic_directory, config_hash, file_hash, provenance, read_json, read_jsonl, write_json_atomic
from pipeline.metrics import MetricsLogger
from stages.core import algorithms as algos
from stages.core.distributed import (DistributedRun, gather_groups, group_seeds, rank_groups,
                                     run_stage_process, stage_ranks)
from stages.core.guards import GuardStop, TrainingGuards
from stages.core.microbatch import loss_normaliser, split_minibatch, trimmed_width
from stages.core.modeling import (chunked_head_logprobs, completion_hidden_states, completion_logprobs, load_causal_lm,
                                  load_tokenizer, pick_device, set_cpu_threads)
from stages.core.precision import MixedPrecision
from stages.core.memory_plan import check_stage_fits
from stages.core.reflection import reflection_metrics
from stages.core.prompting import encode_prompts
from stages.core.rollout import BackendRequest, Completion, SamplingSettings, create_backend, samples_from_trainer_model
from stages.core.scoring import prefetch_code_results, score_completions, verifier_provenance

log = logging.getLogger("r1zero.grpo")
SNAPSHOTS_PARTIAL = "snapshots.partial"  # scratch: weight snapshots of an unfinished run


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


def micro_batch(batch: RolloutBatch, rows: torch.Tensor) -> RolloutBatch:
    """The ``rows`` of ``batch``, trimmed to the columns they use: prompt padding that no row of
    theirs needs is cut from the left, completion padding from the right. Positions start at each
    row's first real token, so the trimmed rows compute exactly what the full ones would."""
    picked = rows.tolist()
    width = trimmed_width(batch.completion_mask[rows])  # completion columns used
    prompt_width = batch.input_ids.shape[1] - batch.num_completion_tokens
    prompt_used = int(batch.attention_mask[rows, :prompt_width].sum(-1).max()) if picked else 0
    columns = slice(prompt_width - max(1, prompt_used), prompt_width + width)
    return RolloutBatch([batch.rows[i] for i in picked], [batch.completions[i] for i in picked],
                        batch.input_ids[rows, columns], batch.attention_mask[rows, columns],
                        batch.completion_mask[rows, :width], batch.rollout_logprobs[rows, :width], batch.truncated[rows])


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
def check_distributed_support(config: dict, algo: AlgorithmConfig, run: DistributedRun) -> None:
    """Refuse, before any weight loads, what the DeepSpeed path does not do."""
    if algo.ref_refresh_steps and run.zero_stage == 3:
        raise ValueError("algorithm.ref_refresh_steps with distributed.zero_stage 3: refreshing a sharded reference "
                         "is not supported; use zero_stage 2 or no refresh")
    if config["prompts_per_step"] % run.world_size:
        raise ValueError(f"prompts_per_step: {config['prompts_per_step']} must be a multiple of the world size "
                         f"{run.world_size} (each rank generates and trains on the same number of groups)")


@dataclasses.dataclass
class StepTensors:
    """What the update reads, one row per completion of the batch (B, ...), on the device."""

    mask: torch.Tensor  # (B, T) loss mask: truncation handling and mismatch masking applied
    advantages: torch.Tensor  # (B,) or (B, T)
    old_logp: torch.Tensor | None  # (B, T); None: the update's own first forward provides them
    ref_logp: torch.Tensor | None  # (B, T)
    is_weights: torch.Tensor  # (B, T) rollout-mismatch weights on the policy loss (no gradient)
    returns: torch.Tensor | None = None  # (B, T) critic targets
    old_values: torch.Tensor | None = None  # (B, T) critic values at rollout time


class StatsMean:
    """Token-weighted means (and maxima) of per-micro-batch statistics."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.maxima: dict[str, float] = {}

    def add(self, values: dict[str, float], weight: float) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * weight
            self.weights[key] = self.weights.get(key, 0.0) + weight

    def add_max(self, key: str, value: float) -> None:
        self.maxima[key] = max(self.maxima.get(key, float("-inf")), float(value))

    def result(self) -> dict[str, float]:
        means = {key: self.sums[key] / self.weights[key] for key in self.sums if self.weights[key] > 0}
        return {**means, **self.maxima}


class GRPOTrainer:
    def __init__(self, config: dict, inputs: dict, device: torch.device, run: DistributedRun | None = None):
        self.config, self.device, self.run = config, device, run
        self.algo = AlgorithmConfig.model_validate(config["algorithm"])
        if run is not None:
            check_distributed_support(config, self.algo, run)
            if run.zero_stage == 3:
                # Every LM-head call and trunk pass gathers ZeRO-3 shards (a collective), so every rank
                # must make the same calls: one head chunk per micro-batch, no data-dependent
                # prompt-sharing passes. Micro-batch counts are equalised in micro_batches().
                self.config = config = {**config, "logprob_chunk_tokens": 2**62}
        self.share_prompts = run is None or run.zero_stage != 3
        self.guards = TrainingGuards(GuardConfig.model_validate(config["guards"]))
        self.weights_by_task = config["rewards"]
        self.rows = read_jsonl(inputs["train"])
        if not self.rows:
            raise ValueError(f"{inputs['train']}: no training rows")
        # Every named choice resolved once, here: the loop below never branches on a name.
        self.estimator = algos.ADVANTAGE_ESTIMATORS[self.algo.advantage_estimator]
        self.aggregate = algos.LOSS_AGGREGATIONS[self.algo.loss_aggregation]
        self.policy_loss = algos.POLICY_LOSSES[self.algo.policy_loss]
        self.kl_estimator = algos.KL_ESTIMATORS[self.algo.kl_estimator]
        self.kl_placement = algos.KL_PLACEMENTS[self.algo.kl_mode]
        self.truncation = algos.TRUNCATIONS[self.algo.truncation]
        self.correction = algos.ROLLOUT_CORRECTIONS[self.algo.rollout_correction]
        self.loss_constant = self.algo.effective_loss_constant(config["max_new_tokens"])
        # Precision: trained models keep float32 master weights and run their forward under
        # autocast; the frozen reference is loaded directly in the run's dtype.
        self.dtype = config.get("dtype", "float32")
        self.precision = MixedPrecision(self.dtype, device)
        self.tokenizer = load_tokenizer(inputs["model"])
        self.prompt_ids = encode_prompts(self.tokenizer, self.rows)
        self.policy = load_causal_lm(inputs["model"], device=device, dtype="float32",
                                     gradient_checkpointing=config.get("gradient_checkpointing", False))
        self.policy.train()  # dropout-free architectures: only makes gradient checkpointing act
        self.reference = self._frozen_reference(inputs["model"]) if self.algo.uses_reference else None
        self.critic = algos_critic(self.policy, self.algo, inputs["model"], config.get("gradient_checkpointing", False)) \
            if self.algo.uses_critic else None
        self.optimizer = torch.optim.AdamW(self._trainable_parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        self.critic_optimizer = self._make_critic_optimizer()
        warmup = max(1, config["warmup_steps"])
        # Under DeepSpeed the scheduler drives the client optimizer's param groups, which ZeRO's wrapper steps with.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.engine = self.critic_engine = None
        self.rollout_model = self.policy  # what the hf backend samples from
        if run is not None:
            self._start_engines(inputs["model"])
        self.kl_controller = algos.make_kl_controller(self.algo)
        # With one epoch of one minibatch and nothing needing old log-probs before the update,
        # the update's own forward gives them: one forward pass per step saved.
        self.single_pass = self.algo.old_logprobs_from_update
        self.stream = PromptStream(len(self.rows), config["seed"])
        self.sampling = SamplingSettings(num_samples=config["group_size"], max_new_tokens=config["max_new_tokens"],
                                         temperature=config["temperature"], top_p=config["top_p"],
                                         stop_strings=tuple(config["stop_strings"]))
        rollout = config["rollout"]
        self.backend = create_backend(rollout["backend"], BackendRequest(
            inputs["model"], self.tokenizer, device, policy=self.rollout_model, dtype=self.dtype, seed=config["seed"],
            batch_size=rollout["batch_size"], gpu_memory_utilization=rollout["gpu_memory_utilization"],
            enable_sleep_mode=rollout["enable_sleep_mode"]))
        self.backend_name = self.backend.name
        self.last_rollouts: list[dict] = []  # the latest step's completions, kept every logging.rollouts_every steps

    # ------------------------------------------------------------ setup helpers
    def _start_engines(self, model_dir: str) -> None:
        """DeepSpeed: the policy under a ZeRO engine; the reference sharded too under ZeRO-3; under
        ZeRO-3 the hf backend samples from a full replica refreshed module by module each step."""
        self.engine = self.run.trainable_engine(self.policy, self.optimizer, dtype=self.dtype,
                                                max_grad_norm=self.config["max_grad_norm"])
        self.policy = self.rollout_model = self.engine.module
        if self.critic is not None and self.critic.shares_policy_trunk:
            raise ValueError("distributed: a value-head critic is not supported under DeepSpeed (its head rides on the "
                             "policy engine); use algorithm.critic: separate, which trains under its own engine")
        if self.critic is not None:  # a separate critic (check_distributed_support): its own engine and optimizer
            self.critic_engine = self.run.trainable_engine(self.critic.model, self.critic_optimizer, dtype=self.dtype,
                                                           max_grad_norm=self.config["max_grad_norm"])
        if self.reference is not None and self.run.zero_stage == 3:
            self.reference, self.reference_engine = self.run.frozen_model(self.reference, dtype=self.dtype)
        if self.run.zero_stage == 3 and samples_from_trainer_model(self.config["rollout"]["backend"]):
            self.rollout_model = load_causal_lm(model_dir, device=self.device, dtype="float32")
            self.rollout_model.requires_grad_(False)

    def sync_rollout(self) -> None:
        """The backend must sample from the updated weights next step."""
        if self.run is None:
            self.backend.sync_weights(self.policy)
        elif self.rollout_model is not self.policy:  # ZeRO-3 + hf: refresh the replica layer by layer
            self.run.copy_weights_into(self.policy, self.rollout_model)
            self.backend.sync_weights(self.rollout_model)
        else:
            self.run.sync_backend(self.policy, self.backend)

    def _frozen_reference(self, model_dir: str):
        reference = load_causal_lm(model_dir, device=self.device, dtype=self.dtype)
        reference.eval()
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
        return reference

    @property
    def reference_is_frozen(self) -> bool:
        """True when the reference never changes during the run (no ``ref_refresh_steps``), so a
        checkpoint need not store it: the start model restores it."""
        return self.reference is not None and not self.algo.ref_refresh_steps

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
            sampled = self.generate_and_score(indices, settings)
            stats["groups_sampled"] += len(sampled)
            for index, completions, scored in sampled:
                rows = [self.rows[index]] * group
                all_scores.append(scored)
                # Filter on the rewards the advantages will see (after any overlong penalty).
                shaped = self.shaped_rewards(torch.tensor(scored.totals, dtype=torch.float),
                                             torch.tensor([len(c.token_ids) for c in completions]),
                                             torch.tensor([c.truncated for c in completions]))[0]
                if self.algo.dynamic_sampling and not algos.keep_groups_with_spread(shaped, group).item():
                    continue
                kept_rows += rows
                kept_prompts += [self.prompt_ids[index]] * group
                kept_completions += completions
                kept_scores.append(scored)
            enough = len(kept_scores) >= wanted
            if not self.algo.dynamic_sampling or enough or stats["sampling_rounds"] >= self.algo.max_sampling_rounds:
                break
        keep = min(len(kept_scores), wanted) if self.algo.dynamic_sampling else len(kept_scores)
        first = 0
        if self.run is not None:  # every rank holds every kept group; each trains on its share
            first, keep = rank_groups(keep, self.run.rank, self.run.world_size)
        stats["groups_kept"] = keep * (self.run.world_size if self.run is not None else 1)
        rows_kept = slice(first * group, (first + keep) * group)
        batch = build_batch(kept_rows[rows_kept], kept_prompts[rows_kept], kept_completions[rows_kept],
                            self.tokenizer.pad_token_id) if keep else None
        return batch, {"scores": kept_scores[first:first + keep], "all_scores": all_scores, **stats}

    def generate_and_score(self, indices: list[int], settings: SamplingSettings) -> list[tuple[int, list[Completion], object]]:
        """(prompt index, G completions, scores) for each prompt of ``indices``, in order.

        One process: one generate call. Under DeepSpeed each rank generates and scores a
        contiguous share of the groups, each group seeded by its position in the step (so 1 and
        N ranks draw the same completions), and the scored groups are gathered on every rank.
        """
        group = self.config["group_size"]
        if self.run is not None:
            first, count = rank_groups(len(indices), self.run.rank, self.run.world_size)
            mine = indices[first:first + count]
            groups = [g for seed, ids in group_seeds(settings, first, [self.prompt_ids[i] for i in mine], self.backend.name)
                      for g in self.backend.generate(ids, dataclasses.replace(settings, seed=seed))]
        else:
            mine, groups = indices, self.backend.generate([self.prompt_ids[i] for i in indices], settings)
        prefetch_code_results([c.text for group_ in groups for c in group_],
                              [self.rows[i] for i in mine for _ in range(group)])
        scored = [(index, completions, score_completions([c.text for c in completions], [self.rows[index]] * group,
                                                         self.weights_by_task))
                  for index, completions in zip(mine, groups)]
        return gather_groups(self.run, scored) if self.run is not None else scored

    # ------------------------------------------------------------ score
    def shaped_rewards(self, totals: torch.Tensor, lengths: torch.Tensor, truncated: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Verifier totals (B,) plus the truncation handling's reward penalty, if it has one."""
        penalty = self.truncation.reward_penalty(lengths, truncated, max_new_tokens=self.config["max_new_tokens"],
                                                 buffer_tokens=self.algo.overlong_buffer_tokens,
                                                 penalty_factor=self.algo.overlong_penalty_factor)  # (B,) or None
        if penalty is None:
            return totals, {}
        return totals + penalty, {"reward/overlong_penalty": penalty.mean().item()}

    def rewards_of(self, batch: RolloutBatch, scores: list) -> tuple[torch.Tensor, dict]:
        totals = torch.tensor([t for s in scores for t in s.totals], dtype=torch.float)  # (B,)
        return self.shaped_rewards(totals, batch.completion_mask.sum(-1).long(), batch.truncated)

    def loss_mask(self, batch: RolloutBatch) -> torch.Tensor:
        return self.truncation.loss_mask(batch.completion_mask.to(self.device), batch.truncated.to(self.device))  # (B, T)

    # ------------------------------------------------------------ micro-batches and forward passes
    def micro_batches(self, batch: RolloutBatch, rows: torch.Tensor) -> list[torch.Tensor]:
        """Pieces of ``rows`` (indices into ``batch``) that each fit one forward pass."""
        lengths = batch.attention_mask[rows].sum(-1).tolist()  # prompt + completion tokens per row
        pieces = split_minibatch(lengths, micro_batch_size=self.config.get("micro_batch_size"),
                                 max_tokens_per_micro_batch=self.config.get("max_tokens_per_micro_batch"))
        out = [rows[torch.tensor(piece, dtype=torch.long)] for piece in pieces]
        if self.run is None:
            return out
        # ZeRO gathers shards / reduces gradients in every pass: each rank runs as many passes as
        # the rank with the most; the extra ones repeat a piece (recomputing values it already
        # wrote, or contributing a zero-weighted loss).
        return out + out[-1:] * (self.run.max_int(len(out)) - len(out))

    def policy_forward(self, batch: RolloutBatch, *, with_values: bool = False, with_entropy: bool = True):
        """Float32 log-probs (b, t), entropy (b, t) or None and, for a value-head critic, values
        (b, t), computed under the run's autocast with the LM head applied in chunks. Rows that
        share a prompt (a group) run it through the trunk once (``share_prompts``)."""
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        width = batch.num_completion_tokens
        chunk = self.config.get("logprob_chunk_tokens", 4096)
        temperature = self.config["temperature"]
        with self.precision.autocast():
            if with_values and self.critic is not None and self.critic.shares_policy_trunk:
                hidden = completion_hidden_states(self.policy, ids, attention, width, share_prompts=self.share_prompts)  # (b, t, H): one trunk pass
                logp, entropy = chunked_head_logprobs(self.policy.get_output_embeddings(), hidden, ids[:, -width:],
                                                      temperature=temperature, with_entropy=with_entropy, chunk_tokens=chunk)
                return logp, entropy, self.critic.model.values_from_hidden(hidden)
            logp, entropy = completion_logprobs(self.policy, ids, attention, width, temperature=temperature,
                                                with_entropy=with_entropy, chunk_tokens=chunk, share_prompts=self.share_prompts)
        return logp, entropy, None

    @torch.no_grad()
    def _over_micro_batches(self, batch: RolloutBatch, forward) -> list[torch.Tensor | None]:
        """Run ``forward(micro_batch) -> tuple of (b, t) tensors or None`` over the whole batch
        in micro-batches; returns each output as one (B, T) tensor (None stays None)."""
        size, width = batch.completion_mask.shape
        outputs: list[torch.Tensor | None] | None = None
        for rows in self.micro_batches(batch, torch.arange(size)):
            piece = micro_batch(batch, rows)
            results = forward(piece)
            if outputs is None:
                outputs = [None if r is None else torch.zeros((size, width), device=self.device) for r in results]
            for out, result in zip(outputs, results):
                if out is not None:
                    out[rows.to(self.device), :result.shape[1]] = result.float()
        return outputs

    def old_logprobs(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log-probs and entropy of the policy before the update."""
        logp, entropy = self._over_micro_batches(batch, lambda piece: self.policy_forward(piece)[:2])
        return logp, entropy

    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        def forward(piece):
            ids, attention = piece.input_ids.to(self.device), piece.attention_mask.to(self.device)
            logp, _ = completion_logprobs(self.reference, ids, attention, piece.num_completion_tokens,
                                          temperature=self.config["temperature"],
                                          chunk_tokens=self.config.get("logprob_chunk_tokens", 4096), share_prompts=self.share_prompts)
            return (logp,)

        return self._over_micro_batches(batch, forward)[0]  # (B, T)

    def critic_values(self, batch: RolloutBatch) -> torch.Tensor:
        def forward(piece):
            ids, attention = piece.input_ids.to(self.device), piece.attention_mask.to(self.device)
            with self.precision.autocast():
                return (self.critic.completion_values(ids, attention, piece.num_completion_tokens),)

        return self._over_micro_batches(batch, forward)[0]  # (B, T)

    # ------------------------------------------------------------ advantage
    def prepare(self, batch: RolloutBatch, rewards: torch.Tensor) -> tuple[StepTensors, torch.Tensor | None, dict]:
        """Old and reference log-probs, advantages and mismatch weights for one rollout batch.

        Returns the update's inputs, the pre-update entropy (None in single-pass mode: the update
        computes it) and metrics."""
        mask = self.loss_mask(batch)  # (B, T)
        old_logp = entropy = None
        if not self.single_pass:
            old_logp, entropy = self.old_logprobs(batch)  # (B, T)
        ref_logp = self.reference_logprobs(batch) if self.reference is not None else None
        kl_penalty = self.kl_placement.reward_penalty(old_logp, ref_logp, mask, self.kl_estimator, self.kl_controller.beta) \
            if ref_logp is not None else None  # (B, T) beta * KL_t, only when the KL sits in the reward
        values = self.critic_values(batch) * mask if self.critic is not None else None  # (B, T)
        context = algos.AdvantageContext(
            rewards=rewards.to(self.device), mask=mask, group_size=self.config["group_size"], eps=self.algo.advantage_eps,
            kl_penalty=kl_penalty, old_logp=old_logp, ref_logp=ref_logp, values=values, gamma=self.algo.gamma,
            lam=self.algo.gae_lambda, whiten=self.algo.whiten_advantages)
        result = self.estimator(context)
        metrics = {} if values is None else {"critic/values_mean": algos.masked_mean(values, mask).item()}
        weights, keep, metrics["rollout/frac_corrected"] = self.mismatch_correction(batch, old_logp)
        tensors = StepTensors(mask=mask * keep, advantages=result.advantages, old_logp=old_logp, ref_logp=ref_logp,
                              is_weights=weights, returns=result.returns, old_values=values)
        return tensors, entropy, metrics

    def mismatch_correction(self, batch: RolloutBatch, old_logp: torch.Tensor | None):
        """(weights (B, T), keep (B, T), fraction changed) between the trainer's old log-probs and
        the backend's. Without old log-probs before the update (single pass: the correction is
        then 'none' by construction) the weights are 1."""
        ones = torch.ones(batch.completion_mask.shape, device=self.device)
        if old_logp is None:
            return ones, ones, 0.0
        correction = self.correction(old_logp, batch.rollout_logprobs.to(self.device), batch.completion_mask.to(self.device),
                                     cap=self.algo.rollout_is_cap, low=self.algo.rollout_ratio_low,
                                     high=self.algo.rollout_ratio_high)
        return correction.weights, correction.keep, correction.frac_corrected

    # ------------------------------------------------------------ update
    def update(self, batch: RolloutBatch, tensors: StepTensors):
        """Optimiser steps over the batch; returns averaged stats and, in single-pass mode, the
        pre-update log-probs and entropy computed on the way."""
        size = batch.input_ids.shape[0]
        stats = StatsMean()
        on_policy = None
        if tensors.old_logp is None:
            on_policy = (torch.zeros(batch.completion_mask.shape, device=self.device),
                         torch.zeros(batch.completion_mask.shape, device=self.device))
        for _ in range(self.algo.num_epochs):
            order = torch.randperm(size) if self.algo.num_minibatches > 1 else torch.arange(size)
            for chunk in order.chunk(self.algo.num_minibatches):
                if self.engine is not None:
                    for engine in filter(None, (self.engine, self.critic_engine)):
                        engine.zero_grad()
                    minibatch_stats = self.accumulate_gradients(batch, chunk, tensors, on_policy)
                    for engine in filter(None, (self.engine, self.critic_engine)):
                        engine.step()  # reduces the gradients, clips them to max_grad_norm, steps
                    stats.add({**minibatch_stats.pop("mean"), "grad_norm": self.run.grad_norm(self.engine)}, 1.0)
                    stats.add_max("ratio_max", minibatch_stats["ratio_max"])
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                if self.critic_optimizer is not None:
                    self.critic_optimizer.zero_grad(set_to_none=True)
                minibatch_stats = self.accumulate_gradients(batch, chunk, tensors, on_policy)
                grad_norm = self.precision.step(self.optimizer, self._trainable_parameters(), self.config["max_grad_norm"])
                if self.critic_optimizer is not None:
                    self.precision.step(self.critic_optimizer, self.critic.parameters(), self.config["max_grad_norm"])
                stats.add({**minibatch_stats.pop("mean"), "grad_norm": grad_norm}, 1.0)
                stats.add_max("ratio_max", minibatch_stats["ratio_max"])
        self.scheduler.step()
        return stats.result(), on_policy

    def accumulate_gradients(self, batch: RolloutBatch, rows: torch.Tensor, tensors: StepTensors, on_policy=None) -> dict:
        """Backward of one minibatch's loss (``rows`` of the batch), micro-batch by micro-batch.

        Each micro-batch divides its sums by the minibatch's normaliser, so the accumulated
        gradient is the gradient of the whole minibatch's loss. Under DeepSpeed the normaliser is
        the global minibatch's (summed over ranks) and each loss is multiplied by the world size,
        since ZeRO averages gradients over ranks: the update is the one-process update of the
        global batch, and each rank's ``loss`` is its share of the global loss."""
        device_rows = rows.to(self.device)
        normaliser = loss_normaliser(self.algo.loss_aggregation, tensors.mask[device_rows])
        value_normaliser = loss_normaliser("token_mean", tensors.mask[device_rows])  # the value loss is a token mean
        pieces = self.micro_batches(batch, rows)
        num_real, scale = len(pieces), 1.0
        if self.run is not None:
            normaliser = self.run.sum_float(normaliser)
            value_normaliser = self.run.sum_float(value_normaliser)
            num_real = len(dict.fromkeys(id(piece) for piece in pieces))  # the padding repeats the last piece
            scale = float(self.run.world_size)
        stats = StatsMean()
        total_loss, ratio_max = 0.0, 0.0
        for number, piece_rows in enumerate(pieces):
            for engine in filter(None, (self.engine, self.critic_engine)):
                self.run.start_micro_step(engine)
            loss, piece_stats, weight = self._micro_batch_loss(batch, piece_rows, tensors, on_policy, normaliser,
                                                               value_normaliser)
            if number >= num_real:  # a padding pass: the same collectives, no gradient
                self._engines_backward(loss, 0.0)
                continue
            if self.engine is not None:
                self._engines_backward(loss, scale)
            else:
                self.precision.backward(loss)
            total_loss += loss.item()
            ratio_max = max(ratio_max, piece_stats.pop("ratio_max"))
            stats.add(piece_stats, weight)
        return {"mean": {**stats.result(), "loss": total_loss}, "ratio_max": ratio_max}

    def _engines_backward(self, loss: torch.Tensor, scale: float) -> None:
        """DeepSpeed: the policy loss through the policy engine and a separate critic's value loss
        (set aside by ``_micro_batch_loss``) through its own engine, each with its own reduction."""
        self.engine.backward(loss * scale)
        if self.critic_engine is not None:
            self.critic_engine.backward(self.pending_critic_loss * scale)
            self.pending_critic_loss = None

    def _micro_batch_loss(self, batch, rows, tensors: StepTensors, on_policy, normaliser: float, value_normaliser: float):
        piece = micro_batch(batch, rows)
        width = piece.num_completion_tokens
        index = rows.to(self.device)
        mask = tensors.mask[index, :width]  # (b, t)
        with_values = self.critic is not None
        logp, entropy, values = self.policy_forward(piece, with_values=with_values,
                                                    with_entropy=self.algo.entropy_coef > 0 or on_policy is not None)
        if on_policy is not None:  # single on-policy pass: the pre-update log-probs are these
            on_policy[0][index, :width] = logp.detach()
            on_policy[1][index, :width] = entropy.detach()
        old_logp = logp.detach() if tensors.old_logp is None else tensors.old_logp[index, :width]
        advantages = tensors.advantages[index]
        advantages = advantages[:, :width] if advantages.dim() == 2 else advantages
        per_token, policy_stats = self.policy_loss(logp, old_logp, advantages, mask, clip_eps_low=self.algo.clip_eps_low,
                                                   clip_eps_high=self.algo.clip_eps_high, dual_clip_c=self.algo.dual_clip_c)
        per_token = per_token * tensors.is_weights[index, :width]  # (b, t) rollout-mismatch correction
        aggregate = functools.partial(self.aggregate, mask=mask, constant=self.loss_constant, normaliser=normaliser)
        loss = aggregate(per_token)
        kl = self.kl_placement.loss_term(logp, tensors.ref_logp[index, :width], self.kl_estimator) \
            if tensors.ref_logp is not None else None  # (b, t), only when the KL sits in the loss
        if kl is not None:
            loss = loss + self.kl_controller.beta * aggregate(kl)
        if self.algo.entropy_coef > 0:
            loss = loss - self.algo.entropy_coef * aggregate(entropy)
        stats = {key: policy_stats[key] for key in ("clip_frac", "ratio_mean", "approx_kl", "ratio_max")}
        if with_values:
            critic_term = self.critic_loss(piece, values, tensors, index, width, mask, value_normaliser, stats)
            if self.critic_engine is not None:  # backed up through its own engine (_engines_backward)
                self.pending_critic_loss = critic_term
            else:
                loss = loss + critic_term
        return loss, stats, float(mask.sum())

    def critic_loss(self, piece, values, tensors: StepTensors, index, width, mask, normaliser, stats) -> torch.Tensor:
        if values is None:  # separate critic: its own forward
            ids, attention = piece.input_ids.to(self.device), piece.attention_mask.to(self.device)
            with self.precision.autocast():
                values = self.critic.completion_values(ids, attention, width)  # (b, t)
        loss, _ = algos.value_loss(values.float(), tensors.old_values[index, :width], tensors.returns[index, :width], mask,
                                   clip_eps=self.algo.value_clip_eps, normaliser=normaliser)
        stats["critic/value_loss"] = loss.item() * normaliser / max(1.0, float(mask.sum()))  # this piece's own mean
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
        self.last_rollouts = [{"id": row["id"], "completion": c.text, "reward": r, "finish_reason": c.finish_reason}
                              for row, c, r in zip(batch.rows, batch.completions, rewards.tolist())]
        if self.run is not None:  # rank 0 archives every rank's completions
            self.last_rollouts = gather_groups(self.run, self.last_rollouts)
        # advantage (old and reference log-probs first, unless the update's pass provides them)
        tensors, entropy, adv_metrics = self.prepare(batch, rewards)
        # update
        update_started = time.time()
        update_stats, on_policy = self.update(batch, tensors)
        old_logp = tensors.old_logp
        if on_policy is not None:
            old_logp, entropy = on_policy
        # sync: the backend must sample from the updated weights next step
        self.sync_rollout()
        metrics = self.step_metrics(step, batch, scores, rewards, old_logp, tensors.ref_logp, entropy)
        metrics.update(reward_metrics)
        metrics.update(adv_metrics)
        metrics.update(update_stats)
        metrics.update(sample_stats)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["time/sample_s"] = sample_s
        metrics["time/update_s"] = time.time() - update_started
        metrics["time/step_s"] = time.time() - started
        metrics["throughput/tokens_per_s"] = float(batch.completion_mask.sum()) / max(1e-9, metrics["time/step_s"])
        if self.run is not None:  # the global batch's metrics, the same on every rank
            metrics = self.run.reduce_metrics(metrics, num_completions=len(batch.completions),
                                              num_tokens=float(batch.completion_mask.sum()))
            metrics["reward/std"] = self.run.global_std(rewards.tolist())
        # Global batch size: every rank's controller sees the same reduced KL and stays in step.
        batch_size = len(batch.completions) * (self.run.world_size if self.run is not None else 1)
        self.kl_controller.update(metrics.get("kl_per_seq", 0.0), batch_size)
        metrics["kl_coef"] = self.kl_controller.beta
        return metrics

    def step_metrics(self, step, batch, scores, rewards, old_logp, ref_logp, entropy) -> dict:
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
        # The "aha" signal: how many completions re-check (the same marker list evaluation uses).
        metrics.update(reflection_metrics([c.text for c in batch.completions], [c for s in scores for c in s.correct],
                                          batch.truncated.tolist()))
        if group > 1:  # with one sample per prompt (PPO presets) every group trivially has zero spread
            metrics["frac_reward_zero_std"] = (algos.group_reward_std(rewards, group) < 1e-6).float().mean().item()
        metrics["entropy"] = algos.masked_mean(entropy, completion_mask).item()
        if ref_logp is not None:
            kl_tokens = self.kl_estimator(old_logp, ref_logp)  # (B, T)
            metrics["kl"] = algos.masked_mean(kl_tokens, completion_mask).item()  # per token
            metrics["kl_per_seq"] = algos.kl_per_sequence(kl_tokens, completion_mask)  # the adaptive controller's unit
        # Stale-weights detector: the backend's log-probs against the trainer's, same tokens.
        rollout_logp = batch.rollout_logprobs.to(self.device)
        metrics["rollout/logprob_abs_diff"] = algos.masked_mean((rollout_logp - old_logp).abs(), completion_mask).item()
        metrics.update(algos.rollout_ratio_stats(old_logp, rollout_logp, completion_mask, cap=self.algo.rollout_is_cap,
                                                 low=self.algo.rollout_ratio_low, high=self.algo.rollout_ratio_high))
        return metrics


def sampled_reward_metrics(scores: list) -> dict:
    """Reward and accuracy over everything sampled (kept or not), for steps without an update."""
    totals = [t for s in scores for t in s.totals]
    correct = [c for s in scores for c in s.correct]
    return {"reward/total": sum(totals) / max(1, len(totals)), "accuracy": sum(correct) / max(1, len(correct))}


def algos_critic(policy, algo: AlgorithmConfig, model_dir: str, gradient_checkpointing: bool = False):
    from stages.core.critic import make_critic

    # A value head ignores base_model_dir (its trunk is the policy); a separate critic starts from it.
    return make_critic(policy, algo.critic, base_model_dir=model_dir, gradient_checkpointing=gradient_checkpointing)


# ---------------------------------------------------------------- checkpoints
def run_identity(config: dict, inputs: dict) -> str:
    """What a checkpoint must match to be resumed: config, start model, data, and code.

    The code is this stage and every project module it imports: a checkpoint written by other
    code is another experiment, and resuming it would silently mix two programs in one run.
    """
    model_dir = Path(inputs["model"])
    model_marker = model_dir / "meta.json" if (model_dir / "meta.json").exists() else model_dir
    # The distributed block is left out: a checkpoint of another layout is refused by name
    # (check_layout) instead of being silently moved aside as another experiment.
    settings = {k: v for k, v in config.items() if k not in ("_runtime", "distributed")}
    return config_hash({"config": settings, "model": file_hash(model_marker), "train": file_hash(inputs["train"]),
                        "code": code_hash("stages.grpo")})


def save_checkpoint(trainer: GRPOTrainer, scratch: Path, step: int, identity: str, keep: int) -> None:
    if trainer.run is not None:
        save_checkpoint_ranked(trainer, scratch, step, identity, keep)
        return
    root = scratch / "checkpoints"
    with atomic_directory(root / f"step_{step:06d}") as tmp:
        trainer.policy.save_pretrained(tmp / "model")
        state = {"optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
        if trainer.critic is not None:
            trainer.critic.save(tmp / "critic")
            if trainer.critic_optimizer is not None:
                state["critic_optimizer"] = trainer.critic_optimizer.state_dict()
        if trainer.reference is not None and trainer.algo.ref_refresh_steps:
            # Only a refreshed reference differs from the start model, which a resume reloads anyway.
            state["reference"] = trainer.reference.state_dict()
        torch.save(state, tmp / "trainer_state.pt")
        write_json_atomic(tmp / "progress.json", {"next_step": step + 1, "data_position": trainer.stream.position,
                                                  "kl_beta": trainer.kl_controller.beta, "identity": identity,
                                                  "guard_streaks": trainer.guards.streaks})
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_layout(run: DistributedRun | None) -> dict:
    """How a checkpoint's model and optimizer are stored: one process, or DeepSpeed ranks x ZeRO stage.

    >>> checkpoint_layout(None)
    {'deepspeed': False, 'world_size': 1, 'zero_stage': 0}
    """
    if run is None:
        return {"deepspeed": False, "world_size": 1, "zero_stage": 0}
    return {"deepspeed": True, "world_size": run.world_size, "zero_stage": run.zero_stage}


def save_checkpoint_ranked(trainer: GRPOTrainer, scratch: Path, step: int, identity: str, keep: int) -> None:
    """A DeepSpeed checkpoint: every rank writes its ZeRO partition and its RNG state into one
    directory, rank 0 the shared files; the directory appears under its final name (a rename by
    rank 0 after all ranks wrote) only when complete."""
    run = trainer.run
    root = scratch / "checkpoints"
    final, tmp = root / f"step_{step:06d}", root / f".partial-step_{step:06d}"
    if run.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    run.barrier()
    trainer.engine.save_checkpoint(str(tmp / "engine"), tag="state", save_latest=False)
    if trainer.critic_engine is not None:
        trainer.critic_engine.save_checkpoint(str(tmp / "critic_engine"), tag="state", save_latest=False)
    torch.save({"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}, tmp / f"rng_rank{run.rank:05d}.pt")
    if run.is_main:
        state = {"scheduler": trainer.scheduler.state_dict()}
        if trainer.reference is not None and trainer.algo.ref_refresh_steps:
            state["reference"] = trainer.reference.state_dict()
        torch.save(state, tmp / "trainer_state.pt")
        write_json_atomic(tmp / "progress.json", {"next_step": step + 1, "data_position": trainer.stream.position,
                                                  "kl_beta": trainer.kl_controller.beta, "identity": identity,
                                                  "guard_streaks": trainer.guards.streaks,
                                                  "layout": checkpoint_layout(run)})
    run.barrier()
    if run.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    run.barrier()


def check_layout(checkpoint: Path, progress: dict, run: DistributedRun | None) -> None:
    """A checkpoint resumes only under the layout that wrote it: ZeRO partitions and per-rank RNG
    states are per rank, so another world size (or ZeRO stage, or one process) is refused."""
    written = progress.get("layout", checkpoint_layout(None))
    current = checkpoint_layout(run)
    if written != current:
        raise RuntimeError(
            f"checkpoint {checkpoint} was written by {_describe_layout(written)}; this run is {_describe_layout(current)}. "
            f"Resume it with the distributed block it was written with, or delete {checkpoint.parent} to start over")


def _describe_layout(layout: dict) -> str:
    if not layout["deepspeed"]:
        return "one process (no distributed block)"
    return f"{layout['world_size']} rank(s) under ZeRO-{layout['zero_stage']}"


def latest_checkpoint(scratch: Path, identity: str) -> Path | None:
    """The newest complete checkpoint made for this identity; stale scratch is moved aside."""
    checkpoints = sorted((scratch / "checkpoints").glob("step_*"))
    if not checkpoints:
        return None
    progress = checkpoints[-1] / "progress.json"
    if not progress.exists() or read_json(progress).get("identity") != identity:
        stale = scratch / f"stale-{int(time.time())}"
        log.warning("checkpoints in %s were made with another config, start model or code; moved to %s", scratch, stale)
        stale.mkdir(parents=True)
        for path in [scratch / "checkpoints", scratch / "metrics.partial.jsonl"]:
            if path.exists():
                shutil.move(str(path), str(stale / path.name))
        return None
    return checkpoints[-1]


def clear_partial_outputs(scratch: Path, resume_step: int) -> None:
    """Remove what a previous attempt wrote for steps this one will train again.

    A fresh start (``resume_step`` 0) drops all rollouts, TensorBoard events and weight
    snapshots; a resume keeps those of the steps before the checkpoint.
    """
    if resume_step == 0:
        for name in ["rollouts", "tensorboard", SNAPSHOTS_PARTIAL]:
            shutil.rmtree(scratch / name, ignore_errors=True)
        return
    for directory in [scratch / "rollouts", scratch / SNAPSHOTS_PARTIAL]:
        for path in directory.glob("step_*"):
            if int(path.name.split("_")[1].split(".")[0]) > resume_step:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def save_policy(trainer: GRPOTrainer, out_dir: Path) -> None:
    """The policy as an HF directory. Under DeepSpeed every rank calls this (the weights are
    gathered module by module) and only rank 0 writes; ``from_pretrained`` loads the result."""
    if trainer.run is None:
        trainer.policy.save_pretrained(out_dir)
        return
    dtype = torch.float32 if trainer.dtype in ("float32", "auto") else getattr(torch, trainer.dtype)
    state = trainer.run.consolidated_state_dict(trainer.policy, dtype=dtype)
    if trainer.run.is_main:
        trainer.policy.config.dtype = dtype
        trainer.policy.save_pretrained(out_dir, state_dict=state)


def publish_snapshot(trainer: GRPOTrainer, scratch: Path, steps_done: int) -> None:
    """The policy after ``steps_done`` updates, as an HF directory for evaluation over training."""
    if trainer.run is not None and not trainer.run.is_main:
        save_policy(trainer, scratch)  # takes part in the gathers; writes nothing
        return
    with atomic_directory(scratch / SNAPSHOTS_PARTIAL / f"step_{steps_done:06d}") as out_dir:
        save_policy(trainer, out_dir)
        trainer.tokenizer.save_pretrained(out_dir)
        write_json_atomic(out_dir / "meta.json", {"stage": "grpo", "run": trainer.config["run"], "step": steps_done})


def finish_scratch(scratch: Path) -> None:
    """After the outputs are published, a finished job's checkpoints must never be resumed.

    Without this a forced rerun (``--forcerun grpo``) would find the final checkpoint of the
    same identity, train zero steps and republish the old weights as new.
    """
    for name in ["checkpoints", "metrics.partial.jsonl"]:
        path = scratch / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def restore(trainer: GRPOTrainer, checkpoint: Path) -> int:
    from safetensors.torch import load_file

    progress = read_json(checkpoint / "progress.json")
    check_layout(checkpoint, progress, trainer.run)
    if trainer.run is not None:
        return restore_ranked(trainer, checkpoint, progress)
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
    if trainer.reference is not None and "reference" in state:
        trainer.reference.load_state_dict(state["reference"])
    if trainer.critic is not None:
        restore_critic(trainer.critic, checkpoint / "critic")
        if trainer.critic_optimizer is not None:
            trainer.critic_optimizer.load_state_dict(state["critic_optimizer"])
    trainer.stream.position = progress["data_position"]
    trainer.kl_controller.beta = progress["kl_beta"]
    trainer.guards.streaks.update(progress.get("guard_streaks", {}))
    trainer.sync_rollout()  # one process: the backend syncs the policy, as before
    return progress["next_step"]


def restore_ranked(trainer: GRPOTrainer, checkpoint: Path, progress: dict) -> int:
    """Every rank loads its ZeRO partition (model and optimizer) and its own RNG state."""
    run = trainer.run
    trainer.engine.load_checkpoint(str(checkpoint / "engine"), tag="state", load_optimizer_states=True,
                                   load_lr_scheduler_states=False)
    if trainer.critic_engine is not None:
        trainer.critic_engine.load_checkpoint(str(checkpoint / "critic_engine"), tag="state", load_optimizer_states=True,
                                              load_lr_scheduler_states=False)
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.reference is not None and "reference" in state:
        trainer.reference.load_state_dict(state["reference"])
    rng = torch.load(checkpoint / f"rng_rank{run.rank:05d}.pt", weights_only=False)
    torch.set_rng_state(rng["torch_rng"])
    random.setstate(rng["python_rng"])
    trainer.stream.position = progress["data_position"]
    trainer.kl_controller.beta = progress["kl_beta"]
    trainer.guards.streaks.update(progress.get("guard_streaks", {}))
    trainer.sync_rollout()
    return progress["next_step"]


def restore_critic(critic, directory: Path) -> None:
    from stages.core.critic import ValueHead, value_head_path

    if critic.shares_policy_trunk:  # the trunk is the policy (restored above); only the head is new
        critic.model.load_head(value_head_path(directory))
    else:
        critic.model.load_state_dict(ValueHead.from_pretrained(directory).state_dict())


# ---------------------------------------------------------------- main
def publish_snapshots(scratch: Path, destination: str | None) -> None:
    """Move the weight snapshots of this run into the declared output directory (empty if none)."""
    if destination is None:
        return
    partial = scratch / SNAPSHOTS_PARTIAL
    with atomic_directory(destination) as out_dir:
        for snapshot in sorted(partial.glob("step_*")):
            shutil.move(str(snapshot), str(out_dir / snapshot.name))
    shutil.rmtree(partial, ignore_errors=True)


def progress_fields(metrics: dict) -> dict:
    """What the progress bar shows after each step: reward, accuracy, KL, mean length."""
    fields = {"reward": metrics.get("reward/total"), "acc": metrics.get("accuracy"), "kl": metrics.get("kl"),
              "len": metrics.get("completions/mean_length")}
    return {name: f"{value:.3g}" for name, value in fields.items() if isinstance(value, (int, float))}


def train(trainer: GRPOTrainer, config: dict, inputs: dict, scratch: Path) -> int:
    """The loop; returns the number of steps this invocation trained."""
    from tqdm import tqdm

    identity = run_identity(config, inputs)
    main_rank = trainer.run is None or trainer.run.is_main
    checkpoint = latest_checkpoint(scratch, identity) if main_rank else None
    if trainer.run is not None:  # rank 0 looked (and moved stale scratch aside); every rank resumes from its answer
        checkpoint = trainer.run.broadcast_object(checkpoint)
    start = restore(trainer, checkpoint) if checkpoint else 0
    if main_rank:
        clear_partial_outputs(scratch, start)
    if checkpoint:
        log.info("resumed from %s: continuing at step %d of %d", checkpoint.name, start, config["steps"])
    else:
        log.info("no checkpoint of this config, start model, data and code: training from step 0")
    # Only rank 0 writes metrics, rollouts and snapshots; the others log nothing.
    logger = MetricsLogger(scratch / "metrics.partial.jsonl", resume_from_step=start,
                           tensorboard_dir=scratch / "tensorboard" if config["logging"]["tensorboard"] else None,
                           wandb_project=config["logging"]["wandb_project"] if config["logging"]["wandb"] else None,
                           run_name=config["run"], config=config) if main_rank else None
    trained = 0
    try:
        progress = tqdm(range(start, config["steps"]), desc=f"grpo {config['run']}", initial=start, total=config["steps"],
                        mininterval=5)
        for step in progress:
            if trainer.algo.ref_refresh_steps and step and step % trainer.algo.ref_refresh_steps == 0 and trainer.reference is not None:
                trainer.reference.load_state_dict(trainer.policy.state_dict())
            metrics = trainer.step(step)
            trained += 1
            for warning in trainer.guards.check(step, metrics):
                log.warning(warning)
            if logger is not None:
                logger.log(metrics)
            progress.set_postfix(progress_fields(metrics), refresh=False)
            if config["eval_every"] and (step + 1) % config["eval_every"] == 0:
                publish_snapshot(trainer, scratch, step + 1)
            if step % config["logging"]["rollouts_every"] == 0 and logger is not None:
                logger.log_rollouts(scratch / "rollouts", step, trainer.last_rollouts)
            if (step + 1) % config["checkpoint_every"] == 0 or step + 1 == config["steps"]:
                save_checkpoint(trainer, scratch, step, identity, config["keep_checkpoints"])
    finally:
        if logger is not None:
            logger.close()
    return trained


def main(config: dict, inputs: dict, outputs: dict) -> None:
    started = time.time()
    set_cpu_threads(config.get("_runtime", {}).get("threads"))
    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    device = pick_device(config["device"])
    # A distributed block: this process is one rank of a DeepSpeed run (None: the one-process path).
    with stage_ranks(config, device) as run:
        train_and_publish(config, inputs, outputs, run.device if run else device, run, started)


def train_and_publish(config: dict, inputs: dict, outputs: dict, device, run: DistributedRun | None, started: float) -> None:
    # Does it fit? Decided from config.json alone, before any weights load (stages/core/memory_plan.py).
    check_stage_fits("grpo", config, inputs["model"], device)
    scratch = Path(outputs["scratch"])
    trainer = GRPOTrainer(config, inputs, device, run)
    try:
        trained = train(trainer, config, inputs, scratch)
    except GuardStop as stop:
        raise SystemExit(f"grpo {config['run']}: training guard stopped the run: {stop}") from None
    finally:
        if run is None:
            trainer.backend.close()
    if run is None:
        publish_outputs(trainer, config, inputs, outputs, scratch, trained, started)
        return
    # A colocated vLLM engine shares the rank's process: closing it tears down the default
    # process group, which the gathers of the publish still need. Close it after them.
    try:
        if run.is_main:
            publish_outputs(trainer, config, inputs, outputs, scratch, trained, started)
        else:
            save_policy(trainer, Path(outputs["model"]))  # takes part in the gathers; rank 0 writes
    finally:
        trainer.backend.close()


def publish_outputs(trainer: GRPOTrainer, config: dict, inputs: dict, outputs: dict, scratch: Path, trained: int,
                    started: float) -> None:
    records = read_jsonl(scratch / "metrics.partial.jsonl")
    steps_logged = [r["step"] for r in records]
    if steps_logged != list(range(config["steps"])):
        raise RuntimeError(f"grpo {config['run']}: metrics cover steps {steps_logged[:3]}...{steps_logged[-3:]} "
                           f"but {config['steps']} steps were asked for; the scratch dir {scratch} is inconsistent")
    with atomic_directory(outputs["model"]) as out_dir:
        save_policy(trainer, out_dir)
        trainer.tokenizer.save_pretrained(out_dir)
        write_json_atomic(out_dir / "meta.json", provenance(
            stage="grpo", config=config, inputs=inputs, started_at=started,
            extra={"rollout_backend": trainer.backend_name, "steps_trained_this_invocation": trained,
                   "layout": checkpoint_layout(trainer.run),
                   "final_metrics": records[-1] if records else None, **verifier_provenance(config["rewards"])}))
    shutil.copyfile(scratch / "metrics.partial.jsonl", str(outputs["metrics"]) + ".tmp")
    Path(str(outputs["metrics"]) + ".tmp").replace(outputs["metrics"])
    publish_snapshots(scratch, outputs.get("snapshots"))
    finish_scratch(scratch)
    log.info("grpo %s: %d steps (%d this invocation) in %.0f s", config["run"], config["steps"], trained, time.time() - started)


if __name__ == "__main__":
    run_stage_process(main, description=__doc__)
