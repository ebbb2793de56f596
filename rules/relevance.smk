# Relevance maps of every assessed session: the twelve scenarios of Table I (METHOD.md 6).
# Every session of the table is assessed: validation sessions by their fold's model, test
# (and frozen-mode) sessions by the best fold's model; see gamer_mril/explain.py.
REL = config["relevance"]
SCENARIOS = [int(n) for n in REL["scenarios"]]


rule explain_session:
    """All requested scenarios of one session in one job (one shared forward pass):
    LRP from the attention weights and from f(x) with the proposed and the LRP-all
    product rules, individual and combined maps, saliency and integrated gradients.
    Each map is written in the cropped grid and put back in the NDI grid."""
    input:
        unpack(explain_inputs),
    output:
        **with_sidecars(
            **{f"crop_{n:02d}": relmap("NDIcrop", n) for n in SCENARIOS},
            **{f"ndi_{n:02d}": relmap("NDI", n) for n in SCENARIOS},
        ),
    params:
        age=session_age,
        scenarios=SCENARIOS,
        ig_steps=REL["ig_steps"],
        frozen_models=FROZEN,
    log:
        log_path("explain_session"),
    benchmark:
        bench_path("explain_session")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1 if TR["gpu"] else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/explain_session.py"


rule explain_all:
    """Every session's relevance maps."""
    input:
        [for_sessions(relmap(space, n)) for space in ("NDIcrop", "NDI") for n in SCENARIOS],
