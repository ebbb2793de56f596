"""Rule make_brain_mask (step 2c): the brain mask on the qT1 grid."""
from gamer_mril.layout import TEMPLATE_XFM_KEYS
from gamer_mril.preprocessing_jobs import run_make_brain_mask

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
run_make_brain_mask(i.strip, {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                    i.template_mask, snakemake.output.mask, skullstrip=p.skullstrip,
                    given=bool(i.given), subject=w.subject, session=w.session,
                    log_file=snakemake.log[0], threads=snakemake.threads)
