# gamer-mril: disability classification and relevance maps from quantitative MRI.
# The method: docs/method.md; the rules: rules/*.smk; the logic: the gamer_mril package.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version, validate

min_version("9.0")

#: This workflow's folder. With --use-conda, the rule environments (envs/*.yaml) install
#: the package from GAMER_MRIL_ROOT: this folder unless the variable is already set (to
#: another clone, or a pip requirement such as git+https://...@v0.1.0).
WORKFLOW_ROOT = workflow.current_basedir.get_path_or_uri(secret_free=True)
os.environ.setdefault("GAMER_MRIL_ROOT", WORKFLOW_ROOT)

try:
    import gamer_mril
except ImportError:
    raise WorkflowError(
        "The Python package gamer_mril is not installed in the environment that runs "
        f"Snakemake; install it with: pip install -e {WORKFLOW_ROOT} (or run `make env` "
        "there and use .venv/bin/snakemake)."
    ) from None
if (
    not Path(gamer_mril.__file__)
    .resolve()
    .is_relative_to(Path(WORKFLOW_ROOT).resolve())
):
    logger.warning(
        f"The gamer_mril package in use ({Path(gamer_mril.__file__).parent}) is not this "
        f"workflow's own ({WORKFLOW_ROOT}/gamer_mril): check that it is the same version."
    )

# Snakemake's scheduler re-evaluated hundreds of times a second on a run of the demo's
# size (a chain of one-shot timers per finished job); one pending timer at a time does
# what they are for (gamer_mril/scheduling.py, bench/controller.py).
from gamer_mril.scheduling import coalesce_reevaluation

try:
    from snakemake.scheduling.job_scheduler import JobScheduler
except ImportError:  # another Snakemake layout: its scheduler as it is
    JobScheduler = None
if JobScheduler is not None and not coalesce_reevaluation(JobScheduler):
    logger.debug("gamer_mril.scheduling: Snakemake's scheduler left as it is")

# The jobs' memory allocator tuned for repeated large arrays (gamer_mril.jobs.MALLOC_TUNABLES).
from gamer_mril.jobs import MALLOC_TUNABLES

os.environ.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)


configfile: "config.yaml"


# The config checked with messages that name the file and key (gamer_mril/configcheck.py),
# number-like text read as numbers first; then Snakemake's validate fills in the defaults.
from gamer_mril.configcheck import check_config, config_sources
from gamer_mril.errors import ConfigError

if not workflow.modifier.skip_validation:
    try:
        for note in check_config(
            config,
            os.path.join(WORKFLOW_ROOT, "schemas", "config.schema.yaml"),
            config_sources(
                workflow.configfiles,
                workflow.config_settings.config,
                workflow.config_settings.configfiles,
            ),
        ):
            logger.info(f"config: {note}")
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/inputs.smk"
include: "rules/preprocessing.smk"
include: "rules/qc.smk"
include: "rules/training.smk"
include: "rules/relevance.smk"
include: "rules/assessment.smk"
include: "rules/audit.smk"
include: "rules/report.smk"


rule all:
    """The demo's default target: every session preprocessed, the models trained and
    evaluated (or, in frozen-model mode, every session predicted), every session's
    relevance maps and their assessment (assess_all needs every session's files)."""
    input:
        rules.preprocess_all.input,
        rules.train_all.input,
        rules.assess_all.input,
        for_analysed(S.reportlet("relevance")),
        rules.session_index.output,
        rules.dataset_description.output,
