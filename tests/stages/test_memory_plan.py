"""The memory plan: fixture parameter counts, hand-computed bytes, a measured CPU peak, the
start-up check (stops before weights load, names the fix, writes nothing) and ``r1zero plan``."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import cli
from stages.core import memory_plan as mp
from stages.core.memory_plan import (
    GiB,
    DeviceSpec,
    Distributed,
    Generation,
    PlanError,
    TrainingSettings,
    check_stage_fits,
    model_shape,
    plan_training,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "pipeline" / "config").glob("*.yaml"))

# Published sizes (model cards: "Number of Parameters") and the config.json facts each fixture
# must carry. Counts are from the meta-device build, so a wrong width or layer count fails here.
PUBLISHED = {
    "Qwen2.5-0.5B": (0.494e9, 151936, True),
    "Qwen2.5-1.5B": (1.54e9, 151936, True),
    "Qwen2.5-3B": (3.09e9, 151936, True),
    "Qwen2.5-7B": (7.62e9, 152064, False),
    "Qwen2.5-32B": (32.8e9, 152064, False),
    "Qwen2.5-Math-1.5B": (1.54e9, 151936, True),
}

# A model small enough to count by hand: V=100, H=16, 2 layers, 4 heads of 4, 2 KV heads, I=32, tied.
TINY = {"model_type": "qwen2", "vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 32, "tie_word_embeddings": True, "max_position_embeddings": 64}
TINY_PARAMS = (
    100 * 16  # embedding (the tied head is the same tensor)
    + 2 * (
        (16 * 16 + 16)  # q_proj with bias
        + 2 * (16 * 8 + 8)  # k_proj, v_proj: 2 kv heads x 4 dims, with bias
        + 16 * 16  # o_proj, no bias
        + 3 * 16 * 32  # gate, up, down
        + 2 * 16  # two RMSNorm weights
    )
    + 16  # final norm
)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_fixture_matches_the_published_model(name):
    count, vocab, tied = PUBLISHED[name]
    shape = model_shape(f"Qwen/{name}")
    assert abs(shape.num_params - count) / count < 0.005, shape.num_params
    assert (shape.vocab_size, shape.tie_word_embeddings) == (vocab, tied)
    raw = json.loads((mp.FIXTURES_DIR / f"{name}.json").read_text())
    assert raw["torch_dtype"] == "bfloat16" and raw["model_type"] == "qwen2"


def test_math_model_has_the_short_context_of_qwen25_math():
    # Qwen2.5-Math was trained with a 4k context and rope theta 10,000 (why Dr. GRPO caps at 3,000 new tokens).
    raw = mp.load_model_config("Qwen/Qwen2.5-Math-1.5B")
    assert (raw["max_position_embeddings"], raw["rope_theta"]) == (4096, 10000.0)


def test_parameter_optimizer_and_gradient_bytes_by_hand():
    shape = model_shape(TINY, name="tiny")
    assert shape.num_params == TINY_PARAMS == 6352
    settings = TrainingSettings(dtype="bfloat16", micro_batch_seqs=2, seq_tokens=8, completion_tokens=4)
    plan = plan_training(shape, settings, DeviceSpec("cpu", 64 * GiB))
    assert plan.components["weights"] == 4 * TINY_PARAMS  # float32 master weights
    assert plan.components["gradients"] == 4 * TINY_PARAMS
    assert plan.components["optimizer"] == 8 * TINY_PARAMS  # AdamW m and v in float32
    assert plan.components["autocast copies"] == 2 * TINY_PARAMS  # bf16 casts cached by autocast


def test_float32_has_no_autocast_copies_and_a_reference_is_in_the_dtype():
    shape = model_shape(TINY, name="tiny")
    fp32 = plan_training(shape, TrainingSettings(dtype="float32", micro_batch_seqs=1, seq_tokens=8, completion_tokens=4,
                                                 reference=True), DeviceSpec("cpu", 64 * GiB))
    assert "autocast copies" not in fp32.components and fp32.components["reference"] == 4 * TINY_PARAMS
    bf16 = plan_training(shape, TrainingSettings(dtype="bfloat16", micro_batch_seqs=1, seq_tokens=8, completion_tokens=4,
                                                 reference=True), DeviceSpec("cpu", 64 * GiB))
    assert bf16.components["reference"] == 2 * TINY_PARAMS


@pytest.mark.parametrize("stage, weights, grads, optimizer", [
    (1, 2, 2, 16 / 4),  # ZeRO-1: only the fp32 master + moments + grad partition are split
    (2, 2, 2 / 4, 16 / 4),  # ZeRO-2: gradients too
    (3, 2 / 4, 2 / 4, 16 / 4),  # ZeRO-3: parameters too
])
def test_zero_stages_shard_by_hand(stage, weights, grads, optimizer):
    shape = model_shape(TINY, name="tiny")
    settings = TrainingSettings(dtype="bfloat16", micro_batch_seqs=1, seq_tokens=8, completion_tokens=4,
                                distributed=Distributed(world_size=4, zero_stage=stage))
    plan = plan_training(shape, settings, DeviceSpec.gpu(80, 4))
    assert plan.components["weights"] == int(weights * TINY_PARAMS)
    assert plan.components["gradients"] == int(grads * TINY_PARAMS)
    assert plan.components["optimizer"] == int(optimizer * TINY_PARAMS)
    offloaded = plan_training(shape, settings.replace(distributed=Distributed(4, 3, True, True)), DeviceSpec.gpu(80, 4))
    assert offloaded.components["optimizer"] == offloaded.components["weights"] == 0


def test_activation_formula_by_hand():
    shape = model_shape(TINY, name="tiny")
    # bf16 under autocast: norms 4 x 4 B x H, projection inputs 5 x 2 B x H, attention 5 x 2 B x H, MLP 4 x 2 B x I.
    assert mp.activation_bytes_per_token_layer(shape, 2, 4, autocast=True) == 16 * 16 + 10 * 16 + 10 * 16 + 8 * 32
    # float32, no autocast: the attention and MLP inputs are shared (2 instead of 5 copies).
    assert mp.activation_bytes_per_token_layer(shape, 4, 4, autocast=False) == 16 * 16 + 8 * 16 + 20 * 16 + 16 * 32


def test_checkpointing_and_micro_batches_lower_activations():
    shape = model_shape("Qwen/Qwen2.5-1.5B")
    base = TrainingSettings(dtype="bfloat16", micro_batch_seqs=8, seq_tokens=2048, completion_tokens=1536)
    device = DeviceSpec.gpu(80)
    full = plan_training(shape, base, device).components["activations"]
    checkpointed = plan_training(shape, base.replace(gradient_checkpointing=True), device).components["activations"]
    half = plan_training(shape, base.replace(micro_batch_seqs=4), device).components["activations"]
    assert checkpointed < full / 5  # keeps one residual per layer instead of every saved tensor
    assert half == pytest.approx(full / 2, rel=0.01)
    budget = plan_training(shape, base.replace(max_tokens_per_micro_batch=4 * 2048), device).components["activations"]
    assert budget == half  # a token budget of 4 sequences plans like 4 sequences


def test_vllm_share_and_sleep_mode():
    shape = model_shape("Qwen/Qwen2.5-0.5B")
    gen = Generation("vllm", num_seqs=64, seq_tokens=1536, gpu_memory_utilization=0.4)
    settings = TrainingSettings(dtype="bfloat16", micro_batch_seqs=4, seq_tokens=1536, completion_tokens=1024, generation=gen)
    awake = plan_training(shape, settings, DeviceSpec.gpu(80))
    assert awake.components["vllm share"] == int(0.4 * 80 * GiB)
    assert "vllm share" in awake.phases["update"]
    asleep = plan_training(shape, settings.replace(generation=Generation("vllm", 64, 1536, 0.4, sleep_mode=True)), DeviceSpec.gpu(80))
    assert "vllm share" not in asleep.phases["update"] and "vllm share" in asleep.phases["generate"]
    assert "gradients" not in asleep.phases["generate"]  # zero_grad(set_to_none) frees them between steps


def test_hf_kv_cache_by_hand():
    shape = model_shape("Qwen/Qwen2.5-0.5B")  # 24 layers, 2 KV heads x 64 dims
    settings = TrainingSettings(dtype="bfloat16", micro_batch_seqs=1, seq_tokens=1000, completion_tokens=500,
                                generation=Generation("hf", num_seqs=10, seq_tokens=1000))
    plan = plan_training(shape, settings, DeviceSpec.gpu(80))
    kv = 10 * 1000 * 2 * 24 * 128 * 2  # seqs x tokens x (K, V) x layers x kv width x bf16
    last_logits = 10 * 151936 * 4 * 2
    assert plan.components["kv cache"] == kv + last_logits


def test_a_plan_that_does_not_fit_names_settings_that_do():
    shape = model_shape("Qwen/Qwen2.5-Math-1.5B")
    settings = TrainingSettings(dtype="bfloat16", micro_batch_seqs=64, seq_tokens=3500, completion_tokens=3000)
    device = DeviceSpec.gpu(80)
    plan = plan_training(shape, settings, device)
    assert not plan.fits and plan.suggestions
    assert "gradient_checkpointing: true" in plan.suggestions[0]
    # Every suggestion, applied, really fits.
    for suggestion in plan.suggestions:
        fixed = settings
        for change in suggestion.split(" + "):
            key, _, value = change.partition(": ")
            fixed = _apply(fixed, key, value, device)
        assert plan_training(shape, fixed, device).fits, suggestion


def _apply(settings: TrainingSettings, key: str, value: str, device: DeviceSpec) -> TrainingSettings:
    if key == "gradient_checkpointing":
        return settings.replace(gradient_checkpointing=True)
    if key == "micro_batch_size":
        return settings.replace(micro_batch_seqs=int(value))
    if key == "logprob_chunk_tokens":
        return settings.replace(logprob_chunk_tokens=int(value))
    if key == "distributed":
        words = value.split()
        stage = int(words[0].removeprefix("ZeRO-"))
        gpus = int(words[words.index("on") + 1])
        return settings.replace(distributed=Distributed(gpus, stage, "offload" in value, "parameter" in value))
    raise AssertionError(f"unexpected suggestion key {key}")


def test_distributed_block_reads_dicts_and_rejects_bad_values():
    assert Distributed.from_block({"gpus_per_node": 4, "nodes": 2, "zero_stage": 3}) == Distributed(8, 3)
    assert Distributed.from_block(None) == Distributed()
    with pytest.raises(ValueError, match="zero_stage"):
        Distributed(2, 4)
    with pytest.raises(ValueError, match="offload_param needs zero_stage: 3"):
        Distributed(2, 2, offload_param=True)


def test_unknown_model_names_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads.*data/model_configs"):
        mp.load_model_config("acme/not-a-model")


def test_hub_id_resolves_from_the_local_cache_before_the_fixtures(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({**TINY, "hidden_size": 32}))
    (tmp_path / "models--Qwen--Qwen2.5-0.5B" / "refs").mkdir()
    (tmp_path / "models--Qwen--Qwen2.5-0.5B" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert mp.load_model_config("Qwen/Qwen2.5-0.5B")["hidden_size"] == 32


def test_model_dir_and_pointer_artefact(tmp_path):
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY))
    pointer = tmp_path / "artefact"
    pointer.mkdir()
    (pointer / "source.json").write_text(json.dumps({"local_dir": str(model_dir)}))
    assert model_shape(pointer).num_params == model_shape(model_dir).num_params == TINY_PARAMS


# ---------------------------------------------------------------- the start-up check
def _grpo_snapshot(**overrides) -> dict:
    snapshot = {"dtype": "bfloat16", "prompts_per_step": 64, "group_size": 16, "max_new_tokens": 20000,
                "micro_batch_size": 64, "gradient_checkpointing": False, "logprob_chunk_tokens": 4096,
                "algorithm": {"preset": "dapo"}, "rollout": {"backend": "hf", "batch_size": None}}
    return {**snapshot, **overrides}


def test_check_stage_fits_stops_before_loading_and_names_the_fix(tmp_path):
    # The "model" is a bare config.json: loading weights would fail, so passing shows none are read.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((mp.FIXTURES_DIR / "Qwen2.5-7B.json").read_text())
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(PlanError) as caught:
        check_stage_fits("grpo", _grpo_snapshot(), model_dir, "cpu")
    message = str(caught.value)
    assert "stage grpo" in message and "GiB" in message and "usable on CPU RAM available" in message
    assert "Would fit with:" in message
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_check_stage_fits_passes_a_small_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    plan = check_stage_fits("grpo", _grpo_snapshot(prompts_per_step=2, group_size=2, max_new_tokens=16, micro_batch_size=2),
                            tmp_path, "cpu")
    assert plan.fits and plan.device.kind == "cpu"
    assert plan.device.memory_bytes == mp.available_ram_bytes() or plan.device.memory_bytes > 0
    sft = check_stage_fits("sft", {"dtype": "float32", "batch_size": 4}, tmp_path, "cpu", seq_tokens=64)
    assert sft.settings.micro_batch_tokens == 4 * 64
    with pytest.raises(ValueError, match="unknown stage 'ppo'"):
        check_stage_fits("ppo", {}, tmp_path, "cpu")


# ---------------------------------------------------------------- against a measured peak
MEASURE = textwrap.dedent('''
    import json, resource, sys
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    args = json.loads(sys.argv[1])
    torch.manual_seed(0)
    config = Qwen2Config(**args["config"])
    model = AutoModelForCausalLM.from_config(config)  # float32 weights, trained
    if args["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (args["seqs"], args["seq_tokens"]))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row, so transformers builds its attention mask as the stages do
    num_completion = args["completion_tokens"]
    for _ in range(2):  # the second step runs with the optimizer state allocated
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -num_completion - 1:-1]
        logits = model.lm_head(hidden).float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -num_completion:].unsqueeze(-1)).squeeze(-1)
        (-logp.mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del hidden, logits, logp
    print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
''')
MEASURED_MODEL = {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
                  "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 1024,
                  "tie_word_embeddings": False}


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True])
def test_plan_matches_a_measured_cpu_peak(checkpointing):
    """Peak RSS of two float32 training steps of a 55M-parameter Qwen2 (4 x 512 tokens, log-probs
    over 384 completion positions) against the plan. Tolerance 25%, the bar issue 8 sets for the
    real-size benchmark: RSS also holds allocator slack and library pages the plan does not model.
    Measured on the 2-core development machine (busy, load ~15): plan/measured 1.09 without
    checkpointing (2.71 GiB measured), 1.16 with (2.02 GiB); at 8 x 512 tokens 1.03 and 0.98.
    About 3 minutes each on that machine, hence ``slow``."""
    args = {"config": MEASURED_MODEL, "seqs": 4, "seq_tokens": 512, "completion_tokens": 384, "checkpointing": checkpointing}
    result = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(args)], capture_output=True, text=True,
                            check=True)
    measured = json.loads(result.stdout)["peak_rss_bytes"]
    shape = model_shape({**MEASURED_MODEL, "model_type": "qwen2"}, name="measured")
    settings = TrainingSettings(dtype="float32", micro_batch_seqs=4, seq_tokens=512, completion_tokens=384,
                                gradient_checkpointing=checkpointing, logprob_chunk_tokens=4 * 384)
    planned = plan_training(shape, settings, DeviceSpec("cpu", 64 * GiB)).peak_bytes
    assert abs(planned - measured) / measured < 0.25, (planned / GiB, measured / GiB)


# ---------------------------------------------------------------- r1zero plan
@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_r1zero_plan_prints_a_table_for_every_shipped_config(config, capsys):
    code = cli.main(["plan", str(config), "--gpus", "8", "--gpu-mem", "80", "--zero-stage", "3"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert "component" in out and "phase total" in out and "runs/" in out
    assert ("verdict: every stage fits" in out) == (code == 0)


def test_r1zero_plan_exits_nonzero_and_names_the_fix_when_a_stage_does_not_fit(capsys):
    code = cli.main(["plan", str(REPO / "pipeline" / "config" / "default.yaml"), "--gpus", "1", "--gpu-mem", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "DOES NOT FIT" in out and "would fit with:" in out


def test_r1zero_plan_bad_config_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherit_default: false\nruns: {}\n")
    assert cli.main(["plan", str(bad)]) == 2


def test_r1zero_plan_on_several_gpus_without_a_zero_stage_plans_data_parallel(capsys):
    config = REPO / "pipeline" / "config" / "nano_aha_moment_qwen2.5-3b.yaml"
    assert cli.main(["plan", str(config), "--gpus", "2", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert "2 ranks, ZeRO-0" in out and "fp32 master+m+v+grad / 1" in out  # replicated, nothing sharded
    assert cli.main(["plan", str(config), "--gpus", "2", "--gpu-mem", "80", "--zero-stage", "1"]) == 0
    assert "fp32 master+m+v+grad / 2" in capsys.readouterr().out


def test_prompt_length_reaches_the_start_up_plan(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    snapshot = _grpo_snapshot(prompts_per_step=2, group_size=2, max_new_tokens=16, micro_batch_size=2,
                              algorithm={"preset": "deepseekmath_grpo"})  # one minibatch of 4 sequences
    plan = check_stage_fits("grpo", snapshot, tmp_path, "cpu", prompt_tokens=100)
    assert plan.settings.seq_tokens == 116 and plan.settings.micro_batch_tokens == 2 * 116
    assert plan.settings.reference  # deepseekmath_grpo keeps a KL to the reference
    # The micro-batch never exceeds the minibatch: DAPO's 16 minibatches of 4 sequences hold 1 each.
    dapo = check_stage_fits("grpo", {**snapshot, "algorithm": {"preset": "dapo"}}, tmp_path, "cpu", prompt_tokens=100)
    assert dapo.settings.micro_batch_seqs == 1 and not dapo.settings.reference
