"""Rule register_to_template (step 2b): MNI152 to the stripped qT1."""
from gamer_mril.preprocessing_jobs import run_register_to_template

i, o, p, w = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards
run_register_to_template(i.qT1, i.strip, i.template, dict(o.items()),
                         template_transform=p.template_transform, seed=p.seed, subject=w.subject,
                         session=w.session, log_file=snakemake.log[0],
                         threads=snakemake.threads)
