"""Rule remove_cerebellum (step 7): the network's inputs."""
from gamer_mril.layout import KEY
from gamer_mril.preprocessing import run_remove_cerebellum

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_remove_cerebellum({c: i[k] for c, k in KEY.items()}, i.mask,
                      {k: i[k] for k in ("affine", "warp", "inverse_warp")}, i.cerebellum,
                      {c: o[k] for c, k in KEY.items()}, o.cerebellum, o.cerebrum,
                      subject=w.subject, session=w.session,
                      log_file=snakemake.log[0], threads=snakemake.threads)
