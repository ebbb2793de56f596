# Provenance audit as a workflow target (gamer_mril/audit.py):
#
#     snakemake audit                                         every final map of the run
#     snakemake audit --config audit_target=results/sub-001/ses-1/xai/...nii.gz
#     snakemake audit --config 'audit_target=[PATH, PATH]'
#
# The rule has no input and no output, so it is never pulled into `all` (or any other
# target) and Snakemake runs it every time it is named, whatever the files' dates; it
# reads the run's files as they are and schedules no other job. It runs where Snakemake
# runs (localrule), in the working directory that the sidecars' paths are relative to.
# Report: results/logs/audit.log (each named file's chain; for the default targets the
# problems only) and results/group/audit.tsv (one row per audited file); the problems
# and the summary are also printed. The job fails when a file is STALE or MISSING.
from gamer_mril.audit import run_audit


localrules:
    audit,


rule audit:
    """Provenance audit: walk each target's sidecars back to the raw inputs, re-hash
    every file, report OK, STALE (changed since recorded) or MISSING. Targets: config
    audit_target, else every session's network inputs and relevance maps (both grids)
    and the group heatmaps."""
    log:
        report=f"{OUT}/logs/audit.log",
        table=f"{GROUP}/audit.tsv",
    params:
        targets=lambda wc: config.get("audit_target") or default_audit_targets(),
    run:
        run_audit(
            params.targets,
            log.report,
            log.table,
            chains=bool(config.get("audit_target")),
        )
