"""Step 1 (METHOD.md 2.1): units, range and [0, 1] scaling of one map."""
from gamer_mril.jobs import job
from gamer_mril.preprocessing import step_scale

SUFFIX_CONTRAST = {"T1map": "qT1", "MWFmap": "MWF", "NDImap": "NDI"}

with job(snakemake) as j:
    out = snakemake.output.image
    facts = step_scale(snakemake.input.image, out, SUFFIX_CONTRAST[snakemake.wildcards.suffix],
                       snakemake.params.unit, j.session)
    j.sidecar(out, facts)
