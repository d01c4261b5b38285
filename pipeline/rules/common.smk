import sys

sys.path.insert(0, workflow.basedir)  # the pipeline package, also when not pip-installed

from pipeline.config import ConfigError
from pipeline.workflow import Workflow, wildcard_pattern

try:
    # Validates before any job runs; a bad key stops here and nothing is written.
    W = Workflow.from_snakemake_config(config, write=True)
except ConfigError as error:
    sys.stderr.write(f"\n{error}\n\n")
    raise SystemExit(1)

P = W.paths
PY = sys.executable


wildcard_constraints:
    dataset=wildcard_pattern(W.cfg.datasets),
    base=wildcard_pattern(W.cfg.models),
    run=wildcard_pattern(W.cfg.runs),
    bench=wildcard_pattern(W.cfg.evaluation.benches),
    policy="sft|grpo",
