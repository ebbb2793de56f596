"""Rule qc_reportlets: a session's preprocessing reportlets (nireports SVG)."""
from gamer_mril.layout import REPORTLETS
from gamer_mril.reportlets import run_qc_reportlets

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
run_qc_reportlets(dict(i.items()), {name: o[name] for name in REPORTLETS},
                  reportlet_cuts=snakemake.params.reportlet_cuts, subject=w.subject, session=w.session,
                  log_file=snakemake.log[0], threads=snakemake.threads)
