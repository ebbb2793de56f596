#!/usr/bin/env python
"""The wall time of a paper-sized run, estimated from a short measured run.

    python bench/paper_scale.py [--device cpu|cuda] [--cores 16] [--gpus 1] [--nodes 1 4]

What it measures here (a few minutes on 2 cores):

1. **Preprocessing at the paper's resolution**: one synthetic subject generated at the
   paper's voxel size (``--scale 1``) run through the workflow's preprocessing rules
   (``bench/preprocess.py``); the CPU seconds of its steps (Snakemake's benchmark files,
   start-up and imports included) are the cost of one session.
2. **The network at 96 x 96 x 112** on ``--device``: forward and forward+backward per
   sample (``bench/train.py``'s case), which give an epoch (training sessions
   forward+backward, validation sessions forward).
3. **Relevance and voxel inverting** per session, in forward and forward+backward passes:
   all twelve scenarios cost ``--relevance-passes`` forward+backward passes (measured by
   ``bench/lrp.py``: about 37 at 32 integrated-gradient steps, docs/benchmarks.md), voxel
   inverting one forward per scenario and level plus one (12 x 9 + 1), and its controls
   one forward per scenario and control level for the LeRF mask and for each random mask
   (12 x 9 x 6 at the defaults).

The estimate (printed as a table per number of nodes): preprocessing spread over every
core of every node; training, one fold per GPU (or per node on CPUs), folds in parallel
where there are enough; relevance and inverting, one session per GPU at a time (or per
core on CPUs). Cohort-level jobs (tables, heatmaps, report) take a few minutes and are
not counted. The figures are only as good as the device they were measured on: run this
on the machine you plan for.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import preprocess  # bench/preprocess.py
import train       # bench/train.py

PAPER_SHAPE = (96, 96, 112)


def measure_preprocessing(cores: int) -> float:
    """CPU seconds of one session's preprocessing at the paper's resolution."""
    from gamer_mril.synthetic import generate_cohort

    with tempfile.TemporaryDirectory(prefix="paper-scale-") as tmp:
        cohort = Path(tmp) / "cohort"
        generate_cohort(cohort, n_subjects=1, followup_fraction=0.0, severe_fraction=0.0,
                        scale=1.0, seed=3, log=lambda *_: None)
        results, _, _ = preprocess.run(cohort, cores, PAPER_SHAPE)
        df = preprocess.read_benchmarks(results)
    return float(df.groupby("session")["cpu_seconds"].sum().mean())


def estimate(pre_cpu_s: float, fwd_s: float, fwd_bwd_s: float, *, sessions: int,
             epochs: int, folds: int, test_fraction: float, cores: int,
             gpus: int, nodes: int, relevance_passes: float, levels: int,
             scenarios: int, control_levels: int = 0, random_masks: int = 0) -> dict:
    """Wall seconds of each stage on ``nodes`` nodes of ``cores`` CPUs and ``gpus`` GPUs
    (0: the network runs on the CPUs, one job per core)."""
    cv_sessions = sessions * (1 - test_fraction)
    n_val = cv_sessions / folds
    n_train = cv_sessions - n_val
    epoch_s = n_train * fwd_bwd_s + n_val * fwd_s
    fold_s = epochs * epoch_s
    workers = nodes * gpus if gpus else nodes        # a CPU fold uses a whole node
    training = math.ceil(folds / workers) * fold_s
    inverting = scenarios * (levels + control_levels * (1 + random_masks)) + 1
    per_session = relevance_passes * fwd_bwd_s + inverting * fwd_s
    slots = nodes * gpus if gpus else nodes * cores
    return dict(preprocessing=sessions * pre_cpu_s / (nodes * cores), training=training,
                relevance=math.ceil(sessions / slots) * per_session,
                epoch=epoch_s, relevance_per_session=per_session)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="where the network is timed")
    ap.add_argument("--cores", type=int, default=16, help="CPU cores per node")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs per node (0: CPU only)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--sessions", type=int, default=232)
    ap.add_argument("--subjects", type=int, default=166)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--relevance-passes", type=float, default=37.0,
                    help="forward+backward passes of all twelve scenarios (bench/lrp.py)")
    ap.add_argument("--control-levels", type=int, default=9,
                    help="levels with the LeRF and random controls (assessment.control_levels)")
    ap.add_argument("--random-masks", type=int, default=5, help="assessment.random_masks")
    ap.add_argument("--measure-cores", type=int, default=2,
                    help="cores for the measured preprocessing run")
    ap.add_argument("--preprocessing-cpu-s", type=float, default=None,
                    help="skip the preprocessing run and use this per-session figure")
    ap.add_argument("--batch", type=int, default=None, help="batch of the network timing")
    args = ap.parse_args(argv)

    if args.preprocessing_cpu_s is None:
        print("measuring preprocessing of one session at the paper's resolution ...",
              file=sys.stderr, flush=True)
        pre = measure_preprocessing(args.measure_cores)
    else:
        pre = args.preprocessing_cpu_s
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    batch = args.batch or (16 if device.startswith("cuda") else 2)
    print(f"measuring the network at {'x'.join(map(str, PAPER_SHAPE))} on {device} ...",
          file=sys.stderr, flush=True)
    net = train.run_case(device, PAPER_SHAPE, batch, repeats=2, cache_samples=2 * batch,
                         loader_batch=batch, threads=None)
    fwd, fwd_bwd = net["fwd_s_per_sample"], net["fwd_bwd_s_per_sample"]
    print(f"\nmeasured: preprocessing {pre:.1f} CPU s per session; network on {device}: "
          f"forward {fwd:.3f} s, forward+backward {fwd_bwd:.3f} s per sample (batch {batch})")
    gpus = args.gpus if device.startswith("cuda") else 0
    if args.gpus and not gpus:
        print(f"(no GPU measured: the network figures are the CPU's, {args.cores} jobs per node)")
    print(f"paper scale: {args.subjects} subjects, {args.sessions} sessions, "
          f"{args.epochs} epochs, {args.folds} folds, all twelve scenarios, 9 levels, "
          f"controls at {args.control_levels} levels with {args.random_masks} random masks; "
          f"nodes of {args.cores} cores" + (f" and {gpus} GPU(s)" if gpus else ""))
    header = f"{'nodes':>5}  {'preprocessing':>13}  {'training':>9}  {'relevance':>9}  {'total':>9}"
    print(header)
    for nodes in args.nodes:
        e = estimate(pre, fwd, fwd_bwd, sessions=args.sessions,
                     epochs=args.epochs, folds=args.folds, test_fraction=args.test_fraction,
                     cores=args.cores, gpus=gpus, nodes=nodes,
                     relevance_passes=args.relevance_passes, levels=9, scenarios=12,
                     control_levels=args.control_levels, random_masks=args.random_masks)
        total = e["preprocessing"] + e["training"] + e["relevance"]
        print(f"{nodes:>5}  " + "  ".join(f"{e[k] / 60:>{w}.1f}" for k, w in
                                         (("preprocessing", 13), ("training", 9),
                                          ("relevance", 9)))
              + f"  {total / 60:>9.1f}   (minutes)")
    e1 = estimate(pre, fwd, fwd_bwd, sessions=args.sessions,
                  epochs=args.epochs, folds=args.folds, test_fraction=args.test_fraction,
                  cores=args.cores, gpus=gpus, nodes=1, relevance_passes=args.relevance_passes,
                  levels=9, scenarios=12, control_levels=args.control_levels,
                  random_masks=args.random_masks)
    print(f"one epoch {e1['epoch']:.0f} s; relevance and inverting {e1['relevance_per_session']:.1f} "
          f"s per session")
    return 0


if __name__ == "__main__":
    sys.exit(main())
