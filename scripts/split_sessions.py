"""METHOD.md 3: test subjects held out, then stratified subject-grouped folds."""
from gamer_mril.inputs import load_participants
from gamer_mril.jobs import job
from gamer_mril.split import make_split, write_split

with job(snakemake) as j:
    p = snakemake.params
    split = make_split(load_participants(snakemake.input.table), test_fraction=p.test_fraction,
                       n_folds=p.n_folds, seed=p.seed)
    write_split(split, snakemake.output.tsv)
    j.sidecar(snakemake.output.tsv, {"sessions_per_set": {k: int(v) for k, v in split["set"].value_counts().items()}})
