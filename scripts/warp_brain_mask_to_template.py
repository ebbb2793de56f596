"""Quality control: the session's brain mask warped to MNI152."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_warp_mask_to_template

i = snakemake.input
with job(snakemake) as j:
    xfm = {"affine": i.affine, "warp": i.warp, "inverse_warp": i.inverse_warp}
    facts = step_warp_mask_to_template(i.mask, xfm, snakemake.params.template_resolution,
                                       snakemake.output.mask)
    j.sidecar(snakemake.output.mask, facts)
