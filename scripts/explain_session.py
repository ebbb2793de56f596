"""METHOD.md 6 and the per-session part of 7 for one session: the relevance maps of every
scenario, their quantile masks, voxel inverting and the top-N masks in MNI152 (xai/)."""
from pathlib import Path

from gamer_mril.jobs import job
from gamer_mril.session_jobs import explain_session

i, p = snakemake.input, snakemake.params
with job(snakemake) as j:
    dirs = {int(Path(w).parent.name.split("-", 1)[1]): Path(w).parent for w in i.weights}
    explain_session(j, snakemake.output[0], i.anat, dirs,
                    None if p.frozen_models else i.split, p.age, dict(p.items()))
