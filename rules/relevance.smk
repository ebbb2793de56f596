# Relevance maps of every assessed session (docs/method.md#6-layer-wise-relevance-propagation)
# and the per-session part of their assessment (docs/method.md#7-assessment): one rule per
# step, every output a file Snakemake knows. Every session of the table is assessed:
# validation sessions by their fold's model, test (and frozen-mode) sessions by the best
# fold's model (gamer_mril/explain.py: choose_model).
# Not grouped on a cluster (unlike the preprocessing chain): these jobs depend on the
# cohort's training, and Snakemake checks a group against everything upstream of it, so
# a group here would make planning grow with the square of the number of sessions.


rule explain_session:
    """docs/method.md#6-layer-wise-relevance-propagation: one session, one forward pass
    shared by all requested scenarios: LRP from the attention weights and from f(x) with
    the proposed and the LRP-all product rules, individual and combined maps, saliency and
    integrated gradients; each map in the cropped grid and put back in the NDI grid."""
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
        ig_steps=REL["ig_steps"],
    script:
        "../scripts/explain_session.py"


rule quantile_masks:
    """docs/method.md#72-quantile-masks: every scenario's top-N quantile masks (N in
    assessment.levels) as one level image per scenario, and the mean normalized value of
    each contrast inside them (Tables III-IV)."""
    input:
        **PREPROC,
        relmaps=RELMAPS,
        cerebrum=S.cerebrum,
    output:
        masks=QMASKS,
        values=S.mask_values,
    log:
        log_path("quantile_masks"),
    benchmark:
        bench_path("quantile_masks")
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        levels=LEVELS,
    script:
        "../scripts/quantile_masks.py"


rule invert_session:
    """docs/method.md#73-voxel-inverting: voxel inverting (x -> 1 - x) inside every
    scenario's top-N masks, through the model that explains the session; its probability
    for each. At the control levels also inside the least-relevant-first mask and
    random masks of the same size in the cerebrum (docs/method.md#74-controls-and-uncertainty-of-voxel-inverting).
    """
    input:
        **PREPROC,
        **explaining_models(),
        masks=QMASKS,
        relmaps=RELMAPS,
        cerebrum=S.cerebrum,
    output:
        tsv=S.inverting,
    log:
        log_path("invert_session"),
    benchmark:
        bench_path("invert_session")
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=GPU,
    params:
        age=session_age,
        levels=LEVELS,
        control_levels=CONTROL_LEVELS,
        random_masks=ASM["random_masks"],
        seed=ASM["seed"],
    script:
        "../scripts/invert_session.py"


rule warp_top_masks:
    """docs/method.md#76-template-space-and-group-heatmaps: every scenario's top-N mask
    (N = assessment.heatmap_level) carried to MNI152 through the session's template
    transforms (nearest neighbour)."""
    input:
        **CROP_TO_TEMPLATE,
        masks=QMASKS,
        template_mask=OUTPUT_TEMPLATE["mask"],
    output:
        top=TOP_MASKS,
    log:
        log_path("warp_top_masks"),
    benchmark:
        bench_path("warp_top_masks")
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        levels=LEVELS,
        level=HEAT,
    script:
        "../scripts/warp_top_masks.py"


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
    """Every session's relevance maps and their per-session assessment."""
    input:
        ANALYSED_TABLE,
        for_analysed(RELMAPS),
        for_analysed(RELMAPS_NDI),
        for_analysed(S.inverting),
        for_analysed(S.mask_values),
        for_analysed(TOP_MASKS),
