# Evaluation in cells: each (policy or GRPO snapshot step) x bench is its own generate job and its own
# score job, so adding a bench or a checkpoint costs only the new cells, and changing a reward
# weight (the score snapshot) rescores cached samples without generating again.

_missing_bench_data = W.missing_bench_data()
if _missing_bench_data:
    # Before any job starts: a preset bench whose rows are not on this machine.
    sys.stderr.write("\n" + "\n".join(_missing_bench_data) + "\n\n")
    raise SystemExit(1)


rule prepare_bench:
    input:
        snapshot=P.config_snapshot("eval/{bench}/data"),
        code=W.stage_code("stages.bench_data"),
    output:
        data=P.bench_data("{bench}"),
        stats=P.bench_data("{bench}", "stats.json"),
        meta=P.bench_data("{bench}", "meta.json"),
    log:
        P.log("prepare_bench", "{bench}"),
    benchmark:
        P.benchmark("prepare_bench", "{bench}")
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    shell:
        "python -m stages.bench_data --config {input.snapshot} "
        "--output data={output.data} --output stats={output.stats} --output meta={output.meta} 2> {log}"


rule generate_base:
    input:
        snapshot=P.config_snapshot("eval/{bench}/generate"),
        code=W.stage_code("stages.evaluate"),
        model=P.base_model("{base}"),
        data=lambda wildcards: W.bench_data_path(wildcards.bench),
    output:
        samples=P.base_eval("{base}", "{bench}", "samples.jsonl"),
    log:
        P.log("generate", "base-{base}-{bench}"),
    benchmark:
        P.benchmark("generate", "base-{base}-{bench}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **W.resources("evaluate"),
    shell:
        "python -m stages.evaluate --config {input.snapshot} --input model={input.model} --input data={input.data} "
        "--output samples={output.samples} --threads {threads} 2> {log}"


rule generate:
    input:
        snapshot=P.config_snapshot("eval/{bench}/generate"),
        code=W.stage_code("stages.evaluate"),
        model=lambda wildcards: W.policy_model(wildcards.run, wildcards.policy),
        data=lambda wildcards: W.bench_data_path(wildcards.bench),
    output:
        samples=P.run_eval("{run}", "{policy}", "{bench}", "samples.jsonl"),
    log:
        P.log("generate", "{run}-{policy}-{bench}"),
    benchmark:
        P.benchmark("generate", "{run}-{policy}-{bench}")
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **W.resources("evaluate"),
    shell:
        "python -m stages.evaluate --config {input.snapshot} --input model={input.model} --input data={input.data} "
        "--output samples={output.samples} --threads {threads} 2> {log}"


rule generate_step:
    input:
        snapshot=P.config_snapshot("eval/{bench}/generate"),
        code=W.stage_code("stages.evaluate"),
        snapshots=P.grpo_snapshots("{run}"),
        data=lambda wildcards: W.bench_data_path(wildcards.bench),
    output:
        samples=P.run_eval("{run}", "step_{step}", "{bench}", "samples.jsonl"),
    log:
        P.log("generate", "{run}-step_{step}-{bench}"),
    benchmark:
        P.benchmark("generate", "{run}-step_{step}-{bench}")
    wildcard_constraints:
        step=r"\d{6}",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        **W.resources("evaluate"),
    params:
        # The step's HF directory inside the snapshots directory output of the grpo rule.
        model=lambda wildcards, input: f"{input.snapshots}/step_{wildcards.step}",
    shell:
        "python -m stages.evaluate --config {input.snapshot} --input model={params.model} --input data={input.data} "
        "--output samples={output.samples} --threads {threads} 2> {log}"


rule score_base:
    input:
        snapshot=P.config_snapshot("eval/{bench}/score"),
        code=W.stage_code("stages.score"),
        samples=P.base_eval("{base}", "{bench}", "samples.jsonl"),
        data=lambda wildcards: W.bench_data_path(wildcards.bench),
    output:
        scores=P.base_eval("{base}", "{bench}", "scores.json"),
    log:
        P.log("score", "base-{base}-{bench}"),
    benchmark:
        P.benchmark("score", "base-{base}-{bench}")
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    shell:
        "python -m stages.score --config {input.snapshot} --input samples={input.samples} --input data={input.data} "
        "--output scores={output.scores} 2> {log}"


rule score:
    input:
        snapshot=P.config_snapshot("eval/{bench}/score"),
        code=W.stage_code("stages.score"),
        samples=P.run_eval("{run}", "{policy}", "{bench}", "samples.jsonl"),
        data=lambda wildcards: W.bench_data_path(wildcards.bench),
    output:
        scores=P.run_eval("{run}", "{policy}", "{bench}", "scores.json"),
    log:
        P.log("score", "{run}-{policy}-{bench}"),
    benchmark:
        P.benchmark("score", "{run}-{policy}-{bench}")
    wildcard_constraints:
        policy=r"sft|grpo|step_\d{6}",
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    shell:
        "python -m stages.score --config {input.snapshot} --input samples={input.samples} --input data={input.data} "
        "--output scores={output.scores} 2> {log}"
