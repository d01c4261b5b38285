rule sft:
    input:
        snapshot=P.config_snapshot("runs/{run}/sft"),
        code=W.stage_code("stages.sft"),
        model=lambda wildcards: P.base_model(W.cfg.runs[wildcards.run].base),
        data=lambda wildcards: W.sft_data(wildcards.run),
    output:
        model=directory(P.sft_model("{run}")),
    log:
        P.log("sft", "{run}"),
    benchmark:
        P.benchmark("sft", "{run}")
    wildcard_constraints:
        run=wildcard_pattern(W.single_node_runs()),
    # Training before evaluation when both are ready: a run's SFT and GRPO are its longest path,
    # and the evaluation cells fill the cores that a finished run frees.
    priority: 10
    conda:
        CONDA_ENV
    threads: lambda wildcards: W.train_threads(wildcards.run)
    resources:
        **W.train_resources("sft"),
    params:
        launch=lambda wildcards: W.launcher(wildcards.run, "stages.sft"),
    shell:
        "{params.launch} --config {input.snapshot} --input model={input.model} --input data={input.data} "
        "--output model={output.model} --threads {threads} 2> {log}"


rule grpo:
    input:
        snapshot=P.config_snapshot("runs/{run}/grpo"),
        code=W.stage_code("stages.grpo"),
        model=lambda wildcards: W.grpo_start_model(wildcards.run),
        train=lambda wildcards: P.data(W.cfg.runs[wildcards.run].grpo.dataset, "train"),
    output:
        model=directory(P.grpo_model("{run}")),
        metrics=P.grpo_metrics("{run}"),
        snapshots=directory(P.grpo_snapshots("{run}")),
    log:
        P.log("grpo", "{run}"),
    benchmark:
        P.benchmark("grpo", "{run}")
    wildcard_constraints:
        run=wildcard_pattern(W.single_node_runs()),
    priority: 10
    conda:
        CONDA_ENV
    threads: lambda wildcards: W.train_threads(wildcards.run)
    resources:
        **W.train_resources("grpo"),
    params:
        scratch=lambda wildcards: P.grpo_scratch(wildcards.run),
        launch=lambda wildcards: W.launcher(wildcards.run, "stages.grpo"),
    shell:
        "{params.launch} --config {input.snapshot} --input model={input.model} --input train={input.train} "
        "--output model={output.model} --output metrics={output.metrics} --output snapshots={output.snapshots} "
        "--output scratch={params.scratch} "
        "--threads {threads} 2> {log}"


# Runs over several nodes: the same jobs, whose command starts its own ranks with srun (one
# torchrun per node, see W.launcher), so the Slurm job step must not wrap it in `srun -n1`.
use rule sft as sft_multinode with:
    wildcard_constraints:
        run=wildcard_pattern(W.multinode_runs()),
    resources:
        **W.multinode_resources("sft"),


use rule grpo as grpo_multinode with:
    wildcard_constraints:
        run=wildcard_pattern(W.multinode_runs()),
    resources:
        **W.multinode_resources("grpo"),
