def _pretrain_test_split(wildcards):
    pretrain = W.cfg.models[wildcards.base].pretrain
    return [P.data(pretrain.dataset, "test")] if pretrain else []


rule base_model:
    input:
        snapshot=P.config_snapshot("models/{base}"),
        module="stages/base_model.py",
        test=_pretrain_test_split,
    output:
        model=directory(P.base_model("{base}")),
    threads: 2
    log:
        P.log("base_model", "{base}"),
    benchmark:
        P.benchmark("base_model", "{base}")
    params:
        test=lambda wildcards, input: f"--input test={input.test[0]}" if input.test else "",
    shell:
        "{PY} -m stages.base_model --config {input.snapshot} {params.test} "
        "--output model={output.model} --threads {threads} 2> {log}"
