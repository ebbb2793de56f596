"""Rule template_maps: the session's network inputs in MNI152, for the voxel screen."""
from gamer_mril import CONTRASTS
from gamer_mril.baselines import run_template_maps
from gamer_mril.layout import TEMPLATE_XFM_KEYS

i, w = snakemake.input, snakemake.wildcards
run_template_maps({c: i[c] for c in CONTRASTS},
                  {k: v for k, v in i.items() if k in TEMPLATE_XFM_KEYS},
                  snakemake.output.maps,
                  screen_voxel_mm=snakemake.params.screen_voxel_mm, subject=w.subject,
                  session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
