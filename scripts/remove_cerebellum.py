"""Rule remove_cerebellum (step 7): the network's inputs."""
from gamer_mril.layout import KEY, TEMPLATE_XFM_KEYS
from gamer_mril.preprocessing import run_remove_cerebellum

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_remove_cerebellum({c: i[k] for c, k in KEY.items()}, i.mask,
                      {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS}, i.cerebellum,
                      {c: o[k] for c, k in KEY.items()}, o.cerebellum, o.cerebrum,
                      subject=w.subject, session=w.session,
                      log_file=snakemake.log[0], threads=snakemake.threads)
