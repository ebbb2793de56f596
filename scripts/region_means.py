"""Rule region_means: the session's mean of each network input per AAL3 region."""
from gamer_mril import CONTRASTS
from gamer_mril.baselines import run_region_means
from gamer_mril.layout import TEMPLATE_XFM_KEYS

i, w = snakemake.input, snakemake.wildcards
run_region_means({c: i[c] for c in CONTRASTS}, i.cerebrum,
                 {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                 snakemake.output.tsv, subject=w.subject, session=w.session,
                 log_file=snakemake.log[0], threads=snakemake.threads)
