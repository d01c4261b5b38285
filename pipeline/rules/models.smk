rule base_model:
    input:
        snapshot=P.config_snapshot("models/{base}"),
        code=W.stage_code("stages.base_model"),
        test=lambda wildcards: W.pretrain_test_split(wildcards.base),
    output:
        model=directory(P.base_model("{base}")),
    log:
        P.log("base_model", "{base}"),
    benchmark:
        P.benchmark("base_model", "{base}")
    conda:
        CONDA_ENV
    threads: 2
    resources:
        **W.resources("base_model"),
    params:
        test=lambda wildcards, input: f"--input test={input.test[0]}" if input.test else "",
    shell:
        "python -m stages.base_model --config {input.snapshot} {params.test} "
        "--output model={output.model} --threads {threads} 2> {log}"
