"""The localization table on three generated cohorts, each with the network's test AUC:
the corticospinal tracts (the demo's kind of effect, another seed), a focal ball and a
pattern of three balls elsewhere (both parietal-occipital white matter and the splenium,
away from the tracts). Each cohort is generated, run through the whole workflow with the
quick demo's settings (config.yaml, config.quick.yaml, the cohort's paths on top) in its
own folder, and read by bench/localization.py; the ground truth is read only there.

    python bench/localization_cohorts.py OUT [--cohorts tract ball pattern]
        [--subjects 72] [--cores 2] [--dry-run]

Cost: a whole quick-demo run per cohort (about 40-50 minutes on 2 cores for 72
subjects). OUT/<name>/ holds the cohort, the run (results/) and localization.tsv;
OUT/summary.tsv one line per cohort and scenario map (severe sessions) with the test AUC,
OUT/summary_stats.tsv one per cohort and permutation map (bench/localization_stats.py).
A finished cohort or run is reused (Snakemake reruns only what is missing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
PATTERNS = {
    "qT1": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz",
    "MWF": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz",
    "NDI": "sub-{subject}/ses-{session}/dwi/"
           "sub-{subject}_ses-{session}_model-noddi_param-icvf_dwimap.nii.gz",
}
#: name: (generator options, what it is). The tract cohort plants the demo's half-strength
#: effect (68 cm3 of white matter); the smaller regions (4 and 7 cm3) the full one.
COHORTS = {
    "tract": (["--effect-scale", "0.5", "--seed", "1"], "both corticospinal tracts"),
    "ball": (["--effect-scale", "1", "--seed", "2", "--region", "24", "20", "24", "10"],
             "a ball in the right frontal white matter"),
    "pattern": (["--effect-scale", "1", "--seed", "3",
                 "--region", "-30", "-60", "20", "9", "--region", "30", "-60", "20", "9",
                 "--region", "0", "-38", "16", "6"],
                "both parietal-occipital white matter and the splenium"),
}


def run(cmd, dry: bool) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    if not dry:
        subprocess.run([str(c) for c in cmd], check=True)


def test_auc(results: Path) -> float:
    """The held-out test set's AUC from Table II (the workflow's own output; its first
    test row, the model that scores the test sessions)."""
    t = pd.read_csv(results / "group" / "table_ii.tsv", sep="\t")
    test = t[t["set"].astype(str) == "test"]
    return float(test["auc"].iloc[0]) if len(test) else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=list(COHORTS))
    ap.add_argument("--subjects", type=int, default=72)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args(argv)
    py = Path(sys.executable)
    rows, stat_rows = [], []
    for name in a.cohorts:
        options, what = COHORTS[name]
        folder = (a.out / name).resolve()
        cohort, work = folder / "cohort", folder / "run"
        if not (cohort / "rawdata" / "participants.tsv").exists():
            run([py, "-m", "gamer_mril.synthetic", cohort, "--subjects", a.subjects,
                 "--followup", "0.25", "--severe", "0.4", "--scale", "3", *options], a.dry_run)
        work.mkdir(parents=True, exist_ok=True)
        paths = work / "cohort.yaml"
        raw = cohort / "rawdata"
        paths.write_text(yaml.safe_dump({"inputs": {
            "participants": str(raw / "participants.tsv"),
            "maps": {c: str(raw / p) for c, p in PATTERNS.items()}}}))
        run([py, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", work,
             "--cores", a.cores, "--configfile", REPO / "config.yaml",
             REPO / "config.quick.yaml", paths], a.dry_run)
        table = folder / "localization.tsv"
        run([py, REPO / "bench" / "localization.py", work / "results", cohort, "--out", table],
            a.dry_run)
        stats = folder / "localization_stats.tsv"
        run([py, REPO / "bench" / "localization_stats.py", work / "results", cohort,
             "--out", stats], a.dry_run)
        if a.dry_run:
            continue
        auc = test_auc(work / "results")
        loc = pd.read_csv(table, sep="\t")
        rows.append(loc[loc["sessions"] == "severe"].assign(cohort=name, region=what,
                                                            test_auc=auc))
        stat_rows.append(pd.read_csv(stats, sep="\t").assign(cohort=name, test_auc=auc))
    if rows:
        summary = pd.concat(rows, ignore_index=True)
        summary.to_csv(a.out / "summary.tsv", sep="\t", index=False, float_format="%.4g")
        cols = ["cohort", "test_auc", "scenario", "map", "mass_ratio", "pointing",
                "pointing_tol1", "rank_accuracy", "mass_accuracy", "heatmap_ratio"]
        print(summary[cols].round(2).to_string(index=False))
    if stat_rows:
        stats = pd.concat(stat_rows, ignore_index=True)
        stats.to_csv(a.out / "summary_stats.tsv", sep="\t", index=False, float_format="%.4g")
        print(stats.round(3).to_string(index=False, na_rep="-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
