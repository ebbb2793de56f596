# gamer-mril: disability classification and relevance maps from quantitative MRI.
# The method: METHOD.md; the rules: rules/*.smk; the logic: the gamer_mril package.
from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")

include: "rules/common.smk"
include: "rules/inputs.smk"
include: "rules/preprocessing.smk"
include: "rules/training.smk"
include: "rules/relevance.smk"
include: "rules/assessment.smk"
include: "rules/audit.smk"


rule all:
    """The demo's default target: every session preprocessed, the models trained and
    evaluated (or, in frozen-model mode, every session predicted), every session's
    relevance maps and their assessment (assess_all needs every session's files)."""
    input:
        rules.preprocess_all.input,
        rules.train_all.input,
        rules.assess_all.input,
        rules.dataset_description.output,
