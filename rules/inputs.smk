# The sessions a run uses: the participants table validated and narrowed to the config's
# participant/session labels (docs/method.md#1-inputs). Every cohort rule reads the
# selected table this rule writes, so a changed selection reruns what it changes.
# The logic: gamer_mril/inputs.py (run_select_participants). A local rule: it takes a
# second, and on a cluster it runs beside Snakemake instead of waiting in the queue.


localrules:
    select_participants,


rule select_participants:
    """The validated rows of the selected sessions (inputs: participant_label,
    exclude_participant_label, session_label, exclude_session_label), each checked to have
    its three maps; maps of unselected sessions are counted in the log and ignored."""
    input:
        table=RAW_PARTICIPANTS,
    output:
        tsv=PARTICIPANTS,
    log:
        f"{OUT}/logs/select_participants.log",
    benchmark:
        f"{OUT}/benchmarks/select_participants.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        selection={k: config["inputs"].get(k, []) for k in Selection.KEYS},
        # (functions: the patterns' {subject} and {session} are not this rule's wildcards)
        maps=lambda wildcards: config["inputs"]["maps"],
        brain_mask=lambda wildcards: config["inputs"].get("brain_mask"),
    script:
        "../scripts/select_participants.py"
