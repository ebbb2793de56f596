"""Rule remove_cerebellum (step 7): the network's inputs."""
from gamer_mril import CONTRASTS
from gamer_mril.layout import TEMPLATE_XFM_KEYS
from gamer_mril.preprocessing_jobs import run_remove_cerebellum

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_remove_cerebellum({c: i[c] for c in CONTRASTS}, i.mask,
                      {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS}, i.cerebellum,
                      {c: o[c] for c in CONTRASTS}, o.cerebellum, o.cerebrum,
                      subject=w.subject, session=w.session,
                      log_file=snakemake.log[0], threads=snakemake.threads)
