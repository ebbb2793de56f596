# Relevance maps of every assessed session: the twelve scenarios of Table I (METHOD.md 6),
# and the per-session part of their assessment (METHOD.md 7), in one job per session that
# writes the session's xai/ folder (gamer_mril/session_jobs.py). Every session of the
# table is assessed: validation sessions by their fold's model, test (and frozen-mode)
# sessions by the best fold's model; see gamer_mril/explain.py.
REL = config["relevance"]
SCENARIOS = [int(n) for n in REL["scenarios"]]

from gamer_mril.assessment import TABLE_III_LEVELS, TABLE_IV_LEVEL

ASM = config["assessment"]
LEVELS = [int(n) for n in ASM["levels"]]
HEAT = int(ASM["heatmap_level"])
_needed = sorted(set(TABLE_III_LEVELS) | {TABLE_IV_LEVEL, HEAT})
if sorted(LEVELS) != LEVELS or not set(_needed) <= set(LEVELS):
    raise WorkflowError(f"bad config: assessment.levels must be increasing and hold "
                        f"{_needed} (Tables III-IV and the heatmap level), got {LEVELS}")


rule explain_session:
    """One session, one forward pass shared by all requested scenarios: LRP from the
    attention weights and from f(x) with the proposed and the LRP-all product rules,
    individual and combined maps, saliency and integrated gradients, each map in the
    cropped grid and put back in the NDI grid (step explain_session); then each
    scenario's top-N quantile masks and mean normalized values (quantile_masks), voxel
    inverting through the same model (invert_session) and the top-N masks warped to
    MNI152 (warp_top_masks)."""
    input:
        **explain_inputs(),
    output:
        directory(XAI_DIR),
    params:
        age=session_age,
        scenarios=SCENARIOS,
        ig_steps=REL["ig_steps"],
        frozen_models=FROZEN,
        levels=LEVELS,
        heatmap_level=HEAT,
        template_resolution=PP["template_resolution"],
    log:
        log_path("explain_session"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if TR["gpu"] else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/explain_session.py"


rule explain_all:
    """Every session's relevance maps and their per-session assessment."""
    input:
        for_sessions(XAI_DIR),
