# `snakemake --report report.zip` collects the items flagged with report() below: every plot and
# table of each run's report and of the comparison, with the captions in pipeline/report/.
report: "../report/workflow.rst"


REPORT_ITEMS = ["{name}.png", "{name}.csv"]  # inside each report directory: plots, and tables as CSV


rule report:
    input:
        snapshot=P.config_snapshot("report"),
        code=W.stage_code("stages.report"),
        metrics=P.grpo_metrics("{run}"),
        scores=lambda wildcards: W.scores_of_run(wildcards.run),
        step_scores=lambda wildcards: W.step_scores_of_run(wildcards.run),
        sft=lambda wildcards: [P.sft_model(wildcards.run)] if W.cfg.runs[wildcards.run].sft else [],
    output:
        report=report(
            directory(P.report("{run}")),
            patterns=REPORT_ITEMS,
            caption="../report/run_report.rst",
            category="Runs",
            subcategory="{run}",
        ),
    log:
        P.log("report", "{run}"),
    benchmark:
        P.benchmark("report", "{run}")
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    params:
        scores=lambda wildcards, input: " ".join(f"--input scores={path}" for path in input.scores),
        step_scores=lambda wildcards, input: " ".join(f"--input step_scores={path}" for path in input.step_scores),
        sft=lambda wildcards, input: " ".join(f"--input sft_metrics={path}/sft_metrics.jsonl" for path in input.sft),
        # Archived training rollouts (scratch beside the grpo outputs, read for example completions).
        rollouts=lambda wildcards: f"{P.grpo_scratch(wildcards.run)}/rollouts",
    shell:
        "python -m stages.report --config {input.snapshot} --input metrics={input.metrics} {params.scores} "
        "{params.step_scores} {params.sft} --input rollouts={params.rollouts} --output report={output.report} 2> {log}"


# A seeded run (runs.<run>.seeds): one report at results/{group}/report over all its seed runs.
rule report_seeds:
    input:
        snapshot=P.config_snapshot("report/{group}"),
        code=W.stage_code("stages.report"),
        metrics=lambda wildcards: [P.grpo_metrics(run) for run in W.seed_runs(wildcards.group)],
        scores=lambda wildcards: W.scores_of_group(wildcards.group),
        step_scores=lambda wildcards: W.step_scores_of_group(wildcards.group),
        sft=lambda wildcards: [P.sft_model(run) for run in W.seed_runs(wildcards.group) if W.cfg.runs[run].sft],
    output:
        report=report(
            directory(P.report("{group}")),
            patterns=REPORT_ITEMS,
            caption="../report/seeds_report.rst",
            category="Runs",
            subcategory="{group}",
        ),
    log:
        P.log("report", "{group}"),
    benchmark:
        P.benchmark("report", "{group}")
    wildcard_constraints:
        group=wildcard_pattern(W.cfg.seed_groups()),
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    params:
        metrics=lambda wildcards, input: " ".join(f"--input metrics={path}" for path in input.metrics),
        scores=lambda wildcards, input: " ".join(f"--input scores={path}" for path in input.scores),
        step_scores=lambda wildcards, input: " ".join(f"--input step_scores={path}" for path in input.step_scores),
        sft=lambda wildcards, input: " ".join(f"--input sft_metrics={path}/sft_metrics.jsonl" for path in input.sft),
        rollouts=lambda wildcards: " ".join(
            f"--input rollouts={P.grpo_scratch(run)}/rollouts" for run in W.seed_runs(wildcards.group)
        ),
    shell:
        "python -m stages.report --config {input.snapshot} {params.metrics} {params.scores} {params.step_scores} "
        "{params.sft} {params.rollouts} --output report={output.report} 2> {log}"


rule compare:
    input:
        snapshot=P.config_snapshot("compare"),
        code=W.stage_code("stages.compare"),
        # One metrics file per run compared, or per seed run of a seeded run, in that order.
        metrics=[P.grpo_metrics(run) for run in W.compare_members()],
        scores=sorted({path for run in W.compare_members() for path in W.scores_of_run(run)}),
        step_scores=[path for run in W.compare_members() for path in W.step_scores_of_run(run)],
    output:
        report=report(
            directory(P.compare(W.cfg.compare.name)),
            patterns=REPORT_ITEMS,
            caption="../report/compare.rst",
            category="Comparison",
        ),
    log:
        P.log("compare", W.cfg.compare.name),
    benchmark:
        P.benchmark("compare", W.cfg.compare.name)
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    params:
        metrics=lambda wildcards, input: " ".join(f"--input metrics={path}" for path in input.metrics),
        scores=lambda wildcards, input: " ".join(f"--input scores={path}" for path in input.scores),
        step_scores=lambda wildcards, input: " ".join(f"--input step_scores={path}" for path in input.step_scores),
    shell:
        "python -m stages.compare --config {input.snapshot} {params.metrics} {params.scores} {params.step_scores} "
        "--output report={output.report} 2> {log}"
