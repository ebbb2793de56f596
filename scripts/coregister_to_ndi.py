"""Rule coregister_to_ndi (step 3): qT1 and MWF each registered to NDI."""
from gamer_mril.preprocessing import run_coregister_to_ndi

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_coregister_to_ndi(i.ndimap, {"qT1": i.t1map, "MWF": i.mwfmap},
                      {"qT1": o.t1map, "MWF": o.mwfmap}, transform=p.transform, seed=p.seed,
                      subject=w.subject, session=w.session,
                      log_file=snakemake.log[0], threads=snakemake.threads,
                      max_centre_distance_mm=p.max_centre_distance_mm)
