# Relevance maps of every assessed session (docs/method.md#6-layer-wise-relevance-propagation)
# and their conservation record: one rule per step, every output a file Snakemake knows
# (the per-session assessment of the maps is in rules/assessment.smk). Every session of the table is assessed:
# validation sessions by their fold's model, test (and frozen-mode) sessions by the best
# fold's model (gamer_mril/explain.py: choose_model).
# Not grouped on a cluster (unlike the preprocessing chain): these jobs depend on the
# cohort's training, and Snakemake checks a group against everything upstream of it, so
# a group here would make planning grow with the square of the number of sessions.


rule explain_session:
    """docs/method.md#6-layer-wise-relevance-propagation: one session, one forward pass
    shared by all requested scenarios: LRP from the attention weights and from f(x) with
    the proposed and the LRP-all product rules, individual and combined maps, saliency and
    integrated gradients; beyond the paper SmoothGrad, LRP with the gamma composites and
    integrated gradients from a smoothed reference; each map in the cropped grid and put
    back in the NDI grid."""
    input:
        **PREPROC,
        **explaining_models(),
        box=S.crop_box,
    output:
        crop=RELMAPS,
        ndi=RELMAPS_NDI,
    log:
        log_path("explain_session"),
    benchmark:
        bench_path("explain_session")
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        age=session_age,
        scenarios=SCENARIOS,
        ig_steps=REL.ig_steps,
        smoothgrad_samples=REL.smoothgrad_samples,
        smoothgrad_noise=REL.smoothgrad_noise,
        smoothgrad_seed=REL.smoothgrad_seed,
        gamma=REL.gamma,
        ig_reference_sigma_mm=REL.ig_reference_sigma_mm,
    script:
        "../scripts/explain_session.py"


rule relevance_conservation:
    """docs/method.md#6-layer-wise-relevance-propagation: every LRP map's conservation
    record (from its sidecar) in one table, and per scenario the median and the largest
    relative error over the cohort."""
    input:
        ANALYSED_TABLE,
        maps=for_analysed(RELMAPS) if WITH_LRP else [],
    output:
        per_map=CONSERVATION["per_map"],
        summary=report(
            CONSERVATION["summary"],
            caption="../report/conservation.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/relevance_conservation.log",
    benchmark:
        f"{OUT}/benchmarks/relevance_conservation.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/relevance_conservation.py"


rule explain_all:
    """Every session's relevance maps and their per-session assessment (the per-session
    rules of rules/assessment.smk)."""
    input:
        ANALYSED_TABLE,
        for_analysed(RELMAPS),
        for_analysed(RELMAPS_NDI),
        for_analysed(S.inverting),
        for_analysed(S.mask_values),
        for_analysed(TOP_MASKS),
