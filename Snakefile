# gamer-mril: disability classification and relevance maps from quantitative MRI.
# The method: METHOD.md; the rules: rules/*.smk; the logic: the gamer_mril package.
import os

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")

# Scripts run in their own Python processes: make the package importable there too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [workflow.basedir] + [p for p in [os.environ.get("PYTHONPATH")] if p]
)


include: "rules/common.smk"
include: "rules/preprocessing.smk"


rule all:
    """Everything the workflow makes so far: every session preprocessed."""
    input:
        rules.preprocess_all.input,
        OUT + "/dataset_description.json",
