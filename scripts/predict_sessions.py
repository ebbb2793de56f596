"""Rule predict_sessions (frozen-model mode): every session scored by every fold model."""
from gamer_mril.modelfiles import model_dirs
from gamer_mril.training import run_predict_sessions

i, o = snakemake.input, snakemake.output
run_predict_sessions(i.images, list(model_dirs(i.weights).values()), o.predictions,
                     o.performance, threads=snakemake.threads, log_file=snakemake.log[0])
