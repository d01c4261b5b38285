import sys

sys.path.insert(0, workflow.basedir)  # the pipeline package, also when not pip-installed

from pipeline.config import ConfigError
from pipeline.workflow import Workflow, is_dry_run, wildcard_pattern

try:
    # Validates before any job runs; a bad key stops here and nothing is written.
    W = Workflow.from_snakemake_config(config)
except ConfigError as error:
    sys.stderr.write(f"\n{error}\n\n")
    raise SystemExit(1)

P = W.paths
if W.missing_inputs():
    # A hub model or dataset that no job could read stops the workflow here, before any job.
    sys.stderr.write("\n" + "\n".join(W.missing_inputs()) + "\n\n")
    raise SystemExit(1)
if is_dry_run(sys.argv):
    for key, why in W.stale_snapshots().items():
        sys.stderr.write(f"snapshot {key} ({why}): a real run writes it and reruns what reads it\n")
else:
    # Written before the DAG is built, so the rerun never depends on Snakemake's metadata records
    # (a copied results directory has none) nor on an old output at a new snapshot's consumer's
    # path (see Workflow.stale_snapshots).
    for key, why in W.sync_snapshots().items():
        sys.stderr.write(f"snapshot {key} ({why}): written, what reads it reruns\n")
# Rules run `python` from the environment the user activated (where `pip install -e .` put the
# dependencies); with --software-deployment-method conda, Snakemake builds this env instead.
CONDA_ENV = "../envs/r1zero.yaml"


wildcard_constraints:
    dataset=wildcard_pattern(W.cfg.datasets),
    base=wildcard_pattern(W.cfg.models),
    run=wildcard_pattern(W.cfg.runs),
    bench=wildcard_pattern(W.cfg.evaluation.benches),
    policy="sft|grpo",
    key=wildcard_pattern(W.snapshots),


# Each stage reads its own slice of the config from a snapshot file. The snapshot is this rule's
# output and its text is the rule's params, so Snakemake rewrites it only when the slice changes
# (rerun trigger "params") and a dry run writes nothing.
rule config_snapshot:
    output:
        P.config_snapshot("{key}"),
    log:
        P.log("config_snapshot", "{key}"),
    benchmark:
        P.benchmark("config_snapshot", "{key}")
    localrule: True
    conda:
        CONDA_ENV
    params:
        text=lambda wildcards: W.snapshots[wildcards.key],
    shell:
        "python -m pipeline.snapshot_cli {output:q} {params.text:q} > {log}"
