"""Rule invert_session: voxel inverting of one session through its explaining model."""
from gamer_mril.modelfiles import model_dirs
from gamer_mril.assessment.inverting import run_invert_session

i, p, w = snakemake.input, snakemake.params, snakemake.wildcards
run_invert_session([i.qT1, i.MWF, i.NDI],
                   model_dirs(i.weights),
                   i.get("split"),
                   i.masks, snakemake.output.tsv, age=p.age, levels=p.levels,
                   relmaps=i.relmaps,
                   cerebrum=i.cerebrum, control_levels=p.control_levels,
                   random_masks=p.random_masks, seed=p.seed, subject=w.subject,
                   session=w.session, log_file=snakemake.log[0], threads=snakemake.threads)
