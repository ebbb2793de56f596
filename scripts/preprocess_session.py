"""METHOD.md 2 for one session: steps 1-7 and the QC warp, into the session's anat/."""
from gamer_mril.jobs import job
from gamer_mril.session_jobs import preprocess_session

i, p = snakemake.input, snakemake.params
with job(snakemake, seed=p.seed) as j:
    preprocess_session(j, snakemake.output[0],
                       {"qT1": i.t1map, "MWF": i.mwfmap, "NDI": i.ndimap}, i.cerebellum,
                       dict(p.items()), given_mask=next(iter(getattr(i, "given", [])), None))
