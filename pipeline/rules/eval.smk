def _bench_data(wildcards):
    bench = W.cfg.evaluation.benches[wildcards.bench]
    return P.data(bench.dataset, bench.split)


rule evaluate_base:
    input:
        snapshot=P.config_snapshot("eval/{bench}"),
        module="stages/evaluate.py",
        model=P.base_model("{base}"),
        data=_bench_data,
    output:
        samples=P.base_eval("{base}", "{bench}", "samples.jsonl"),
        scores=P.base_eval("{base}", "{bench}", "scores.json"),
    threads: 1
    log:
        P.log("evaluate", "base-{base}-{bench}"),
    benchmark:
        P.benchmark("evaluate", "base-{base}-{bench}")
    shell:
        "{PY} -m stages.evaluate --config {input.snapshot} --input model={input.model} --input data={input.data} "
        "--output samples={output.samples} --output scores={output.scores} --threads {threads} 2> {log}"


rule evaluate:
    input:
        snapshot=P.config_snapshot("eval/{bench}"),
        module="stages/evaluate.py",
        model=lambda wildcards: W.policy_model(wildcards.run, wildcards.policy),
        data=_bench_data,
    output:
        samples=P.run_eval("{run}", "{policy}", "{bench}", "samples.jsonl"),
        scores=P.run_eval("{run}", "{policy}", "{bench}", "scores.json"),
    threads: 1
    log:
        P.log("evaluate", "{run}-{policy}-{bench}"),
    benchmark:
        P.benchmark("evaluate", "{run}-{policy}-{bench}")
    shell:
        "{PY} -m stages.evaluate --config {input.snapshot} --input model={input.model} --input data={input.data} "
        "--output samples={output.samples} --output scores={output.scores} --threads {threads} 2> {log}"
