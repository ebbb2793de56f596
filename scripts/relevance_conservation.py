"""Rule relevance_conservation: the LRP maps' conservation records over the cohort."""
from gamer_mril.explain import run_relevance_conservation

run_relevance_conservation(list(snakemake.input.maps), snakemake.output.per_map,
                           snakemake.output.summary, log_file=snakemake.log[0],
                           threads=snakemake.threads)
