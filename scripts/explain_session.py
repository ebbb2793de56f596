"""Rule explain_session: every requested scenario's relevance map of one session."""
from gamer_mril.explain import run_explain_session
from gamer_mril.modelfiles import model_dirs

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_explain_session([i.qT1, i.MWF, i.NDI], i.box,
                    model_dirs(i.weights),
                    i.get("split"),
                    o.crop, o.ndi, scenarios=p.scenarios, age=p.age, ig_steps=p.ig_steps,
                    smoothgrad_samples=p.smoothgrad_samples,
                    smoothgrad_noise=p.smoothgrad_noise, smoothgrad_seed=p.smoothgrad_seed,
                    gamma=p.gamma, ig_reference_sigma_mm=p.ig_reference_sigma_mm,
                    subject=w.subject, session=w.session,
                    log_file=snakemake.log[0], threads=snakemake.threads)
