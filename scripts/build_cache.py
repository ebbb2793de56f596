"""Rule build_cache: every session's network inputs in one memory-mapped array."""
from gamer_mril.layout import KEY
from gamer_mril.training import run_build_cache

i, o = snakemake.input, snakemake.output
run_build_cache(i.table, {c: list(i[k]) for c, k in KEY.items()}, o.images, o.index,
                log_file=snakemake.log[0], threads=snakemake.threads)
