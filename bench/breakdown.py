"""Where a finished run's time went: per rule the jobs, CPU seconds per job and in all,
wall seconds and peak memory, from the run's Snakemake benchmark files; and, for the whole
run, the cores' time used by jobs, by the Snakemake controller and left idle.

Every rule writes a benchmark file per job (``RESULTS/benchmarks/<rule>/<job>.tsv``, or
``RESULTS/benchmarks/<rule>.tsv`` for a cohort rule): Snakemake's ``s`` (wall seconds)
and ``cpu_time`` (CPU seconds of the job's process tree) and ``max_rss`` (MB). The run's
wall time and its total CPU come from ``RESULTS/benchmarks/run.tsv`` when the run was
timed by ``make demo`` (GNU time: ``wall``, ``user`` and ``sys`` seconds of Snakemake and
every job it waited for), or from ``--wall`` / ``--cpu``; without them the wall time is
read from the first and last time stamps of the newest Snakemake log
(``.snakemake/log/`` beside RESULTS), to the second, and the controller's share stays
unknown. The controller's CPU is the run's total minus the jobs' (jobs shorter than
Snakemake's first sample may under-count, so read it as an upper bound).

    python bench/breakdown.py RESULTS [--cores 2] [--wall S] [--cpu S] [--top 25]

Re-running only what changed leaves the earlier jobs' benchmark files in place: measure a
run from a clean RESULTS.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

#: The stage of each rule: the rule file that defines it (rules/<stage>.smk).
RULES = Path(__file__).resolve().parents[1] / "rules"
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def rule_stages(rules_dir: Path = RULES) -> dict:
    """``{rule: stage}`` from the ``rule NAME:`` / ``checkpoint NAME:`` lines of
    ``rules/*.smk``."""
    out = {}
    for path in sorted(rules_dir.glob("*.smk")):
        for m in re.finditer(r"^(?:rule|checkpoint) (\w+):", path.read_text(), re.M):
            out[m.group(1)] = path.stem
    return out


def job_table(results: Path, rules=None) -> pd.DataFrame:
    """One row per benchmarked job: rule, job, wall s, CPU s, max RSS (MB). A cohort
    rule's file named with its wildcards (``template_images_res-02.tsv``) is counted for
    the longest rule name (of ``rules``, default those of rules/*.smk) it starts with."""
    known = sorted(rule_stages() if rules is None else rules, key=len, reverse=True)
    rows = []
    bench = Path(results) / "benchmarks"
    for path in sorted(bench.rglob("*.tsv")):
        if path.parent == bench and path.stem == "run":
            continue
        rule = path.parent.name if path.parent != bench else next(
            (r for r in known if path.stem == r or path.stem.startswith(r + "_")), path.stem)
        df = pd.read_csv(path, sep="\t")
        if df.empty or "s" not in df:
            continue
        last = df.iloc[-1]
        rows.append(dict(rule=rule, job=path.stem, wall_s=float(last["s"]),
                         cpu_s=float(last.get("cpu_time", float("nan"))),
                         max_rss_mb=float(last.get("max_rss", float("nan")))))
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "cpu_s", "max_rss_mb"])


def rule_table(jobs: pd.DataFrame, stages: dict | None = None) -> pd.DataFrame:
    """Per rule: stage, jobs, CPU s per job (mean) and in all, its share of the jobs'
    CPU, wall s in all, peak RSS; the most expensive first."""
    stages = rule_stages() if stages is None else stages
    g = jobs.groupby("rule")
    out = pd.DataFrame({
        "stage": [stages.get(r, "?") for r in g.groups],
        "jobs": g.size(),
        "cpu_s_per_job": g["cpu_s"].mean(),
        "cpu_s": g["cpu_s"].sum(),
        "wall_s": g["wall_s"].sum(),
        "max_rss_mb": g["max_rss_mb"].max(),
    })
    out["cpu_share"] = out["cpu_s"] / out["cpu_s"].sum()
    return out.sort_values("cpu_s", ascending=False)


def log_wall(results: Path):
    """Seconds between the first and last time stamp of the newest Snakemake log beside
    ``results`` (None without one)."""
    logs = sorted((Path(results).resolve().parent / ".snakemake" / "log").glob("*.log"))
    if not logs:
        return None
    stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
              for line in logs[-1].read_text().splitlines() if (m := STAMP.match(line))]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def run_times(results: Path, wall=None, cpu=None) -> tuple:
    """``(wall s, total CPU s or None, where the wall time came from)``."""
    timed = Path(results) / "benchmarks" / "run.tsv"
    if wall is None and timed.exists():
        t = pd.read_csv(timed, sep="\t").iloc[-1]
        return float(t["wall"]), float(t["user"] + t["sys"]), str(timed)
    if wall is not None:
        return float(wall), (None if cpu is None else float(cpu)), "--wall"
    return log_wall(results), (None if cpu is None else float(cpu)), "Snakemake's log"


def summary(jobs: pd.DataFrame, cores: int, wall, total_cpu) -> dict:
    """The cores' time: available (cores x wall), used by jobs, by the controller (total
    CPU minus the jobs'), idle (the rest)."""
    used = float(jobs["cpu_s"].sum())
    out = dict(jobs=len(jobs), job_cpu_s=used, wall_s=wall, cores=cores)
    if wall:
        out["core_s"] = cores * wall
    if total_cpu is not None:
        out["controller_cpu_s"] = max(0.0, total_cpu - used)
        out["controller_cpu_s_per_job"] = out["controller_cpu_s"] / max(1, len(jobs))
    if wall:
        out["idle_core_s"] = out["core_s"] - used - out.get("controller_cpu_s", 0.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--wall", type=float, help="the run's wall seconds")
    ap.add_argument("--cpu", type=float, help="the run's CPU seconds, jobs and controller")
    ap.add_argument("--top", type=int, default=25, help="rules listed (most CPU first)")
    a = ap.parse_args(argv)
    jobs = job_table(a.results)
    if jobs.empty:
        print(f"no benchmark files under {a.results}/benchmarks", file=sys.stderr)
        return 1
    wall, cpu, source = run_times(a.results, a.wall, a.cpu)
    rules = rule_table(jobs)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(rules.head(a.top).round(2).to_string())
        print()
        print(rules.groupby("stage")[["jobs", "cpu_s", "wall_s"]].sum()
              .sort_values("cpu_s", ascending=False).round(1).to_string())
    s = summary(jobs, a.cores, wall, cpu)
    print()
    print(f"{s['jobs']} jobs, {s['job_cpu_s']:.0f} CPU s in jobs")
    if wall:
        print(f"wall {wall:.0f} s ({source}), {a.cores} cores: {s['core_s']:.0f} core s")
    if "controller_cpu_s" in s:
        print(f"controller {s['controller_cpu_s']:.0f} CPU s "
              f"({s['controller_cpu_s_per_job']:.2f} s per job; an upper bound)")
    else:
        print("controller: unknown (no run.tsv; give --cpu)")
    if wall:
        print(f"idle {s['idle_core_s']:.0f} core s ({100 * s['idle_core_s'] / s['core_s']:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
