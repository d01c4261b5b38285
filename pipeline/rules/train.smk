def _sft_data(wildcards):
    sft = W.cfg.runs[wildcards.run].sft
    return P.data(sft.dataset, "train") if sft.source == "tiny_traces" else sft.path


rule sft:
    input:
        snapshot=P.config_snapshot("runs/{run}/sft"),
        module="stages/sft.py",
        model=lambda wildcards: P.base_model(W.cfg.runs[wildcards.run].base),
        data=_sft_data,
    output:
        model=directory(P.sft_model("{run}")),
    threads: 1
    log:
        P.log("sft", "{run}"),
    benchmark:
        P.benchmark("sft", "{run}")
    shell:
        "{PY} -m stages.sft --config {input.snapshot} --input model={input.model} --input data={input.data} "
        "--output model={output.model} --threads {threads} 2> {log}"


rule grpo:
    input:
        snapshot=P.config_snapshot("runs/{run}/grpo"),
        module="stages/grpo.py",
        model=lambda wildcards: W.grpo_start_model(wildcards.run),
        train=lambda wildcards: P.data(W.cfg.runs[wildcards.run].grpo.dataset, "train"),
    output:
        model=directory(P.grpo_model("{run}")),
        metrics=P.grpo_metrics("{run}"),
    params:
        scratch=lambda wildcards: P.grpo_scratch(wildcards.run),
    threads: 1
    log:
        P.log("grpo", "{run}"),
    benchmark:
        P.benchmark("grpo", "{run}")
    shell:
        "{PY} -m stages.grpo --config {input.snapshot} --input model={input.model} --input train={input.train} "
        "--output model={output.model} --output metrics={output.metrics} --output scratch={params.scratch} "
        "--threads {threads} 2> {log}"
