"""Rule voxel_inverting: AUC after voxel inverting per scenario and N (Fig. 4)."""
from gamer_mril.assessment import run_voxel_inverting

i, o = snakemake.input, snakemake.output
run_voxel_inverting(list(i.sessions), i.predictions, o.tsv, o.figure,
                    log_file=snakemake.log[0], threads=snakemake.threads)
