"""Rule skull_strip (step 2a): the mask that strips the head, on the qT1 grid."""
from gamer_mril.preprocessing_jobs import run_skull_strip

i, w = snakemake.input, snakemake.wildcards
run_skull_strip(i.qT1, snakemake.output.mask, skullstrip=snakemake.params.skullstrip,
                given_mask=i.given[0] if i.given else None, subject=w.subject,
                session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
