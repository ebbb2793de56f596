"""Rule scale_map (step 1): units, range and [0, 1] scaling of a session's three maps."""
from gamer_mril import CONTRASTS
from gamer_mril.preprocessing_jobs import run_scale_map

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_scale_map({c: i[c] for c in CONTRASTS}, {c: o[c] for c in CONTRASTS},
              dict(snakemake.params.units), subject=w.subject, session=w.session,
              log_file=snakemake.log[0], threads=snakemake.threads)
