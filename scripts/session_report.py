"""Rule session_report: a session's page, its reportlets referenced by relative path."""
from gamer_mril.session_page import run_session_report

w, p = snakemake.wildcards, snakemake.params
run_session_report(dict(snakemake.input.items()), snakemake.output.html, report=p.report,
                   index=p.index, subject=w.subject, session=w.session,
                   log_file=snakemake.log[0], threads=snakemake.threads)
