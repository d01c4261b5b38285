rule report:
    input:
        snapshot=P.config_snapshot("report"),
        module="stages/report.py",
        metrics=P.grpo_metrics("{run}"),
        scores=lambda wildcards: W.scores_of_run(wildcards.run),
        sft=lambda wildcards: [P.sft_model(wildcards.run)] if W.cfg.runs[wildcards.run].sft else [],
    output:
        report=directory(P.report("{run}")),
    log:
        P.log("report", "{run}"),
    params:
        scores=lambda wildcards, input: " ".join(f"--input scores={path}" for path in input.scores),
        sft=lambda wildcards, input: " ".join(f"--input sft_metrics={path}/sft_metrics.jsonl" for path in input.sft),
    shell:
        "{PY} -m stages.report --config {input.snapshot} --input metrics={input.metrics} {params.scores} {params.sft} "
        "--output report={output.report} 2> {log}"


rule compare:
    input:
        snapshot=P.config_snapshot("compare"),
        module="stages/compare.py",
        metrics=[P.grpo_metrics(run) for run in W.compare_runs()],
        scores=sorted({path for run in W.compare_runs() for path in W.scores_of_run(run)}),
    output:
        report=directory(P.compare(W.cfg.compare.name)),
    log:
        P.log("compare", W.cfg.compare.name),
    params:
        metrics=lambda wildcards, input: " ".join(f"--input metrics={path}" for path in input.metrics),
        scores=lambda wildcards, input: " ".join(f"--input scores={path}" for path in input.scores),
    shell:
        "{PY} -m stages.compare --config {input.snapshot} {params.metrics} {params.scores} "
        "--output report={output.report} 2> {log}"
