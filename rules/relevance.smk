# Relevance maps of every assessed session (METHOD.md 6) and the per-session part of their
# assessment (METHOD.md 7): one rule per step, every output a file Snakemake knows. Every
# session of the table is assessed: validation sessions by their fold's model, test (and
# frozen-mode) sessions by the best fold's model (gamer_mril/explain.py: choose_model).
# Not grouped on a cluster (unlike the preprocessing chain): these jobs depend on the
# cohort's training, and Snakemake checks a group against everything upstream of it, so
# a group here would make planning grow with the square of the number of sessions.


rule explain_session:
    """METHOD.md 6: one session, one forward pass shared by all requested scenarios: LRP
    from the attention weights and from f(x) with the proposed and the LRP-all product
    rules, individual and combined maps, saliency and integrated gradients; each map in
    the cropped grid and put back in the NDI grid."""
    input:
        **PREPROC,
        box=S.crop_box,
        **explaining_models(),
    output:
        **RELMAP_CROP,
        **RELMAP_NDI,
    params:
        age=session_age,
        ig_steps=REL["ig_steps"],
    log:
        log_path("explain_session"),
    benchmark:
        bench_path("explain_session")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/explain_session.py"


rule quantile_masks:
    """METHOD.md 7: every scenario's top-N quantile masks (N in assessment.levels) as
    one level image per scenario, and the mean normalized value of each contrast inside
    them (Tables III-IV)."""
    input:
        **PREPROC,
        cerebrum=S.cerebrum,
        **{k.replace("crop", "relmap"): v for k, v in RELMAP_CROP.items()},
    output:
        **QMASKS,
        values=S.mask_values,
    params:
        levels=LEVELS,
    log:
        log_path("quantile_masks"),
    benchmark:
        bench_path("quantile_masks")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/quantile_masks.py"


rule invert_session:
    """METHOD.md 7: voxel inverting (x -> 1 - x) inside every scenario's top-N masks,
    through the model that explains the session; its probability for each."""
    input:
        **PREPROC,
        **explaining_models(),
        **QMASKS,
    output:
        tsv=S.inverting,
    params:
        age=session_age,
        levels=LEVELS,
    log:
        log_path("invert_session"),
    benchmark:
        bench_path("invert_session")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=GPU,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/invert_session.py"


rule warp_top_masks:
    """METHOD.md 7: every scenario's top-N mask (N = assessment.heatmap_level) carried
    to MNI152 through the session's template transforms (nearest neighbour)."""
    input:
        **QMASKS,
        **TEMPLATE_XFM,
    output:
        **TOP_MASKS,
    params:
        levels=LEVELS,
        level=HEAT,
        template_resolution=PP["template_resolution"],
    log:
        log_path("warp_top_masks"),
    benchmark:
        bench_path("warp_top_masks")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/warp_top_masks.py"


rule explain_all:
    """Every session's relevance maps and their per-session assessment."""
    input:
        PARTICIPANTS,
        [for_sessions(p) for p in RELMAP_CROP.values()],
        for_sessions(S.inverting),
        for_sessions(S.mask_values),
        [for_sessions(p) for p in TOP_MASKS.values()],
