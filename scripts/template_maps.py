"""Rule template_maps: the session's network inputs in MNI152, for the voxel screen."""
from gamer_mril.baselines import run_template_maps
from gamer_mril.layout import KEY, TEMPLATE_XFM_KEYS

i, w = snakemake.input, snakemake.wildcards
run_template_maps({c: i[k] for c, k in KEY.items()},
                  {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                  snakemake.output.maps,
                  voxel_mm=snakemake.params.voxel_mm, subject=w.subject,
                  session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
