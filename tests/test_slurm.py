"""The workflow on a real Slurm cluster, through Snakemake's Slurm executor and pipeline/profiles/slurm.

These tests submit jobs with ``sbatch`` and read them back with ``sacct``, so they need a running
Slurm with accounting. CI always has one: ``.ci/run`` installs the ``slurm`` extra and starts a
one-node cluster with ``.ci/start_slurm.sh`` (partition ``debug``, account ``r1zero-ci``, one fake
GPU) before pytest. Elsewhere they are skipped when ``sbatch`` is not on PATH; where ``sbatch``
exists but no cluster answers, they fail and say to run that script.

What they check: every job of a reduced smoke workflow is submitted with sbatch, with the
resources its rule declares, and completes; its results equal a local run's; a GPU rule asks Slurm
for the GPUs the config implies. Every snakemake call runs under ``timeout -k``: without a working
accounting daemon the executor plugin waits forever for a finished job and ignores SIGTERM.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pipeline.workflow import Workflow

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "pipeline" / "config" / "smoke.yaml"
PROFILE = REPO / "pipeline" / "profiles" / "slurm"
ACCOUNT = "r1zero-ci"  # created by .ci/start_slurm.sh
LOCAL_RULES = {"config_snapshot", "all"}  # run by Snakemake itself, never submitted
# Hang guards, not performance limits: a run takes a few minutes on an idle 2-core machine.
WORKFLOW_TIMEOUT_S = 1500
# Per-step timings and throughput differ between any two runs; everything else must be equal.
TIMING_PREFIXES = ("time/", "throughput/")

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sbatch") is None,
                       reason="no sbatch on PATH: needs a Slurm cluster (CI starts one with .ci/start_slurm.sh)"),
]


# ------------------------------------------------------------------ helpers
def run_command(command: list[str], timeout_s: int) -> subprocess.CompletedProcess:
    """Run under `timeout -k` (SIGKILL 10 s after SIGTERM), from the repository root."""
    wrapped = ["timeout", "-k", "10", str(timeout_s), *command]
    return subprocess.run(wrapped, cwd=REPO, capture_output=True, text=True, timeout=timeout_s + 60)


def write_config(tmp_path: Path, name: str, mutate=None) -> tuple[Path, dict]:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["results_dir"] = str(tmp_path / "results")
    if mutate:
        mutate(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def one_run(raw: dict) -> None:
    """The smoke config with only its cold-start run: every stage kind (base model, SFT, GRPO,
    evaluation, report) in 11 Slurm jobs instead of 16, to keep the test within minutes.

    The smoke base earns no Countdown reward, so GRPO would see no reward spread and never update;
    the deterministic coin-flip reward (verifiers/random_reward.py) gives its groups spread, so the
    GRPO weights compared below are really trained.
    """
    raw["runs"] = {"coldstart": raw["runs"]["coldstart"]}
    raw["rewards"]["countdown"]["random_coin"] = 1.0


def default_partition() -> str:
    partitions = [p for p in run_command(["sinfo", "-h", "-o", "%P"], 30).stdout.split() if p.endswith("*")]
    assert partitions, "the cluster has no default partition (sinfo -o %P shows none marked with *)"
    return partitions[0].rstrip("*")


def slurm_resource_args(partition: str) -> list[str]:
    """The profile's default-resources with its two placeholders filled in for this cluster.

    On the command line, --default-resources replaces the profile's whole list, so the profile's
    other defaults are passed along: what reaches sbatch is still what the profile says.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    resources = {**profile["default-resources"], "slurm_partition": partition, "slurm_account": ACCOUNT}
    return ["--default-resources", *(f"{key}={value}" for key, value in resources.items())]


def slurm_snakemake(config: Path, tmp_path: Path, *targets: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *targets, "--executor", "slurm", "--profile", str(PROFILE),
               "--workflow-profile", "none", *slurm_resource_args(default_partition()),
               # Poll every few seconds: these jobs take seconds, a real cluster's take hours.
               "--slurm-init-seconds-before-status-checks", "2",
               "--slurm-logdir", str(tmp_path / "slurm_logs"), "--slurm-keep-successful-logs",
               "--configfile", str(config)]
    result = run_command(command, WORKFLOW_TIMEOUT_S)
    cancel_leftover_jobs(result.stdout + result.stderr)
    return result


def cancel_leftover_jobs(output: str) -> None:
    """scancel whatever this run submitted and left queued or running (a timeout, a failure)."""
    run_ids = re.findall(r"SLURM run ID: (\S+)", output)
    for run_id in run_ids:
        run_command(["scancel", "--name", run_id], 60)


def submitted_slurm_jobs(output: str) -> list[str]:
    """Slurm job ids that the executor reported submitting ("... submitted with SLURM jobid N")."""
    return re.findall(r"has been submitted with SLURM jobid (\d+)", output)


def sacct_rows(job_ids: list[str]) -> list[dict[str, str]]:
    """One row per job (no steps) from Slurm's accounting."""
    fields = ["JobID", "Comment", "State", "ReqTRES", "AllocTRES", "Account", "Partition", "TimelimitRaw"]
    result = run_command(["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(fields)], 60)
    assert result.returncode == 0, f"sacct failed: {result.stderr}"
    return [dict(zip(fields, line.split("|"))) for line in result.stdout.splitlines() if line.strip()]


def rule_of(comment: str) -> str:
    """The rule a job ran: the plugin comments each job rule_<name>[_wildcards_<values>]."""
    assert comment.startswith("rule_"), f"a job without the plugin's rule comment: {comment!r}"
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def tres(row: dict[str, str], field: str = "ReqTRES") -> dict[str, str]:
    """'billing=1,cpu=2,gres/gpu=1,mem=4000M,node=1' -> {'cpu': '2', 'gres/gpu': '1', ...}"""
    return dict(item.split("=", 1) for item in row[field].split(",") if item)


def declared_resources(output: str) -> dict[str, dict]:
    """Slurm job id -> the rule, threads and resources Snakemake printed for the job it submitted.

    Snakemake prints each job as a block (``rule grpo:`` ... ``jobid: 7`` ... ``resources: a=1, b=2``)
    and the executor then logs ``Job 7 has been submitted with SLURM jobid 42``.
    """
    jobs = {}
    for block in re.split(r"^\[.*\]$", output, flags=re.MULTILINE):
        header = re.search(r"^(?:local)?rule (\w+):$", block, re.MULTILINE)
        jobid = re.search(r"^\s+jobid: (\d+)$", block, re.MULTILINE)
        resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if header and jobid and resources:
            threads = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
            values = dict(item.split("=", 1) for item in resources.group(1).split(", "))
            jobs[jobid.group(1)] = {"rule": header.group(1), "threads": int(threads.group(1)) if threads else 1, **values}
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    return {slurm_id: jobs[snakemake_id] for snakemake_id, slurm_id in submitted}


def job_stats(output: str) -> Counter:
    """Rule -> job count from the "Job stats" table Snakemake prints before it runs anything."""
    table = output.split("Job stats:")[1].split("total")[0]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)})


def metric_records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in record.items() if not k.startswith(TIMING_PREFIXES)} for record in records]


def scores_and_provenance(path: Path) -> tuple[dict, dict]:
    """scores.json without its ``meta``, and the part of ``meta`` two equal runs share: config,
    code and input hashes (input paths, host, wall time and finish time differ by design)."""
    scores = json.loads(path.read_text())
    meta = scores.pop("meta")
    input_hashes = {name: sorted(files.values()) for name, files in meta["inputs"].items()}
    return scores, {"config_hash": meta["config_hash"], "code_hash": meta["code_hash"], "inputs": input_hashes}


def fail_with_output(what: str, result: subprocess.CompletedProcess) -> None:
    pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def slurm_cluster():
    """A cluster that answers, and the executor plugin installed (both fail loudly, never skip)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail('snakemake-executor-plugin-slurm is not installed: pip install -e ".[slurm]"')
    for command in (["sinfo", "-h"], ["sacct", "-n", "-X", "-S", "now"]):
        result = run_command(command, 30)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed: {result.stderr.strip()}\n"
                        "Start the local test cluster with: bash .ci/start_slurm.sh")


@pytest.fixture(scope="module")
def local_run_process(tmp_path_factory):
    """The reduced smoke workflow run locally, the reference for the Slurm run, started at once:
    it runs while the Slurm run mostly waits on the scheduler. Yields (results dir, process, log)."""
    tmp_path = tmp_path_factory.mktemp("local")
    config, _ = write_config(tmp_path, "smoke.yaml", one_run)
    log_path = tmp_path / "snakemake.log"
    command = ["timeout", "-k", "10", str(WORKFLOW_TIMEOUT_S),
               sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    yield tmp_path / "results", process, log_path
    if process.poll() is None:
        process.terminate()  # `timeout` passes SIGTERM on to snakemake, and SIGKILL 10 s later
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def local_run(local_run_process):
    """(results dir, planned jobs per rule) of the finished local run."""
    results, process, log_path = local_run_process
    returncode = process.wait(timeout=WORKFLOW_TIMEOUT_S + 60)
    output = log_path.read_text()
    if returncode != 0:
        pytest.fail(f"the local smoke run failed ({returncode}):\n{output[-4000:]}")
    return results, job_stats(output)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, local_run_process, tmp_path_factory):
    """The same workflow through the Slurm executor: (results dir, output, sacct row per job, config)."""
    tmp_path = tmp_path_factory.mktemp("slurm")
    config, raw = write_config(tmp_path, "smoke.yaml", one_run)
    result = slurm_snakemake(config, tmp_path)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        fail_with_output("the Slurm smoke run", result)
    job_ids = submitted_slurm_jobs(output)
    assert job_ids, "the Slurm executor submitted nothing"
    return tmp_path / "results", output, sacct_rows(job_ids), raw


# ------------------------------------------------------------------ tests
def test_every_job_is_submitted_with_sbatch_and_completes(slurm_run, local_run):
    _, output, rows, _ = slurm_run
    _, planned = local_run
    submitted = Counter(rule_of(row["Comment"]) for row in rows)
    expected = Counter({rule: count for rule, count in planned.items() if rule not in LOCAL_RULES})
    assert submitted == expected, "each job the local run ran (snapshots aside) is one Slurm job"
    assert len(rows) == len(submitted_slurm_jobs(output)), "sacct knows every job the executor submitted"
    not_completed = [(row["JobID"], row["Comment"], row["State"]) for row in rows if row["State"] != "COMPLETED"]
    assert not not_completed
    assert {(row["Account"], row["Partition"]) for row in rows} == {(ACCOUNT, default_partition())}


def test_each_job_asks_slurm_for_the_resources_its_rule_declares(slurm_run):
    """Memory, time limit, CPUs and GPUs of every job, as Slurm recorded them, equal what Snakemake
    resolved for the job (the rule's ``resources:`` and ``threads:``, the profile's defaults)."""
    _, output, rows, raw = slurm_run
    declared = declared_resources(output)
    for row in rows:
        job = declared[row["JobID"]]
        requested = tres(row)
        assert requested["mem"] == f"{job['mem_mb']}M", (job["rule"], row["ReqTRES"])
        assert int(row["TimelimitRaw"]) == int(job["runtime"]), (job["rule"], row["TimelimitRaw"])
        assert int(requested["cpu"]) == job["threads"], (job["rule"], row["ReqTRES"])
        assert "gres/gpu" not in requested and job["gpu"] == "0", f"{job['rule']}: a GPU request on a cpu config"
    # And those are the figures pipeline/workflow.py gives each stage kind.
    workflow = Workflow.from_snakemake_config(raw)
    by_rule = {job["rule"]: job for job in declared.values()}
    for rule, kind in [("grpo", "grpo"), ("base_model", "base_model"), ("sft", "sft"), ("prepare_data", "light")]:
        expected = workflow.resources(kind)
        assert (int(by_rule[rule]["mem_mb"]), int(by_rule[rule]["runtime"])) == (expected["mem_mb"], expected["runtime"])


def test_slurm_results_equal_a_local_run(slurm_run, local_run):
    slurm_results, _, _, _ = slurm_run
    local_results, _ = local_run
    metrics = sorted(p.relative_to(local_results) for p in local_results.rglob("metrics.jsonl"))
    scores = sorted(p.relative_to(local_results) for p in local_results.rglob("scores.json"))
    assert metrics and scores
    for relative in metrics:
        records = metric_records(local_results / relative)
        assert any(record["grad_norm"] > 0 for record in records), f"{relative}: GRPO never updated, nothing to compare"
        assert metric_records(slurm_results / relative) == records, relative
    for relative in scores:
        slurm_scores, slurm_meta = scores_and_provenance(slurm_results / relative)
        local_scores, local_meta = scores_and_provenance(local_results / relative)
        assert slurm_scores == local_scores, relative
        assert slurm_meta == local_meta, relative
    # The trained weights, byte for byte, and the evaluated completions, not only their summary.
    weights = sorted(p.relative_to(local_results) for p in local_results.rglob("*.safetensors"))
    assert len(weights) >= 3, "base model, SFT and GRPO weights"
    for relative in weights:
        assert (slurm_results / relative).read_bytes() == (local_results / relative).read_bytes(), relative
    for relative in scores:
        samples = relative.with_name("samples.jsonl")
        assert (slurm_results / samples).read_text() == (local_results / samples).read_text(), samples


def test_a_gpu_rule_asks_slurm_for_the_gpus_the_config_names(slurm_cluster, tmp_path):
    """With ``device: cuda`` the base-model rule declares a GPU; the fake-GPU node accepts the request.

    The job itself fails on this CPU machine; what is checked is what it asked Slurm for.
    """
    config, raw = write_config(tmp_path, "cuda.yaml", lambda c: c.update(device="cuda"))
    expected_gpus = Workflow.from_snakemake_config(raw).resources("base_model")["gpu"]
    assert expected_gpus == 1
    target = str(tmp_path / "results" / "models" / "tiny" / "model")
    result = slurm_snakemake(config, tmp_path, target)
    output = result.stdout + result.stderr
    job_ids = submitted_slurm_jobs(output)
    if not job_ids:
        fail_with_output("submitting the cuda config", result)
    rows = {rule_of(row["Comment"]): row for row in sacct_rows(job_ids)}
    assert "base_model" in rows, f"the base-model job was never submitted:\n{output[-4000:]}"
    gpu_job = rows["base_model"]
    assert tres(gpu_job).get("gres/gpu") == str(expected_gpus), gpu_job["ReqTRES"]
    # It ran (and failed: no CUDA here) on the node's fake GPU: the request was accepted as is.
    assert gpu_job["State"] in {"COMPLETED", "FAILED"}, gpu_job["State"]
    assert tres(gpu_job, "AllocTRES").get("gres/gpu") == str(expected_gpus), gpu_job["AllocTRES"]
    assert "gres/gpu" not in tres(rows["prepare_data"]), "a job that holds no model asks for no GPU"
