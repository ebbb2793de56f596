"""Rule make_brain_mask (step 2): the brain mask on the qT1 grid."""
from gamer_mril.preprocessing import run_make_brain_mask

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
run_make_brain_mask(i.t1map, snakemake.output.mask, method=p.method,
                    template_resolution=p.template_resolution, seed=p.seed,
                    given_mask=i.given[0] if i.given else None, subject=w.subject,
                    session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
