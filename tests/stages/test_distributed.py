"""DeepSpeed ZeRO on CPU: 1 rank vs 2 ranks (gloo), ZeRO-2 and ZeRO-3, for GRPO and SFT, and a
2-rank kill-then-resume; plus the glue's pure parts (metric reduction, group split and seeds,
launch and device checks, checkpoint layout refusal).

The multi-process tests start the stages under ``torchrun --nproc_per_node 2`` through
tests/stages/distributed_worker.py (the toy reward registered) with ``DS_ACCELERATOR=cpu``.

Tolerances. One rank and two ranks compute the same global loss, but the gradient is summed in
another order (each rank's micro-batches, then an average over ranks): float32 sums differ by
~1e-7 relative. Metrics are means of the same numbers: they agree to 1e-5. AdamW divides each
update by the root of its second moment, so a parameter whose gradient is near zero turns a 1e-7
difference into a visible fraction of one step (lr = 5e-3): weights are compared at 1e-4 (2% of
one step) after 3 steps; measured 1.8e-5 (GRPO) and 6e-7 (SFT, lr 1e-3). A resumed run repeats
the same arithmetic as the uninterrupted one at the same world size: compared at 1e-6.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stages.core.distributed import (DistributedRun, check_launch, check_promised_devices, combine_rank_metrics,
                                     distributed_block, group_seeds, rank_groups)
from stages.core.memory_plan import Distributed
from stages.core.rollout import SamplingSettings
from tests.stages.test_learning import toy_reward  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")
needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed (pip install -e '.[deepspeed]')")
LAUNCH_TIMEOUT_S = 600


# ---------------------------------------------------------------- pure parts
def test_metrics_are_reduced_as_means_maxima_and_sums():
    rank0 = {"step": 2, "reward/total": 1.0, "entropy": 3.0, "completions/max_length": 9, "loss": 0.5, "lr": 0.1,
             "ratio_max": 1.5, "grad_norm": 0.7}
    rank1 = {"step": 2, "reward/total": 0.5, "entropy": 1.0, "completions/max_length": 4, "loss": 0.25, "lr": 0.1,
             "ratio_max": 2.0, "grad_norm": 0.7}
    combined = combine_rank_metrics([(rank0, 4, 30), (rank1, 4, 10)])
    assert combined["reward/total"] == 0.75, "per-completion mean, equal completions per rank"
    assert combined["entropy"] == (3.0 * 30 + 1.0 * 10) / 40, "per-token mean: weighted by each rank's tokens"
    assert combined["completions/max_length"] == 9 and combined["ratio_max"] == 2.0
    assert combined["loss"] == 0.75, "each rank's loss is its share of the global loss"
    assert combined["lr"] == 0.1 and combined["grad_norm"] == 0.7 and combined["step"] == 2


def test_groups_split_evenly_and_a_remainder_is_dropped():
    assert [rank_groups(6, rank, 3) for rank in range(3)] == [(0, 2), (2, 2), (4, 2)]
    assert [rank_groups(7, rank, 2) for rank in range(2)] == [(0, 3), (3, 3)]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_a_group_has_the_same_seed_on_one_rank_or_two(backend):
    settings = SamplingSettings(num_samples=4, max_new_tokens=8, seed=1000)
    prompts = [[1], [2], [3], [4]]

    def seeds_by_group(calls):
        out = []
        for seed, ids in calls:
            out += [seed + index * settings.num_samples for index in range(len(ids))] if backend == "vllm" else [seed]
        return out

    one_rank = seeds_by_group(group_seeds(settings, 0, prompts, backend))
    two_ranks = seeds_by_group(group_seeds(settings, 0, prompts[:2], backend)) + \
        seeds_by_group(group_seeds(settings, 2, prompts[2:], backend))
    assert one_rank == two_ranks == [1000, 1004, 1008, 1012]


def test_a_launch_that_does_not_match_the_block_is_refused():
    check_launch(Distributed(world_size=4, zero_stage=3), 4)
    with pytest.raises(RuntimeError, match=r"world_size is 4 but this stage was launched as 2.*torchrun --nproc_per_node 4"):
        check_launch(Distributed(world_size=4, zero_stage=3), 2)


def test_a_job_that_sees_other_devices_than_promised_stops():
    check_promised_devices(4, "4")
    check_promised_devices(8, None)  # not started by the lease: nothing promised
    with pytest.raises(RuntimeError, match="promised 4 GPU"):
        check_promised_devices(8, "4")


def test_block_reads_gpus_per_node_times_nodes():
    block = distributed_block({"distributed": {"gpus_per_node": 4, "nodes": 2, "zero_stage": 3, "offload_optimizer": True}})
    assert (block.world_size, block.zero_stage, block.offload_optimizer, block.uses_deepspeed) == (8, 3, True, True)
    assert not distributed_block({}).uses_deepspeed


def test_deepspeed_config_uses_the_client_optimizer_and_leaves_accumulation_to_the_trainer():
    run = DistributedRun(Distributed(2, 3, offload_optimizer=True, offload_param=True), 0, 2, 0, torch.device("cpu"))
    config = run.ds_config(dtype="float32", max_grad_norm=0.5)
    assert config["zero_force_ds_cpu_optimizer"] is False, "no JIT-built DeepSpeed CPU Adam"
    assert config["managed_gradient_accumulation"] is False and config["gradient_accumulation_steps"] == 1
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert config["gradient_clipping"] == 0.5 and not config["bf16"]["enabled"]


def test_a_checkpoint_of_another_layout_is_refused_by_name(tmp_path):
    import stages.grpo as grpo

    two_ranks = {"layout": {"deepspeed": True, "world_size": 2, "zero_stage": 3}}
    four_ranks = DistributedRun(Distributed(4, 3), 0, 4, 0, torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"written by 2 rank\(s\) under ZeRO-3; this run is 4 rank\(s\) under ZeRO-3"):
        grpo.check_layout(tmp_path / "step_000001", two_ranks, four_ranks)
    with pytest.raises(RuntimeError, match="written by one process"):
        grpo.check_layout(tmp_path / "step_000001", {}, four_ranks)
    grpo.check_layout(tmp_path / "step_000001", {}, None)  # one process resumes its own checkpoints


# ---------------------------------------------------------------- multi-process runs
def launch(stage: str, config: dict, nproc: int, workdir: Path, inputs: dict, outputs: dict, env: dict | None = None):
    """Run ``stage`` under torchrun with ``nproc`` CPU ranks; returns the completed process."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), stage, "--config", str(config_path)]
    command += [f"--input={name}={path}" for name, path in inputs.items()]
    command += [f"--output={name}={path}" for name, path in outputs.items()]
    environment = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                   **(env or {})}
    return subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)


def _ok(process) -> None:
    assert process.returncode == 0, f"exit {process.returncode}\n{process.stderr[-4000:]}"


def _weights(model_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()  # the published directory must load


def _assert_same_weights(left: Path, right: Path, atol: float) -> None:
    a, b = _weights(left), _weights(right)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=f"{name}: {left} vs {right}")


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


COMPARED_METRICS = ["reward/total", "reward/std", "accuracy", "completions/mean_length", "completions/max_length",
                    "entropy", "kl", "loss", "grad_norm", "clip_frac", "lr", "kl_coef"]


def _assert_same_metrics(left: list[dict], right: list[dict], atol: float) -> None:
    assert [r["step"] for r in left] == [r["step"] for r in right]
    for a, b in zip(left, right):
        for key in COMPARED_METRICS:
            if key in a or key in b:
                assert b[key] == pytest.approx(a[key], abs=atol, rel=atol), f"step {a['step']} {key}: {a[key]} vs {b[key]}"


@pytest.fixture(scope="module")
def toy_inputs(tmp_path_factory, tiny_model_dir):
    directory = tmp_path_factory.mktemp("toy")
    rows = [{"id": f"toy-{i}", "source": "test", "task": "toy", "question": f"q{i}", "prompt": f"Say digits {i}:",
             "answer": None, "meta": {}} for i in range(16)]
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft_rows = [{"id": f"t{i}", "prompt": f"Say digits {i}:", "completion": " ".join(str((i * j) % 10) for j in range(3 + i % 5))}
                for i in range(12)]
    (directory / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    return {"model": str(tiny_model_dir), "train": str(directory / "train.jsonl"), "sft": str(directory / "sft.jsonl")}


def grpo_run_config(world_size: int, zero_stage: int) -> dict:
    from tests.stages.test_learning import grpo_config

    # A KL term (frozen reference: replicated under ZeRO-2, sharded under ZeRO-3), uneven
    # micro-batches (3 rows of 8 per rank), a checkpoint every step.
    config = grpo_config({"advantage_estimator": "grpo", "kl_coef": 0.01, "kl_estimator": "k3"}, steps=3,
                         checkpoint_every=1, prompts_per_step=4, group_size=4, micro_batch_size=3)
    return {**config, "distributed": {"world_size": world_size, "zero_stage": zero_stage}}


def run_grpo(tmp: Path, name: str, config: dict, nproc: int, toy_inputs: dict, env: dict | None = None):
    out = tmp / name
    outputs = {"model": out / "model", "metrics": out / "metrics.jsonl", "scratch": out}
    return launch("grpo", config, nproc, out, {"model": toy_inputs["model"], "train": toy_inputs["train"]}, outputs, env), out


def run_one_rank_here(tmp: Path, name: str, config: dict, toy_inputs: dict, monkeypatch) -> Path:
    """A 1-rank DeepSpeed run in this process (no launcher: the stage sets up its own 1-process
    group), saving a launch's start-up; the environment it sets is undone afterwards."""
    import stages.grpo as grpo

    for variable in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    threads = torch.get_num_threads()
    out = tmp / name
    try:
        grpo.main(config, {"model": toy_inputs["model"], "train": toy_inputs["train"]},
                  {"model": str(out / "model"), "metrics": str(out / "metrics.jsonl"), "scratch": str(out)})
    finally:
        torch.set_num_threads(threads)
        for variable in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(variable, None)
    return out


@pytest.mark.distributed
@needs_deepspeed
def test_grpo_two_ranks_match_one_rank_under_zero2_and_zero3_and_resume_after_a_kill(tmp_path, toy_inputs, toy_reward,
                                                                                     monkeypatch):
    one_dir = run_one_rank_here(tmp_path, "w1z2", grpo_run_config(1, 2), toy_inputs, monkeypatch)
    for stage in (2, 3):
        two, two_dir = run_grpo(tmp_path, f"w2z{stage}", grpo_run_config(2, stage), 2, toy_inputs)
        _ok(two)
        _assert_same_metrics(_metrics(one_dir / "metrics.jsonl"), _metrics(two_dir / "metrics.jsonl"), atol=1e-5)
        _assert_same_weights(one_dir / "model", two_dir / "model", atol=1e-4)
        assert len((two_dir / "rollouts" / "step_000000.jsonl").read_text().splitlines()) == 16, "rank 0 archives all groups"
        meta = json.loads((two_dir / "model" / "meta.json").read_text())
        assert meta["layout"] == {"deepspeed": True, "world_size": 2, "zero_stage": stage}
    # Kill both ranks at step 2 (after the step-1 checkpoint), then rerun: it resumes at step 2.
    killed, killed_dir = run_grpo(tmp_path, "killed", grpo_run_config(2, 3), 2, toy_inputs, {"R1ZERO_TEST_KILL_AT_STEP": "2"})
    assert killed.returncode != 0, "a killed run is reported as a failure"
    assert not (killed_dir / "model").exists(), "no finished-looking artefact after the kill"
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir()) == ["step_000000", "step_000001"]
    resumed, _ = run_grpo(tmp_path, "killed", grpo_run_config(2, 3), 2, toy_inputs)
    _ok(resumed)
    meta = json.loads((killed_dir / "model" / "meta.json").read_text())
    assert meta["steps_trained_this_invocation"] == 1, "resumed from the step-1 checkpoint: step 2 only"
    _assert_same_metrics(_metrics(tmp_path / "w2z3" / "metrics.jsonl"), _metrics(killed_dir / "metrics.jsonl"), atol=1e-6)
    _assert_same_weights(tmp_path / "w2z3" / "model", killed_dir / "model", atol=1e-6)


@pytest.mark.distributed
@needs_deepspeed
def test_sft_two_ranks_under_zero3_match_one_process(tmp_path, toy_inputs):
    from stages import sft

    config = {"run": "r", "base": "tiny", "device": "cpu", "dtype": "float32", "source": "files", "path": toy_inputs["sft"],
              "dataset": None, "num_examples": 12, "hint_prob": 0.8, "epochs": 2, "batch_size": 6, "micro_batch_size": 2,
              "gradient_checkpointing": False, "lr": 1e-3, "warmup_steps": 2, "seed": 0}
    inputs = {"model": toy_inputs["model"], "data": toy_inputs["sft"]}
    sft.main(config, inputs, {"model": str(tmp_path / "one" / "model")})  # the one-process path, no DeepSpeed
    two = launch("sft", {**config, "distributed": {"world_size": 2, "zero_stage": 3}}, 2, tmp_path / "two", inputs,
                 {"model": tmp_path / "two" / "model"})
    _ok(two)
    one_history = _metrics(tmp_path / "one" / "model" / "sft_metrics.jsonl")
    two_history = _metrics(tmp_path / "two" / "model" / "sft_metrics.jsonl")
    for a, b in zip(one_history, two_history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4) and b["grad_norm"] == pytest.approx(a["grad_norm"], abs=1e-4)
    _assert_same_weights(tmp_path / "one" / "model", tmp_path / "two" / "model", atol=1e-4)


# ---------------------------------------------------------------- benchmarks/gpu_check.py (its CPU-free parts)
def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_plans_two_ranks_with_vllm_on_two_gpus_and_one_rank_on_one():
    gpu_check = _gpu_check()
    assert gpu_check.plan(2, True) == {"ranks": 2, "zero_stage": 3, "backend": "vllm"}
    assert gpu_check.plan(1, True) == {"ranks": 1, "zero_stage": 3, "backend": "vllm"}
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.plan(0, True)
    config = gpu_check.stage_config(2, 3, "vllm")
    assert config["distributed"] == {"world_size": 2, "zero_stage": 3} and config["prompts_per_step"] % 2 == 0
    assert distributed_block(config).uses_deepspeed and config["rollout"]["backend"] == "vllm"
    command = gpu_check.launch_command(2, Path("w/grpo.json"), Path("w/model"), Path("w/train.jsonl"), Path("w/run"))
    assert "--nproc_per_node=2" in command and "--worker" in command and "scratch=w/run" in command


def test_gpu_check_reports_stale_weights_and_unchanged_models(tmp_path, tiny_model_dir):
    gpu_check = _gpu_check()
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    import shutil

    for item in tiny_model_dir.iterdir():
        shutil.copy(item, out / "model" / item.name)
    (out / "model" / "meta.json").write_text(json.dumps({"layout": {"deepspeed": True, "world_size": 2, "zero_stage": 3}}))
    records = [{"step": s, "rollout/logprob_abs_diff": 0.9 if s == 2 else 0.01, "reward/total": 0.1, "time/step_s": 1.0}
               for s in range(gpu_check.STEPS)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    failures = gpu_check.check(out, tiny_model_dir, ranks=2)
    assert any("not synced" in f for f in failures) and any("equal the start" in f for f in failures)
