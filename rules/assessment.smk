# Assessment of the relevance maps (METHOD.md section 7): quantile masks, the voxel
# inverting experiment (Fig. 4), correlation with EDSS (Tables III, IV) and the group
# heatmaps in MNI152 (Fig. 6). The logic lives in gamer_mril/assessment.py.
# The assessment set is every session of the table: validation sessions are explained and
# re-run by their own fold's model, test (and frozen-mode) sessions by the best fold's.
from gamer_mril.assessment import TABLE_III_LEVELS, TABLE_IV_LEVEL

ASM = config["assessment"]
LEVELS = [int(n) for n in ASM["levels"]]
HEAT = int(ASM["heatmap_level"])
_needed = sorted(set(TABLE_III_LEVELS) | {TABLE_IV_LEVEL, HEAT})
if sorted(LEVELS) != LEVELS or not set(_needed) <= set(LEVELS):
    raise WorkflowError(f"bad config: assessment.levels must be increasing and hold "
                        f"{_needed} (Tables III-IV and the heatmap level), got {LEVELS}")
#: Scenarios of the paper's Fig. 6 (besides the chosen one), those computed.
FIG6_SCENARIOS = [n for n in (3, 4) if n in SCENARIOS]
HEATMAP_GROUPS = ("severe", "mild", "all")
GROUP = f"{OUT}/group"
INVERTING_AUC = f"{GROUP}/inverting_auc.tsv"
CHOSEN = f"{GROUP}/chosen_scenario.json"
PARTICIPANTS = config["inputs"]["participants"]


MASK_VALUES = bids("maskvalues", ext=".tsv", datatype="xai", space="NDIcrop")
INVERTING = bids("inverting", ext=".tsv", datatype="xai", space="NDIcrop")


rule quantile_masks:
    """Top-N quantile masks (N in assessment.levels) of every scenario of one session,
    within the cerebrum and over positive relevance; stored as one level image per
    scenario. Also the mean normalized value of each contrast in each mask."""
    input:
        t1map=crop_grid("T1map", "preproc"),
        mwfmap=crop_grid("MWFmap", "preproc"),
        ndimap=crop_grid("NDImap", "preproc"),
        cerebrum=bids("mask", space="NDIcrop", desc="cerebrum"),
        **{f"relmap_{n:02d}": relmap("NDIcrop", n) for n in SCENARIOS},
    output:
        **with_sidecars(**{f"mask_{n:02d}": qmask(n) for n in SCENARIOS}),
        values=MASK_VALUES,
    params:
        scenarios=SCENARIOS,
        levels=LEVELS,
    log:
        log_path("quantile_masks"),
    benchmark:
        bench_path("quantile_masks")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/quantile_masks.py"


rule invert_session:
    """Voxel inverting of one session (x -> 1 - x inside each top-N mask) re-run through
    the model that explains it: the probability of every scenario and N, and the
    uninverted baseline (scenario 0, N 0)."""
    input:
        unpack(invert_inputs),
    output:
        tsv=INVERTING,
    params:
        age=session_age,
        scenarios=SCENARIOS,
        levels=LEVELS,
        frozen_models=FROZEN,
    log:
        log_path("invert_session"),
    benchmark:
        bench_path("invert_session")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=1 if TR["gpu"] else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/invert_session.py"


rule voxel_inverting:
    """AUC over the assessment set after inverting, per scenario and N (Fig. 4)."""
    input:
        sessions=for_sessions(INVERTING),
        predictions=PREDICTIONS,
    output:
        tsv=report(INVERTING_AUC, caption="../report/inverting_auc.rst", category="Assessment"),
        figure=report(f"{GROUP}/fig4_inverting.png", caption="../report/fig4.rst", category="Assessment"),
    log:
        f"{OUT}/logs/voxel_inverting.log",
    benchmark:
        f"{OUT}/benchmarks/voxel_inverting.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/voxel_inverting.py"


rule correlations:
    """The scenario with the largest AUC drop at N = 40; Spearman correlation of the mean
    normalized value in the top-N mask with EDSS (Tables III and IV)."""
    input:
        values=for_sessions(MASK_VALUES),
        inverting=INVERTING_AUC,
        participants=PARTICIPANTS,
    output:
        chosen=CHOSEN,
        long=f"{GROUP}/correlations.tsv",
        table_iii=report(f"{GROUP}/table_iii.tsv", caption="../report/table_iii.rst", category="Assessment"),
        table_iv=report(f"{GROUP}/table_iv.tsv", caption="../report/table_iv.rst", category="Assessment"),
        figure=report(f"{GROUP}/correlations.png", caption="../report/correlations.rst", category="Assessment"),
    params:
        n_permutations=ASM["n_permutations"],
        seed=ASM["seed"],
    log:
        f"{OUT}/logs/correlations.log",
    benchmark:
        f"{OUT}/benchmarks/correlations.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/correlations.py"


rule warp_top_masks:
    """The top-N mask (N = assessment.heatmap_level) of every scenario of one session,
    warped to MNI152 with the session's saved transforms (nearest neighbour); one volume
    per contrast for individual maps."""
    input:
        **{f"mask_{n:02d}": qmask(n) for n in SCENARIOS},
        **TEMPLATE_XFM,
    output:
        **with_sidecars(**{f"top_{n:02d}": top_mask(n) for n in SCENARIOS}),
    params:
        scenarios=SCENARIOS,
        levels=LEVELS,
        level=HEAT,
        template_resolution=PP["template_resolution"],
    log:
        log_path("warp_top_masks"),
    benchmark:
        bench_path("warp_top_masks")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/warp_top_masks.py"


rule group_heatmaps:
    """Fraction of sessions whose top-N mask covers each MNI152 voxel, for severe, mild and
    all sessions, for every scenario (one volume per contrast for individual maps); the
    figure (Fig. 6) and the peaks table for the chosen scenario and scenarios 3 and 4."""
    input:
        chosen=CHOSEN,
        predictions=PREDICTIONS,
        **{f"top_{n:02d}": for_sessions(top_mask(n)) for n in SCENARIOS},
    output:
        **with_sidecars(**{f"heat_{n:02d}_{g}": heatmap(n, g) for n in SCENARIOS
                           for g in HEATMAP_GROUPS}),
        figure=report(f"{GROUP}/fig6_heatmaps.png", caption="../report/fig6.rst", category="Assessment"),
        peaks=report(f"{GROUP}/heatmap_peaks.tsv", caption="../report/heatmap_peaks.rst", category="Assessment"),
    params:
        scenarios=SCENARIOS,
        fig6_scenarios=FIG6_SCENARIOS,
        groups=list(HEATMAP_GROUPS),
        sessions=session_keys(),
        level=HEAT,
        template_resolution=PP["template_resolution"],
    log:
        f"{OUT}/logs/group_heatmaps.log",
    benchmark:
        f"{OUT}/benchmarks/group_heatmaps.tsv"
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/group_heatmaps.py"


rule assess_all:
    """Cohort-level target of the assessment (METHOD.md 7)."""
    input:
        rules.voxel_inverting.output,
        rules.correlations.output,
        rules.group_heatmaps.output,
