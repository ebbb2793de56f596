# Report pages (docs/outputs.md, "Report pages"): one HTML page per session, as NiPreps
# write theirs, referencing its reportlets by relative path, and the index of the pages,
# the one item of the Quality control category besides the QC table in Snakemake's
# report. The logic: gamer_mril/session_page.py.


localrules:
    session_report,
    session_index,


rule session_report:
    """A session's page (docs/outputs.md): its QC row beside the cohort's medians, the
    flag and its reasons, the key facts of its steps' sidecars (scaling, co-registration,
    the relevance map's model, probability and attention) and its reportlets, referenced
    by relative path (ses-Y/figures/...), never embedded. An analysed session's page shows
    its relevance map and reportlet too; one that qc.exclude or qc.exclude_flagged leaves
    out has neither (known once the checkpoint analysed_sessions has run)."""
    input:
        unpack(relevance_of_analysed),
        **{name: S.reportlet(name) for name in layout.REPORTLETS},
        **{f"scaled_{c}": p for c, p in SCALED.items()},
        **{f"coreg_{c}": p for c, p in XFM_TO_NDI.items()},
        qc_table=QC_TABLE,
        excluded_table=EXCLUDED_TABLE,
    output:
        html=S.page,
    log:
        log_path("session_report"),
    benchmark:
        bench_path("session_report")
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        report=REPORT_HTML,
        index=SESSION_INDEX,
    script:
        "../scripts/session_report.py"


rule session_index:
    """Every session of the QC table with its flag, reasons and figures, linked to its
    page: the Quality control category of the report. The caption lists the pages again
    with links relative to the report (params.links), which work where the index's own
    cannot: the report embeds the index as a data: URI, where no relative link resolves.
    """
    input:
        qc_table=QC_TABLE,
        excluded_table=EXCLUDED_TABLE,
        pages=for_sessions(S.page),
    output:
        html=report(
            SESSION_INDEX,
            caption="../report/sessions.rst",
            category="Quality control",
        ),
    log:
        f"{OUT}/logs/session_index.log",
    benchmark:
        f"{OUT}/benchmarks/session_index.tsv"
    conda:
        "../envs/preprocessing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        links={
            f"sub-{s} ses-{t}": os.path.relpath(
                layout.Session(OUT, s, t).page, os.path.dirname(REPORT_HTML)
            )
            for s, t in zip(SESSIONS["subject"], SESSIONS["session"])
        },
    script:
        "../scripts/session_index.py"
