"""The ``runs.<run>.distributed`` block: schema errors by field, snapshots, the rules' resources and
launch lines (torchrun on one node, srun + torchrun over several, the GPU lease), and the GPU
lease itself."""
from __future__ import annotations

import fcntl
import subprocess
import sys

import pytest

from pipeline.config import ConfigError, layered_config, stage_snapshots, validate_config
from pipeline.workflow import Workflow
from stages.core import gpu_lease
from stages.core.memory_plan import Distributed


def config_with(distributed: dict | None, **grpo) -> dict:
    raw = layered_config({})
    run = next(iter(raw["runs"]))
    raw["runs"] = {run: {**raw["runs"][run], "distributed": distributed}}
    raw["runs"][run]["grpo"] = {**raw["runs"][run]["grpo"], **grpo}
    return raw


def workflow(distributed: dict | None, *, gpu: bool = False) -> tuple[Workflow, str]:
    cfg = validate_config(config_with(distributed))
    w = Workflow(cfg, Workflow.from_snakemake_config({}).paths)
    w.__dict__["uses_gpu"] = gpu  # the cached property: as on a machine with (or without) GPUs
    return w, next(iter(cfg.runs))


@pytest.mark.parametrize("block, field, allowed", [
    ({"zero_stage": 4}, "zero_stage", "0, 1, 2 or 3"),
    ({"gpus_per_node": 0}, "gpus_per_node", "greater than or equal to 1"),
    ({"zero_stage": 2, "offload_param": True}, "offload_param", "zero_stage: 3"),
    ({"zero_stage": 0, "offload_optimizer": True}, "offload_optimizer", "zero_stage 1, 2 or 3"),
    ({"zero_stage": 2, "tensor_parallel": 2}, "tensor_parallel", "unknown key; allowed here: gpus_per_node"),
])
def test_bad_blocks_are_refused_naming_the_field(block, field, allowed):
    with pytest.raises(ConfigError) as error:
        validate_config(config_with(block))
    assert "distributed" in str(error.value) and field in str(error.value) and allowed in str(error.value)


def test_prompts_per_step_must_split_evenly_over_the_ranks():
    with pytest.raises(ConfigError, match=r"prompts_per_step: 6 must be a multiple of the world size 4"):
        validate_config(config_with({"gpus_per_node": 2, "nodes": 2}, prompts_per_step=6))


def test_the_block_reaches_both_training_snapshots_and_the_memory_plan_reads_it():
    raw = config_with({"gpus_per_node": 4, "nodes": 2, "zero_stage": 3, "offload_optimizer": True})
    cfg = validate_config(raw)
    run = next(iter(cfg.runs))
    snapshot = stage_snapshots(cfg)[f"runs/{run}/grpo"]
    assert snapshot["distributed"]["zero_stage"] == 3
    assert Distributed.from_block(snapshot["distributed"]) == Distributed(8, 3, True, False)
    plain = stage_snapshots(validate_config(config_with(None)))[f"runs/{run}/grpo"]
    assert "distributed" not in plain, "runs without a block keep their snapshots, and their cached results"


def test_one_process_runs_keep_their_command_and_resources():
    w, run = workflow(None)
    assert w.launcher(run, "stages.grpo") == "python -m stages.grpo"
    assert w.run_resources("grpo", run) == {**w.resources("grpo"), "nodes": 1, "tasks": 1}
    w_gpu, run = workflow(None, gpu=True)
    assert w_gpu.launcher(run, "stages.grpo").startswith("python -m stages.core.gpu_lease --gpus 1 ")
    assert w_gpu.run_resources("grpo", run)["tasks"] == 0, "no --ntasks-per-gpu for a GPU job"


def test_one_node_runs_under_torchrun_with_its_gpus_leased():
    w, run = workflow({"gpus_per_node": 4, "zero_stage": 3}, gpu=True)
    launch = w.launcher(run, "stages.grpo")
    assert launch == ("python -m stages.core.gpu_lease --gpus 4 --dir results/.gpu_leases -- "
                      "torchrun --standalone --nproc_per_node 4 -m stages.grpo")
    resources = w.run_resources("grpo", run)
    assert (resources["gpu"], resources["nodes"], resources["tasks"]) == (4, 1, 0)
    assert resources["mem_mb"] == 4 * w.resources("grpo")["mem_mb"]
    assert w.train_threads(run) == 4


def test_several_nodes_run_srun_then_torchrun_with_a_rendezvous():
    w, run = workflow({"gpus_per_node": 8, "nodes": 2, "zero_stage": 3, "mem_mb_per_node": 400000}, gpu=True)
    launch = w.launcher(run, "stages.sft")
    assert launch.startswith("srun --kill-on-bad-exit=1 torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d")
    assert "--rdzv-endpoint" in launch and launch.endswith("-m stages.sft") and "gpu_lease" not in launch
    resources = w.run_resources("sft", run)
    assert (resources["gpu"], resources["nodes"], resources["mem_mb"]) == (16, 2, 400000)


def test_cpu_ranks_ask_for_one_task_per_node_and_no_gpu():
    w, run = workflow({"gpus_per_node": 2, "zero_stage": 2})
    assert w.launcher(run, "stages.grpo") == "torchrun --standalone --nproc_per_node 2 -m stages.grpo"
    assert (w.run_resources("grpo", run)["gpu"], w.run_resources("grpo", run)["tasks"]) == (0, 1)


def test_dry_run_shows_torchrun_on_one_node_and_srun_over_several(tmp_path):
    override = tmp_path / "distributed.yaml"
    override.write_text("runs:\n  r1zero:\n    distributed: {gpus_per_node: 2, zero_stage: 3}\n"
                        "  coldstart:\n    distributed: {gpus_per_node: 1, nodes: 2, zero_stage: 2}\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--configfile",
                             "pipeline/config/smoke.yaml", str(override), "--config", f"results_dir={tmp_path / 'results'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {}  # (rule, run) -> (resources line, shell command)
    for block in result.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        lines = block.splitlines()
        wildcards = next((line for line in lines if line.strip().startswith("wildcards:")), "")
        resources = next((line for line in lines if line.strip().startswith("resources:")), "")
        shell = next((line.removeprefix("Shell command: ") for line in lines if line.startswith("Shell command:")), "")
        jobs[(rule, wildcards.split("run=")[-1].split(",")[0].strip())] = (resources, shell)
    resources, shell = jobs[("grpo", "r1zero")]
    assert shell.startswith("torchrun --standalone --nproc_per_node 2 -m stages.grpo") and "--threads 2" in shell
    resources, shell = jobs[("grpo_multinode", "coldstart")]
    assert shell.startswith("srun --kill-on-bad-exit=1 torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d")
    assert "nodes=2" in resources and "tasks=2" in resources and "mpi=srun" in resources and "tasks_per_gpu=0" in resources
    assert ("sft_multinode", "coldstart") in jobs and ("grpo", "coldstart") not in jobs


# ---------------------------------------------------------------- the GPU lease
def test_lease_takes_free_devices_and_waits_for_none_held(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    lock_dir = tmp_path / "host"
    lock_dir.mkdir()
    held = open(lock_dir / "gpu1.lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another job holds device 1
    devices, handles = gpu_lease.try_lease(gpu_lease.visible_devices(), 2, lock_dir)
    assert devices == ["0", "2"]
    assert gpu_lease.try_lease(gpu_lease.visible_devices(), 2, lock_dir) == ([], []), "only device 3 is left"
    for handle in handles:
        handle.close()
    held.close()


def test_lease_runs_the_command_with_its_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    out = tmp_path / "env.txt"
    code = gpu_lease.main(["--gpus", "2", "--dir", str(tmp_path), "--", sys.executable, "-c",
                           f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + "
                           "os.environ['R1ZERO_GPUS_PROMISED'])"])
    assert code == 0 and out.read_text() == "4,5 2"


def test_lease_refuses_more_devices_than_the_machine_has(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(SystemExit, match="2 GPU"):
        gpu_lease.main(["--gpus", "2", "--dir", str(tmp_path), "--", "true"])


def test_inside_slurm_the_lease_takes_the_jobs_devices_without_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    devices, handles = gpu_lease.lease(2, tmp_path, timeout_s=1)
    assert devices == ["0", "1"] and handles == [] and not any(tmp_path.iterdir())
