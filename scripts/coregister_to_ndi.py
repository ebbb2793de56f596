"""Rule coregister_to_ndi (step 3): qT1 and MWF each registered to NDI."""
from gamer_mril.preprocessing_jobs import run_coregister_to_ndi

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_coregister_to_ndi(i.NDI, {"qT1": i.qT1, "MWF": i.MWF},
                      {"qT1": o.qT1, "MWF": o.MWF}, coregistration=p.coregistration,
                      seed=p.seed, max_centre_distance_mm=p.max_centre_distance_mm,
                      subject=w.subject, session=w.session,
                      log_file=snakemake.log[0], threads=snakemake.threads)
