"""Rule select_participants: the validated rows of the sessions this run uses."""
from gamer_mril.inputs import run_select_participants

p = snakemake.params
run_select_participants(snakemake.input.table, snakemake.output.tsv, selection=p.selection,
                        maps=p.maps, brain_mask=p.brain_mask, log_file=snakemake.log[0])
