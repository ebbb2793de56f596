"""The MNI152 cerebellum mask (AAL3, widened by the configured margin), made once."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_template_cerebellum

with job(snakemake) as j:
    facts = step_template_cerebellum(snakemake.params.margin_mm, snakemake.output.mask)
    j.sidecar(snakemake.output.mask, facts)
