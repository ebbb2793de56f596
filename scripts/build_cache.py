"""Rule build_cache: every session's network inputs in one memory-mapped array."""
from gamer_mril import CONTRASTS
from gamer_mril.training import run_build_cache

i, o = snakemake.input, snakemake.output
run_build_cache(i.table, {c: list(i[c]) for c in CONTRASTS}, o.images, o.index,
                log_file=snakemake.log[0], threads=snakemake.threads)
