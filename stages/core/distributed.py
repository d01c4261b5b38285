"""DeepSpeed ZeRO glue for the training stages: process group, engines, collectives, consolidation.

A stage whose config carries a ``distributed`` block that asks for DeepSpeed (world size > 1 or
a ZeRO stage > 0; see ``stages.core.memory_plan.Distributed``) calls ``start_distributed`` once.
Without the block it gets ``None`` back and runs exactly the single-process path it always had.

What lives here, so that stages/grpo.py and stages/sft.py change little:

- ``start_distributed``: reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), refuses a
  launch that does not match the block, initialises the process group (gloo on CPU with
  ``DS_ACCELERATOR=cpu``, nccl on CUDA), picks this rank's device and checks that the job sees
  the GPUs it was promised (``R1ZERO_GPUS_PROMISED``, set by ``stages.core.gpu_lease``).
- ``DistributedRun.trainable_engine``: a DeepSpeed engine around a model and a client torch
  optimizer. DeepSpeed's own C++ optimizers (CPU Adam, fused Adam) are JIT-built with g++ on first
  use (about two minutes each), so a torch AdamW is used even with optimizer offload
  (``zero_force_ds_cpu_optimizer: false``). Gradient accumulation is left to the caller
  (``managed_gradient_accumulation: false``): the trainers accumulate a variable number of
  micro-batches with losses already scaled, then call ``engine.step()`` once.
- ``DistributedRun.frozen_model``: the reference model. ZeRO-3: an inference-only engine (no
  optimizer) whose parameters are sharded like the policy's; ZeRO <= 2: the replicated copy.
- Collectives on small Python values (``all_gather_objects``, ``max_int``, ``sum_float``) and
  ``reduce_metrics``, which turns per-rank step metrics into the metrics of the global batch.
- ``gathered_modules`` / ``consolidated_state_dict``: a ZeRO-3 model's full weights, gathered
  module by module (never the whole model at once on one rank), for publishing an HF directory
  and for pushing weights into a rollout engine.
- ``exit_process``: ends a distributed stage process without running interpreter teardown, where
  a gloo/nccl background thread sometimes aborted a finished ZeRO-3 run ("terminate called
  without an active exception") and turned a success into a failure.

Example (two CPU ranks):
    torchrun --standalone --nproc_per_node 2 -m stages.sft --config sft.json ...   # block: world_size 2
    >>> run = start_distributed(Distributed(world_size=2, zero_stage=2), "cpu")  # doctest: +SKIP
    >>> run.rank, run.world_size  # doctest: +SKIP
    (0, 2)
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import socket
import sys
from typing import Any, Iterator

import torch

from stages.core.memory_plan import Distributed

log = logging.getLogger("r1zero.distributed")

# Metric keys that are maxima or minima over the batch; every other metric is a mean.
_MAX_SUFFIXES = ("max", "max_length", "ratio_max")
_MIN_SUFFIXES = ("min",)
# Per-token means: weighted by each rank's completion tokens, not its completions (these names,
# and every rollout/ key).
_TOKEN_MEAN_KEYS = {"entropy", "kl", "critic/values_mean", "critic/value_loss", "clip_frac", "ratio_mean", "approx_kl"}
# Keys that are the same on every rank by construction (scheduler, controller, the global grad norm)
# or per-rank timings: rank 0's value is logged.
_SHARED_KEYS = ("step", "lr", "kl_coef", "grad_norm", "skipped", "sampling_rounds", "groups_sampled", "groups_kept")


def distributed_block(config: dict) -> Distributed:
    """The stage config's ``distributed`` block as a ``Distributed`` (one process when absent).

    >>> distributed_block({"distributed": {"gpus_per_node": 2, "nodes": 1, "zero_stage": 3}}).world_size
    2
    >>> distributed_block({}).uses_deepspeed
    False
    """
    return Distributed.from_block(config.get("distributed"))


def launched_world_size() -> int:
    """Processes the launcher started (torchrun's WORLD_SIZE; 1 for a plain ``python -m``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_launch(block: Distributed, world_size: int) -> None:
    """Refuse a launch whose process count differs from the block's world size.

    >>> check_launch(Distributed(world_size=2, zero_stage=2), 2)
    >>> check_launch(Distributed(world_size=2, zero_stage=2), 1)
    Traceback (most recent call last):
    ...
    RuntimeError: distributed.world_size is 2 but this stage was launched as 1 process(es); run it under `torchrun --nproc_per_node 2 -m stages.<stage> ...` (the workflow's rules do), or change the block
    """
    if world_size != block.world_size:
        raise RuntimeError(
            f"distributed.world_size is {block.world_size} but this stage was launched as {world_size} process(es); "
            f"run it under `torchrun --nproc_per_node {block.world_size} -m stages.<stage> ...` "
            "(the workflow's rules do), or change the block")


def check_promised_devices(visible_count: int, promised: str | None) -> None:
    """A job given N GPUs by the lease (``R1ZERO_GPUS_PROMISED``) must see exactly N.

    >>> check_promised_devices(2, "2")
    >>> check_promised_devices(8, "4")
    Traceback (most recent call last):
    ...
    RuntimeError: this job was promised 4 GPU(s) (R1ZERO_GPUS_PROMISED) but sees 8 (CUDA_VISIBLE_DEVICES=unset); another job's devices would be shared
    """
    if promised is None or promised == "":
        return
    if visible_count != int(promised):
        raise RuntimeError(
            f"this job was promised {promised} GPU(s) (R1ZERO_GPUS_PROMISED) but sees {visible_count} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); another job's devices would be shared")


@contextlib.contextmanager
def stage_ranks(config: dict, device: torch.device) -> Iterator["DistributedRun | None"]:
    """The DeepSpeed run a stage's config asks for (None: the one-process path), torn down on exit.

    Example:
        >>> with stage_ranks({}, torch.device("cpu")) as run:
        ...     run is None
        True
    """
    run = start_distributed(distributed_block(config), str(device))
    try:
        yield run
    finally:
        if run is not None:
            run.close()


def start_distributed(block: Distributed, device_name: str) -> "DistributedRun | None":
    """Initialise the process group for ``block``; None when the block asks for no DeepSpeed.

    ``device_name`` is the stage's resolved device (``cpu`` or ``cuda``/``cuda:N``). On CPU
    DeepSpeed runs with ``DS_ACCELERATOR=cpu`` over gloo. A one-rank ZeRO run may be started by
    plain ``python -m``: the single-process group is set up here.
    """
    if not block.uses_deepspeed:
        return None
    check_launch(block, launched_world_size())
    on_cuda = str(device_name).startswith("cuda")
    if not on_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ:  # one process, not started by torchrun
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(_free_port())})
    import deepspeed

    if not on_cuda:
        disable_shm_comm(deepspeed)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if on_cuda:
        check_promised_devices(torch.cuda.device_count(), os.environ.get("R1ZERO_GPUS_PROMISED"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        # The job's threads (--threads) are shared by the ranks on this machine.
        torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if on_cuda else "gloo", auto_mpi_discovery=False,
                                   verbose=False, timeout=datetime.timedelta(minutes=30))
    run = DistributedRun(block, torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device)
    log.info("distributed: rank %d of %d on %s (%s)", run.rank, run.world_size, device, block.describe())
    return run


def disable_shm_comm(deepspeed_module) -> None:
    """Keep DeepSpeed's CPU backend from JIT-building its shared-memory all-reduce op.

    On CPU DeepSpeed builds ``deepspeed_shm_comm`` with g++ when it creates its communication
    backend: ~100 s on a 2-core machine, several minutes on a busy one, and only a speed-up of
    inference all-reduces that these stages never use; gloo does the training collectives.
    DeepSpeed consults its ``__compatible_ops__`` table, a module-level dict it keeps for edits,
    before building. ``R1ZERO_DS_SHM_COMM=1`` leaves the op enabled.
    """
    if os.environ.get("R1ZERO_DS_SHM_COMM") == "1":
        return
    deepspeed_module.ops.__compatible_ops__["deepspeed_shm_comm"] = False


@dataclasses.dataclass
class DistributedRun:
    """One rank of a DeepSpeed run: its place, its device, and the block it runs."""

    block: Distributed
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every artefact (metrics, rollouts, checkpoints' shared files, models)."""
        return self.rank == 0

    @property
    def zero_stage(self) -> int:
        return self.block.zero_stage

    # ------------------------------------------------------------ DeepSpeed config and engines
    def ds_config(self, *, dtype: str, max_grad_norm: float | None, train_micro_batch: int = 1) -> dict:
        """The DeepSpeed config dict for one trained model.

        ``train_micro_batch`` only satisfies DeepSpeed's batch-size bookkeeping: the trainers
        feed micro-batches of their own and call ``step()`` themselves.

        >>> run = DistributedRun(Distributed(2, 3, offload_optimizer=True), 0, 2, 0, torch.device("cpu"))
        >>> config = run.ds_config(dtype="bfloat16", max_grad_norm=1.0)
        >>> config["zero_optimization"]["stage"], config["bf16"]["enabled"], config["zero_force_ds_cpu_optimizer"]
        (3, True, False)
        """
        zero: dict[str, Any] = {"stage": self.block.zero_stage}
        if self.block.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        if self.block.offload_param:
            zero["offload_param"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        if self.block.zero_stage == 3:
            # Save consolidated 16-bit weights on save_16bit_model; keep prefetching modest.
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": train_micro_batch,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,
            "zero_optimization": zero,
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,
            "bf16": {"enabled": dtype == "bfloat16"},
            "fp16": {"enabled": dtype == "float16", "initial_scale_power": 16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if max_grad_norm is not None:
            config["gradient_clipping"] = max_grad_norm
        return config

    def trainable_engine(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, dtype: str,
                         max_grad_norm: float | None):
        """``model`` and its client ``optimizer`` under a DeepSpeed engine (ZeRO per the block)."""
        import deepspeed

        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                               config=self.ds_config(dtype=dtype, max_grad_norm=max_grad_norm))
        if self.zero_stage == 0 and dtype == "float32" and max_grad_norm is not None:
            _record_fp32_grad_norm(engine)
        return engine

    @staticmethod
    def grad_norm(engine) -> float:
        """The global gradient norm of the last step, before clipping (as one process logs it)."""
        norm = engine.get_global_grad_norm()
        if norm is None:
            norm = getattr(engine, "r1zero_grad_norm", 0.0)
        return float(norm)

    @staticmethod
    def start_micro_step(engine) -> None:
        """Call before each training micro-batch's forward when the module is called directly.

        ``engine(...)`` would do this itself: ZeRO counts micro-steps at each forward and, under
        ZeRO-3, copies rather than adds the gradients of a backward it thinks is the first. The
        trainers call ``engine.module``'s pieces (trunk, chunked head) directly, so they say when
        a new micro-batch starts."""
        clear = getattr(engine.optimizer, "clear_backward_seen_flag", None)
        if clear is not None:
            clear()

    def frozen_model(self, model: torch.nn.Module, *, dtype: str):
        """(module to call, engine or None) for a model that is never trained (the reference).

        ZeRO-3 shards it like the policy, as an inference engine without an optimizer; under
        ZeRO <= 2 every rank keeps the replicated copy it was given."""
        if self.zero_stage != 3:
            return model, None
        import deepspeed

        config = self.ds_config(dtype=dtype, max_grad_norm=None)
        config["zero_optimization"].pop("offload_optimizer", None)
        engine, _, _, _ = deepspeed.initialize(model=model, config=config)
        engine.eval()
        return engine.module, engine

    # ------------------------------------------------------------ collectives on small values
    def all_gather_objects(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (picklable Python objects)."""
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def _reduce(self, value: float, op) -> float:
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(tensor, op=op)
        return float(tensor.item())

    def sum_float(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.SUM)

    def max_int(self, value: int) -> int:
        return int(self._reduce(value, torch.distributed.ReduceOp.MAX))

    def _comm_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        torch.distributed.barrier()

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def reduce_metrics(self, metrics: dict, *, num_completions: float, num_tokens: float) -> dict:
        """Per-rank step metrics -> the metrics of the global batch (same on every rank).

        Means are weighted by each rank's completions (or, for per-token means, its completion
        tokens); maxima and minima are reduced as such; a few keys are equal on every rank by
        construction and rank 0's value is kept; ``loss`` is a sum (each rank's loss is its share
        of the global loss, see ``stages/grpo.py``).
        """
        records = self.all_gather_objects((metrics, float(num_completions), float(num_tokens)))
        return combine_rank_metrics(records)

    def global_std(self, values: list[float]) -> float:
        """Population standard deviation of ``values`` over all ranks."""
        everything = [v for share in self.all_gather_objects(list(values)) for v in share]
        return float(torch.tensor(everything, dtype=torch.float).std(unbiased=False)) if everything else 0.0

    def sync_backend(self, model: torch.nn.Module, backend) -> None:
        """Push the policy's weights into this rank's rollout engine (vLLM: one colocated engine
        per rank, data parallel).

        ZeRO <= 2: every rank holds the whole model; the backend syncs as in one process. ZeRO-3:
        the shards are gathered one top-level block at a time (embeddings, each decoder layer,
        final norm, head), so the whole model never exists on a GPU of a rank; each block is
        copied to host memory and the engine reloads once from that host copy. Streaming the
        blocks straight into the engine is not possible with vllm 0.32: its layer-wise reload
        takes a complete weight set (a partial one leaves the other layers unloaded, measured).
        """
        if self.zero_stage != 3:
            backend.sync_weights(model)
            return
        host: dict[str, torch.Tensor] = {}
        for piece in weight_pieces(model):
            host.update({name: tensor.to("cpu", copy=True) for name, tensor in piece.tensors.items()})
        backend.sync_weights(WeightPiece(host))

    # ------------------------------------------------------------ full weights of a sharded model
    def gathered_modules(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
        """(prefix, module) with the module's own parameters gathered, one module at a time.

        Under ZeRO-3 each module's parameters are all-gathered on entry and re-sharded on exit,
        so at most one layer's full weights exist at once; under ZeRO <= 2 they are already whole.
        Every rank must iterate (the gathers are collectives)."""
        for prefix, module in model.named_modules():
            params = list(module.parameters(recurse=False))
            if not params:
                continue
            with self._gathered(params):
                yield prefix, module

    def _gathered(self, params: list[torch.nn.Parameter]):
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    def consolidated_state_dict(self, model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict | None:
        """The full state dict on rank 0 (on CPU, in ``dtype`` if given), None on other ranks.

        Keys are those of ``model.state_dict()``; a tied parameter (the LM head of a model with
        tied embeddings) appears once, under its first name, as ``save_pretrained`` expects."""
        wanted = set(model.state_dict().keys())
        state: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for prefix, module in self.gathered_modules(model):
            for name, param in module.named_parameters(recurse=False):
                key = f"{prefix}.{name}" if prefix else name
                if not self.is_main or id(param) in seen or key not in wanted:
                    continue
                seen.add(id(param))
                tensor = param.detach().to("cpu", copy=True)
                state[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        if not self.is_main:
            return None
        for name, buffer in model.named_buffers():
            if name in wanted:
                state.setdefault(name, buffer.detach().to("cpu", copy=True))
        return state

    def copy_weights_into(self, model: torch.nn.Module, replica: torch.nn.Module) -> None:
        """Copy a (possibly sharded) model's weights into a full replica on every rank, module by
        module: the rollout copy of a ZeRO-3 policy is refreshed this way after each step."""
        replica_params = dict(replica.named_parameters())
        with torch.no_grad():
            for prefix, module in self.gathered_modules(model):
                for name, param in module.named_parameters(recurse=False):
                    target = replica_params.get(f"{prefix}.{name}" if prefix else name)
                    if target is not None:
                        target.copy_(param.detach().to(target.device, target.dtype))

    def close(self) -> None:
        """Wait for every rank, then destroy the process group (a clean end for gloo and nccl)."""
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _record_fp32_grad_norm(engine) -> None:
    """ZeRO-0 in float32 clips with DeepSpeed's ``clip_grad_norm_`` but drops the norm it returns;
    keep it, so ``grad_norm`` is logged as under ZeRO 1-3."""
    from deepspeed.runtime.utils import clip_grad_norm_

    def clip_and_record() -> None:
        engine.r1zero_grad_norm = float(clip_grad_norm_(parameters=engine.module.parameters(),
                                                        max_norm=engine.gradient_clipping(), mpu=engine.mpu))

    engine.clip_fp32_gradients = clip_and_record


def combine_rank_metrics(records: list[tuple[dict, float, float]]) -> dict:
    """Combine (metrics, num_completions, num_tokens) of every rank into global metrics.

    A key some ranks lack (a rate over completions a rank did not have) is combined over the
    ranks that have it.

    >>> combine_rank_metrics([({"step": 3, "reward/total": 1.0, "entropy": 2.0, "completions/max_length": 5, "loss": 0.5}, 2, 10),
    ...                       ({"step": 3, "reward/total": 0.0, "entropy": 1.0, "completions/max_length": 7, "loss": 0.25}, 2, 30)])
    {'step': 3, 'reward/total': 0.5, 'entropy': 1.25, 'completions/max_length': 7, 'loss': 0.75}
    """
    keys = list(dict.fromkeys(key for metrics, _, _ in records for key in metrics))
    out: dict = {}
    for key in keys:
        present = [(m[key], n, t) for m, n, t in records if key in m]
        values = [v for v, _, _ in present]
        if key in _SHARED_KEYS or key.startswith("time/") or not all(isinstance(v, (int, float)) for v in values):
            out[key] = values[0]
        elif key == "loss" or key.startswith("throughput/"):
            out[key] = sum(values)
        elif key.endswith(_MAX_SUFFIXES):
            out[key] = max(values)
        elif key.endswith(_MIN_SUFFIXES):
            out[key] = min(values)
        else:
            per_token = key in _TOKEN_MEAN_KEYS or key.startswith("rollout/")
            weights = [t if per_token else n for _, n, t in present]
            total = sum(weights)
            out[key] = sum(v * w for v, w in zip(values, weights)) / total if total else values[0]
    return out


def exit_process(code: int) -> None:
    """End a distributed stage process now, after flushing its output.

    Called from a stage's ``__main__`` after ``main`` returned (code 0) or raised (code 1): the
    interpreter's own teardown can abort in a communication thread after a finished ZeRO-3 run,
    which would report a clean finish as a crash. The process group is destroyed before this."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_stage_process(main, description: str) -> None:
    """``run_stage(main)`` for a stage that may run under torchrun: a distributed process exits
    through ``exit_process`` with 0 after success and 1 after any error (its traceback printed)."""
    import traceback

    from pipeline.stage_cli import run_stage

    if launched_world_size() == 1 and "RANK" not in os.environ:
        run_stage(main, description=description)
        return
    try:
        run_stage(main, description=description)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            print(stop.code if isinstance(stop.code, str) else f"exit {stop.code}", file=sys.stderr)
        exit_process(0 if stop.code in (None, 0) else 1)
    except BaseException:  # noqa: BLE001 -- any failure is a failure; print it, exit non-zero
        traceback.print_exc()
        exit_process(1)
    exit_process(0)


# ---------------------------------------------------------------- GRPO: groups across ranks
def rank_groups(num_groups: int, rank: int, world_size: int) -> tuple[int, int]:
    """(first group, number of groups) of ``rank`` when ``num_groups`` groups are split evenly.

    A remainder that does not divide (dynamic sampling can keep any number) is dropped, so
    that every rank trains on as many groups as the others.

    >>> [rank_groups(8, r, 2) for r in range(2)]
    [(0, 4), (4, 4)]
    >>> rank_groups(5, 1, 2)
    (2, 2)
    """
    per_rank = num_groups // world_size
    return rank * per_rank, per_rank


def group_seeds(settings, first_group: int, prompt_ids: list[list[int]], backend: str) -> list[tuple[int | None, list[list[int]]]]:
    """(seed, prompts) generate calls for a rank's groups, each group seeded by its position in
    the step (``first_group + i``), not by the rank: 1 rank and N ranks draw the same completions.

    vLLM seeds the prompts of one call with ``seed + prompt_index x G``, so one call with the
    seed shifted by ``first_group x G`` gives each group the seed it has in a one-call run; the hf
    backend seeds once per call, so it gets one call per group with that same seed.

    >>> from stages.core.rollout import SamplingSettings
    >>> settings = SamplingSettings(num_samples=4, max_new_tokens=8, seed=100)
    >>> group_seeds(settings, 2, [[1], [2]], "hf")
    [(108, [[1]]), (112, [[2]])]
    >>> group_seeds(settings, 2, [[1], [2]], "vllm")
    [(108, [[1], [2]])]
    """
    if settings.seed is None:
        return [(None, prompt_ids)]
    group = settings.num_samples
    if backend == "vllm":
        return [(settings.seed + first_group * group, prompt_ids)]
    return [(settings.seed + (first_group + i) * group, [ids]) for i, ids in enumerate(prompt_ids)]


def gather_groups(run: DistributedRun, groups: list) -> list:
    """Every rank's scored groups, concatenated in rank order (= the order of the step's prompts)."""
    return [group for share in run.all_gather_objects(groups) for group in share]




def weight_pieces(model: torch.nn.Module) -> Iterator["WeightPiece"]:
    """``WeightPiece`` objects (what ``named_policy_weights`` reads) of a ZeRO-3 model, one
    decoder layer (or other top-level block) at a time, gathered while the piece is in use."""
    import deepspeed

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    embeddings = model.get_input_embeddings()
    for prefix, block in _weight_blocks(model):
        params = list(block.named_parameters())
        with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None):
            named = {f"{prefix}.{name}": p.detach() for name, p in params}
            if tied and block is embeddings:
                named["lm_head.weight"] = embeddings.weight.detach()  # vLLM reloads the head on its own
            yield WeightPiece(named)


def _weight_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Top-level blocks: children with parameters, descending into ModuleLists (decoder layers)."""
    blocks = []

    def visit(prefix: str, module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if not any(True for _ in child.parameters()):
                continue
            if isinstance(child, torch.nn.ModuleList) or (child is getattr(model, "base_model", None) and child is not model):
                visit(path, child)
            else:
                blocks.append((path, child))

    visit("", model)
    return blocks


@dataclasses.dataclass
class WeightPiece:
    """A few named tensors shaped like a model for ``rollout_vllm.named_policy_weights``."""

    tensors: dict

    class _Config:
        tie_word_embeddings = False

    config = _Config()

    def state_dict(self) -> dict:
        return self.tensors

