# Assessment of the relevance maps (docs/method.md#7-assessment): per session the quantile
# masks, voxel inverting through the explaining model and the top-N masks carried to
# MNI152; over the cohort the voxel inverting experiment (Fig. 4), correlation with EDSS
# (Tables III, IV) and the group heatmaps in MNI152 (Fig. 6).
# The assessment set is every analysed session (the table without qc.exclude's): validation
# sessions are explained and re-run by their own fold's model, test (and frozen-mode)
# sessions by the best fold's. Not grouped on a cluster (see rules/relevance.smk).
# The logic: gamer_mril/assessment/ (one module per section of the method).


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
        random_masks=ASM.random_masks,
        seed=ASM.seed,
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
        heatmap_level=HEAT,
    script:
        "../scripts/warp_top_masks.py"


rule warp_relevance:
    """docs/method.md#77-group-statistics-in-mni152: every scenario's relevance map, its
    positive part over the cerebrum divided by its sum there, carried to MNI152 on the
    voxel screen's grid (baselines.screen_voxel_mm) through the session's template
    transforms (linear)."""
    input:
        **CROP_TO_TEMPLATE,
        relmaps=RELMAPS,
        cerebrum=S.cerebrum,
    output:
        relnorm=RELNORM,
    log:
        log_path("warp_relevance"),
    benchmark:
        bench_path("warp_relevance")
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        screen_voxel_mm=config["baselines"]["screen_voxel_mm"],
    script:
        "../scripts/warp_relevance.py"


rule voxel_inverting:
    """AUC over the assessment set after inverting, per scenario and N (Fig. 4), with
    bootstrap intervals and the LeRF and random controls; per scenario the AOPC over
    assessment.choice_levels with its random band, the chosen scenario (assessment.choice)
    beside the paper's and the paired comparison with the chosen scenario
    (docs/method.md#74-controls-and-uncertainty-of-voxel-inverting).
    """
    input:
        sessions=for_analysed(S.inverting),
        predictions=PREDICTIONS,
    output:
        tsv=report(
            INVERTING_AUC, caption="../report/inverting_auc.rst", category="Assessment"
        ),
        figure=report(
            f"{GROUP}/fig4_inverting.png",
            caption="../report/fig4.rst",
            category="Assessment",
        ),
        scenarios=report(
            INVERTING_SCENARIOS,
            caption="../report/inverting_scenarios.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/voxel_inverting.log",
    benchmark:
        f"{OUT}/benchmarks/voxel_inverting.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        n_bootstrap=ASM.n_bootstrap,
        seed=ASM.seed,
        heatmap_level=HEAT,
        choice=ASM.choice,
        choice_levels=ASM.choice_levels,
    script:
        "../scripts/voxel_inverting.py"


rule correlations:
    """The scenario rule voxel_inverting chose (chosen_scenario.json, the paper's beside
    it); Spearman correlation of the mean normalized value in its top-N mask with EDSS
    (Tables III and IV)."""
    input:
        values=for_analysed(S.mask_values),
        inverting=INVERTING_SCENARIOS,
        participants=ANALYSED_TABLE,
    output:
        chosen=CHOSEN,
        long=f"{GROUP}/correlations.tsv",
        table_iii=report(
            f"{GROUP}/table_iii.tsv",
            caption="../report/table_iii.rst",
            category="Assessment",
        ),
        table_iv=report(
            f"{GROUP}/table_iv.tsv",
            caption="../report/table_iv.rst",
            category="Assessment",
        ),
        figure=report(
            f"{GROUP}/correlations.png",
            caption="../report/correlations.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/correlations.log",
    benchmark:
        f"{OUT}/benchmarks/correlations.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n_permutations=ASM.n_permutations,
        seed=ASM.seed,
        n_bootstrap=ASM.n_bootstrap,
        heatmap_level=HEAT,
        choice=ASM.choice,
        choice_levels=ASM.choice_levels,
    script:
        "../scripts/correlations.py"


rule group_heatmaps:
    """Fraction of sessions whose top-N mask covers each MNI152 voxel, for severe, mild and
    all sessions, for every scenario (one volume per contrast for individual maps); the
    figure (Fig. 6) and the peaks table for the chosen scenario and scenarios 3 and 4.
    """
    input:
        top=for_analysed(TOP_MASKS),
        chosen=CHOSEN,
        predictions=PREDICTIONS,
        template=OUTPUT_TEMPLATE["t1w"],
    output:
        **{
            f"heat_{n:02d}_{g}": heatmap(n, g)
            for n in SCENARIOS
            for g in HEATMAP_GROUPS
        },
        figure=report(
            f"{GROUP}/fig6_heatmaps.png",
            caption="../report/fig6.rst",
            category="Assessment",
        ),
        peaks=report(
            f"{GROUP}/heatmap_peaks.tsv",
            caption="../report/heatmap_peaks.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/group_heatmaps.log",
    benchmark:
        f"{OUT}/benchmarks/group_heatmaps.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        heatmaps={
            f"heat_{n:02d}_{g}": [n, g] for n in SCENARIOS for g in HEATMAP_GROUPS
        },
        fig6_scenarios=FIG6_SCENARIOS,
        groups=list(HEATMAP_GROUPS),
        heatmap_level=HEAT,
    script:
        "../scripts/group_heatmaps.py"


rule heatmap_viewer:
    """The chosen scenario's severe-group heatmap in nilearn's interactive viewer, and the
    t maps of the group tests of the chosen scenario and the input maps
    (docs/method.md#77-group-statistics-in-mni152), one self-contained HTML page
    (docs/method.md#76-template-space-and-group-heatmaps)."""
    input:
        **{f"heat_{n:02d}": heatmap(n, "severe") for n in SCENARIOS},
        **{f"rt_{n:02d}": relevance_stat(n, "t") for n in SCENARIOS},
        **{f"rpfwe_{n:02d}": relevance_stat(n, "pfwe") for n in SCENARIOS},
        **{f"it_{c}": input_stat(c, "t") for c in CONTRASTS},
        **{f"ipfwe_{c}": input_stat(c, "pfwe") for c in CONTRASTS},
        chosen=CHOSEN,
        template=OUTPUT_TEMPLATE["t1w"],
    output:
        html=report(
            f"{GROUP}/heatmap_viewer.html",
            caption="../report/heatmap_viewer.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/heatmap_viewer.log",
    benchmark:
        f"{OUT}/benchmarks/heatmap_viewer.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/heatmap_viewer.py"


rule group_relevance_stats:
    """docs/method.md#77-group-statistics-in-mni152: severe against mild at every voxel of
    the template cerebrum on every scenario's normalised relevance (one session per
    subject, age as covariate, Freedman-Lane permutations, FWE by the maximum |t|): group
    means, t, FWE and uncorrected p, the clusters, the figure."""
    input:
        relnorm=for_analysed(RELNORM),
        predictions=PREDICTIONS,
        participants=ANALYSED_TABLE,
        brain_mask=SCREEN_TEMPLATE["mask"],
        cerebellum=TEMPLATE_CEREBELLUM,
        template=OUTPUT_TEMPLATE["t1w"],
        chosen=CHOSEN,
    output:
        **{stat_key(n, k): relevance_stat(n, k) for n in SCENARIOS for k in GROUP_STATS},
        clusters=report(
            RELEVANCE_CLUSTERS,
            caption="../report/relevance_clusters.rst",
            category="Assessment",
        ),
        figure=report(
            f"{GROUP}/group_relevance_stats.png",
            caption="../report/group_relevance_stats.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/group_relevance_stats.log",
    benchmark:
        f"{OUT}/benchmarks/group_relevance_stats.tsv"
    conda:
        "../envs/training.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        outputs={stat_key(n, k): [n, k] for n in SCENARIOS for k in GROUP_STATS},
        fig_scenarios=FIG6_SCENARIOS,
        group_permutations=ASM.group_permutations,
        seed=ASM.seed,
    script:
        "../scripts/group_relevance_stats.py"


rule group_input_stats:
    """docs/method.md#77-group-statistics-in-mni152: the same test on the three network
    inputs in MNI152 (rule template_maps), the classical voxelwise analysis beside the
    network."""
    input:
        maps=for_analysed(S.template_maps),
        predictions=PREDICTIONS,
        participants=ANALYSED_TABLE,
        brain_mask=SCREEN_TEMPLATE["mask"],
        cerebellum=TEMPLATE_CEREBELLUM,
        template=OUTPUT_TEMPLATE["t1w"],
    output:
        **{stat_key(c, k): input_stat(c, k) for c in CONTRASTS for k in GROUP_STATS},
        clusters=report(
            INPUT_CLUSTERS,
            caption="../report/input_clusters.rst",
            category="Assessment",
        ),
        figure=report(
            f"{GROUP}/group_input_stats.png",
            caption="../report/group_input_stats.rst",
            category="Assessment",
        ),
    log:
        f"{OUT}/logs/group_input_stats.log",
    benchmark:
        f"{OUT}/benchmarks/group_input_stats.tsv"
    conda:
        "../envs/training.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        outputs={stat_key(c, k): [c, k] for c in CONTRASTS for k in GROUP_STATS},
        group_permutations=ASM.group_permutations,
        seed=ASM.seed,
    script:
        "../scripts/group_input_stats.py"


rule assess_all:
    """Cohort-level target of the assessment (docs/method.md#7-assessment)."""
    input:
        rules.voxel_inverting.output,
        rules.correlations.output,
        rules.group_heatmaps.output,
        rules.heatmap_viewer.output,
        rules.group_relevance_stats.output,
        rules.group_input_stats.output,
        rules.relevance_conservation.output,
