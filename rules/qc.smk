# Quality control (docs/method.md#28-quality-control-numbers): the cohort's QC table with
# its flags, every session's reportlets (nireports SVG figures, in the report's Quality
# control category), and the sessions qc.exclude and qc.exclude_flagged leave out of
# training and assessment (a checkpoint). The logic: gamer_mril/qc.py,
# gamer_mril/exclusion.py and gamer_mril/reportlets.py.


localrules:
    analysed_sessions,


rule preprocessing_qc:
    """One row per session: non-finite, clipped, negative and physically impossible
    voxels, brain and cerebellum volumes, the co-registered maps' similarity with NDI,
    Dice and Jaccard of the warped brain mask with the template's (read from the step
    sidecars), the crop's cut of the brain and each map's voxel size, and a flag with its
    reasons when a figure leaves robust bounds (below five sessions: NMI against an
    absolute floor), too much of a map is impossible, the crop cut too much of the brain
    or a map is much coarser than NDI (docs/method.md#28-quality-control-numbers).
    """
    input:
        table=PARTICIPANTS,
        brain_mask=for_sessions(S.native_brain_mask),
        scaled=[for_sessions(p) for p in SCALED.values()],
        ndi_grid=[for_sessions(NDI_GRID[k]) for k in XFM_TO_NDI],
        cerebellum=for_sessions(S.cerebellum),
        template_mask=for_sessions(S.template_brain_mask),
        crop_mask=for_sessions(S.crop_grid("mask")),
    output:
        tsv=report(
            QC_TABLE,
            caption="../report/preprocessing_qc.rst",
            category="Quality control",
        ),
    log:
        f"{OUT}/logs/preprocessing_qc.log",
    benchmark:
        f"{OUT}/benchmarks/preprocessing_qc.tsv"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        min_dice=QC.min_dice,
        mad_limit=QC.mad_limit,
        max_clipped_share=QC.max_clipped_share,
        max_crop_cut_share=QC.max_crop_cut_share,
    script:
        "../scripts/preprocessing_qc.py"


rule qc_reportlets:
    """A session's preprocessing reportlets (docs/method.md#28-quality-control-numbers):
    brain mask contour on qT1, qT1 and MWF against NDI after co-registration (flickers),
    the session's qT1 in MNI152 against the template, the cerebellum removed."""
    input:
        qT1=SCALED["qT1"],
        native_mask=S.native_brain_mask,
        NDI=NDI_GRID["NDI"],
        qT1_ndi=NDI_GRID["qT1"],
        MWF_ndi=NDI_GRID["MWF"],
        ndi_mask=S.ndi_grid("mask"),
        qT1_crop=CROP_GRID["qT1"],
        crop_mask=S.crop_grid("mask"),
        cerebellum=S.cerebellum,
        qT1_template=S.template_t1map,
        template_t1w=OUTPUT_TEMPLATE["t1w"],
        template_mask=OUTPUT_TEMPLATE["mask"],
    output:
        **{
            name: report(
                S.reportlet(name),
                caption=f"../report/reportlet_{name}.rst",
                category="Quality control",
                subcategory="sub-{subject} ses-{session}",
                labels={
                    "subject": "{subject}",
                    "session": "{session}",
                    "figure": name,
                },
            )
            for name in layout.REPORTLETS
        },
    log:
        log_path("qc_reportlets"),
    benchmark:
        bench_path("qc_reportlets")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reportlet_cuts=QC.reportlet_cuts,
    script:
        "../scripts/qc_reportlets.py"


rule relevance_reportlet:
    """The chosen scenario's top-N mask (N = assessment.heatmap_level) over the session's
    NDI map (docs/method.md#76-template-space-and-group-heatmaps). The chosen scenario is
    the cohort's: a new choice redraws every session's."""
    input:
        masks=QMASKS,
        NDI=CROP_GRID["NDI"],
        crop_mask=S.crop_grid("mask"),
        chosen=CHOSEN,
    output:
        svg=report(
            S.reportlet("relevance"),
            caption="../report/reportlet_relevance.rst",
            category="Quality control",
            subcategory="sub-{subject} ses-{session}",
            labels={
                "subject": "{subject}",
                "session": "{session}",
                "figure": "relevance",
            },
        ),
    log:
        log_path("relevance_reportlet"),
    benchmark:
        bench_path("relevance_reportlet")
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        heatmap_level=HEAT,
    script:
        "../scripts/relevance_reportlet.py"


checkpoint analysed_sessions:
    """The selected sessions without those of qc.exclude and those with a QC flag of a kind
    in qc.exclude_flagged (docs/method.md#28-quality-control-numbers): the table every
    training and assessment rule reads. A checkpoint: the flags exist only once every
    session is preprocessed, so the jobs of the analysed sessions are planned after it
    has run. The sidecar and the excluded-sessions table name each session left out, why
    and by which setting; the excluded sessions stay preprocessed and in the QC table.
    """
    input:
        table=PARTICIPANTS,
        qc=QC_TABLE if QC.exclude_flagged else [],
    output:
        tsv=ANALYSED_TABLE,
        excluded=report(
            EXCLUDED_TABLE,
            caption="../report/excluded_sessions.rst",
            category="Quality control",
        ),
    log:
        f"{OUT}/logs/analysed_sessions.log",
    benchmark:
        f"{OUT}/benchmarks/analysed_sessions.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        exclude={f"sub-{s}_ses-{t}": reason for (s, t), reason in EXCLUDED.items()},
        exclude_flagged=list(QC.exclude_flagged),
    script:
        "../scripts/analysed_sessions.py"
