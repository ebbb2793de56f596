"""Seconds per session for each preprocessing step and quality-control output, and peak
memory.

    python bench/preprocess.py --results results            # read a finished run
    python bench/preprocess.py --run COHORT [--cores 2]     # run preprocessing, then read

Every step is a rule with a ``benchmark:`` file per session
(``benchmarks/<rule>/sub-X_ses-Y.tsv``, Snakemake's own: wall seconds of the whole job,
Python start-up and imports included, its CPU seconds and peak memory). With ``--run`` the
wall-clock time of the whole run divided by the number of sessions is printed too (what N
cores achieve).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
STEPS = ["scale_map", "skull_strip", "register_to_template", "make_brain_mask", "coregister_to_ndi",
         "resample_to_ndi", "crop_to_brain", "remove_cerebellum", "warp_brain_mask_to_template"]
#: The per-session quality-control outputs, beside the steps: the preprocessing reportlets
#: (and the relevance reportlet, when the run went that far).
QC = ["qc_reportlets", "relevance_reportlet"]


def read_benchmarks(results: Path) -> pd.DataFrame:
    """One row per step and session from the per-session benchmark files."""
    rows = []
    for step in STEPS + QC:
        for f in sorted((results / "benchmarks" / step).glob("sub-*_ses-*.tsv")):
            b = pd.read_csv(f, sep="\t").iloc[0]
            rows.append(dict(step=step, session=f.stem, seconds=float(b["s"]),
                             cpu_seconds=float(b["cpu_time"]), max_rss_mb=float(b["max_rss"])))
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    table = df.groupby("step").agg(sessions=("session", "nunique"),
                                   seconds_mean=("seconds", "mean"),
                                   seconds_max=("seconds", "max"),
                                   cpu_seconds_mean=("cpu_seconds", "mean"),
                                   peak_rss_mb=("max_rss_mb", "max"))
    steps = table.reindex([s for s in STEPS if s in table.index])
    total = df[df["step"].isin(STEPS)].groupby("session")[["seconds", "cpu_seconds"]].sum()
    steps.loc["TOTAL (steps)"] = [len(total), total["seconds"].mean(), total["seconds"].max(),
                                  total["cpu_seconds"].mean(), steps["peak_rss_mb"].max()]
    qc = table.reindex([s for s in QC if s in table.index])
    if len(qc):
        qc_total = df[df["step"].isin(QC)].groupby("session")[["seconds", "cpu_seconds"]].sum()
        qc.loc["TOTAL (QC outputs)"] = [len(qc_total), qc_total["seconds"].mean(),
                                        qc_total["seconds"].max(),
                                        qc_total["cpu_seconds"].mean(), qc["peak_rss_mb"].max()]
    return pd.concat([steps, qc])


def run(cohort: Path, cores: int, crop) -> tuple[Path, float, int]:
    work = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    raw = cohort / "rawdata"
    cfg = {"inputs": {"participants": str(raw / "participants.tsv"), "maps": {
        "qT1": str(raw / "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz"),
        "MWF": str(raw / "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz"),
        "NDI": str(raw / "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_model-noddi_param-icvf_dwimap.nii.gz"),
    }}, "preprocessing": {"crop_shape": list(crop)}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                    str(work), "--configfile", str(work / "config.yaml"), "--cores", str(cores),
                    "preprocess_all", "--quiet"], check=True, env=env)
    wall = time.perf_counter() - t0
    n = len(pd.read_csv(raw / "participants.tsv", sep="\t"))
    return work / "results", wall, n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, help="results folder of a finished run")
    p.add_argument("--run", type=Path, metavar="COHORT", help="run preprocessing on this cohort first")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--crop", type=int, nargs=3, default=(48, 48, 56))
    a = p.parse_args(argv)
    if a.run:
        results, wall, n = run(a.run, a.cores, a.crop)
    elif a.results:
        results, wall, n = a.results, None, None
    else:
        p.error("give --results or --run")
    table = summarize(read_benchmarks(results))
    print(table.round(2).to_string())
    if wall is not None:
        print(f"\nwall clock: {wall:.1f} s for {n} sessions on {a.cores} cores = {wall / n:.1f} s per session")


if __name__ == "__main__":
    main()
