rule prepare_data:
    input:
        snapshot=P.config_snapshot("data/{dataset}"),
        code=W.stage_code("stages.prepare_data"),
    output:
        train=P.data("{dataset}", "train"),
        test=P.data("{dataset}", "test"),
        stats=P.data_stats("{dataset}"),
        meta=P.data_meta("{dataset}"),
    log:
        P.log("prepare_data", "{dataset}"),
    benchmark:
        P.benchmark("prepare_data", "{dataset}")
    conda:
        CONDA_ENV
    resources:
        **W.resources("light"),
    shell:
        "python -m stages.prepare_data --config {input.snapshot} "
        "--output train={output.train} --output test={output.test} --output stats={output.stats} --output meta={output.meta} 2> {log}"
