# r1zero: a cached R1-Zero reproduction workflow.
#   snakemake --cores 2                              the embedded default (pipeline/config/default.yaml)
#   snakemake --cores 2 --configfile my.yaml         another experiment
#   snakemake -n                                     what would run
# Every rule calls a stage module through the shell (python -m stages.<name>), so each stage
# also runs by hand; see README.md for the artefact layout.
include: "pipeline/rules/common.smk"
include: "pipeline/rules/data.smk"
include: "pipeline/rules/models.smk"
include: "pipeline/rules/train.smk"
include: "pipeline/rules/eval.smk"
include: "pipeline/rules/report.smk"


rule all:
    default_target: True
    input:
        W.all_targets(),
