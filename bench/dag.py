"""How long Snakemake takes to build the workflow's DAG: ``snakemake -n`` (target ``all``)
on fake cohorts of 100, 1,000 and 5,000 sessions. Target: <= 20 s for 1,000 sessions.

    python bench/dag.py                         # 100, 1000 and 5000 sessions
    python bench/dag.py --sessions 100 1000     # chosen sizes
    python bench/dag.py --quiet                 # snakemake -n --quiet rules (no job list)
    python bench/dag.py --frozen                # frozen-model mode (no training jobs)
    python bench/dag.py --floor                 # also Snakemake's own floor (see below)

Each cohort lives in a temporary folder: a participants table (two sessions per subject,
EDSS spread over 0-9) and, for every session, the three maps as zero-byte files named by
the config's patterns. Zero-byte files are enough because nothing reads an image while the
DAG is built: at parse time ``gamer_mril.mapfiles.check_session_files`` only matches file
names against the patterns (glob) and the table; images are opened by the jobs.

The time is the wall-clock time of the whole ``snakemake -n`` process (interpreter start,
imports, parsing, the input check, DAG building and printing the plan), with its output
sent to a file as a user piping it would; its CPU time is shown beside it, which other
work on a shared machine does not inflate. ``--load`` also times ``snakemake --list-rules``
with the same config (start-up, parsing and the input check, but no DAG), which tells the
parse-time part from the DAG part.

``--floor`` times, beside each real dry run, a minimal Snakefile with the same number of
jobs and of file references (inputs plus outputs, counted in the real plan) per session:
a chain of shell rules with nothing else (no input functions, params, logs, resources).
That is what Snakemake itself costs for a plan of that size; the gap between the two
columns is what this workflow's own code adds.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from gamer_mril.jobs import job_stats

REPO = Path(__file__).resolve().parents[1]
MAP_PATTERNS = {
    "qT1": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz",
    "MWF": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz",
    "NDI": "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_model-noddi_param-icvf_dwimap.nii.gz",
}
TARGET_S = 20.0
TARGET_SESSIONS = 1000


def make_cohort(root: Path, n_sessions: int, sessions_per_subject: int = 2) -> Path:
    """A fake cohort of ``n_sessions`` sessions under ``root``; returns the rawdata folder."""
    raw = Path(root) / "rawdata"
    raw.mkdir(parents=True, exist_ok=True)
    lines = ["subject\tsession\tage\tedss"]
    for i in range(n_sessions):
        subject = f"{i // sessions_per_subject + 1:05d}"
        session = str(i % sessions_per_subject + 1)
        lines.append(f"{subject}\t{session}\t{30 + i % 40}.5\t{(i * 7 % 19) * 0.5:.1f}")
        for pattern in MAP_PATTERNS.values():
            path = raw / pattern.format(subject=subject, session=session)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    (raw / "participants.tsv").write_text("\n".join(lines) + "\n")
    return raw


def make_frozen_models(folder: Path, n_folds: int = 3) -> Path:
    """Zero-byte fold models (enough for the parse-time check of frozen-model mode)."""
    for k in range(n_folds):
        d = Path(folder) / f"fold-{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.safetensors").touch()
        (d / "model.json").write_text("{}\n")
    return Path(folder)


def make_config(raw: Path, frozen_models: Path | None = None) -> dict:
    config = {
        "inputs": {
            "participants": str(raw / "participants.tsv"),
            "maps": {c: str(raw / p) for c, p in MAP_PATTERNS.items()},
        },
    }
    if frozen_models is not None:
        config["training"] = {"frozen_models": str(frozen_models)}
    return config


def snakemake_cmd(workdir: Path, configfile: Path, *args,
                  snakefile: Path = REPO / "Snakefile") -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile),
            "--directory", str(workdir), "--configfile", str(configfile), "--cores", "1",
            *args]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], log: Path, timeout: float) -> tuple[float, float, str]:
    """Run ``cmd`` with its output sent to ``log``; (wall seconds, CPU seconds, output).

    The CPU time (user + system of the process and its children) does not grow when
    other work shares the machine, the wall-clock time does."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    with open(log, "w") as out:
        cpu0 = _children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout)
        seconds = time.perf_counter() - start
        cpu = _children_cpu() - cpu0
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{text[-3000:]}")
    return seconds, cpu, text


FLOOR_SNAKEFILE = """
S = config["sessions"]
J = int(config["jobs_per_session"])
K = int(config["files_per_job"])
rule all:
    input: expand("out/{s}/step{j}_0.txt", s=S, j=J)
rule step1:
    input: "in/{s}.txt"
    output: [f"out/{{s}}/step1_{k}.txt" for k in range(K)]
    shell: "touch {output}"
for _j in range(2, J + 1):
    rule:
        name: f"step{_j}"
        input: [f"out/{{s}}/step{_j - 1}_{k}.txt" for k in range(K)]
        output: [f"out/{{s}}/step{_j}_{k}.txt" for k in range(K)]
        shell: "touch {output}"
"""


def file_references(text: str) -> int:
    """Input plus output files listed in a dry run's job list."""
    n = 0
    for m in re.finditer(r"^\s+(?:input|output): (.*)$", text, re.M):
        n += len(m.group(1).split(", "))
    return n


def bench_floor(root: Path, n: int, jobs_per_session: int, refs_per_session: int,
                timeout: float) -> float:
    """Seconds of ``snakemake -n`` on the minimal chain (see the module's docstring)."""
    floor = root / "floor"
    (floor / "in").mkdir(parents=True, exist_ok=True)
    sessions = [f"s{i:05d}" for i in range(n)]
    for s in sessions:
        (floor / "in" / f"{s}.txt").touch()
    (floor / "Snakefile").write_text(FLOOR_SNAKEFILE)
    files_per_job = max(1, round(refs_per_session / (2 * jobs_per_session)))
    (floor / "config.yaml").write_text(yaml.safe_dump({
        "sessions": sessions, "jobs_per_session": jobs_per_session,
        "files_per_job": files_per_job}))
    cmd = snakemake_cmd(floor, floor / "config.yaml", "-n", snakefile=floor / "Snakefile")
    seconds, _, _ = timed(cmd, root / "floor.log", timeout)
    return seconds


def bench_one(n: int, base: Path, quiet: bool, load: bool, frozen: bool,
              timeout: float, floor: bool = False) -> dict:
    root = base / f"n{n}"
    raw = make_cohort(root, n)
    models = make_frozen_models(root / "models") if frozen else None
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(make_config(raw, models)))
    row = {"sessions": n}
    if load:
        row["load_s"], _, _ = timed(snakemake_cmd(root / "work-load", cfg, "--list-rules"),
                                 root / "list-rules.log", timeout)
    args = ["-n", "all"] + (["--quiet", "rules"] if quiet else [])
    row["dryrun_s"], row["dryrun_cpu_s"], text = timed(snakemake_cmd(root / "work", cfg, *args),
                                  root / "dryrun.log", timeout)
    jobs = job_stats(text)
    if not jobs:
        raise RuntimeError(f"no job table in the dry run's output ({root / 'dryrun.log'})")
    row["jobs"] = sum(jobs.values())
    row["output_mb"] = len(text) / 1e6
    if floor:
        per_job = round(row["jobs"] / n)
        per_file = round(file_references(text) / n)
        row["floor_s"] = bench_floor(root, n, per_job, per_file, timeout)
        row["floor_shape"] = f"{per_job} jobs, {per_file} files"
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--quiet", action="store_true",
                    help="time snakemake -n --quiet rules (the plan without the job list)")
    ap.add_argument("--load", action="store_true",
                    help="also time snakemake --list-rules (parsing and the input check)")
    ap.add_argument("--frozen", action="store_true", help="frozen-model mode")
    ap.add_argument("--floor", action="store_true",
                    help="also time a minimal Snakefile of the same size (Snakemake's floor)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per snakemake run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cohorts")
    args = ap.parse_args(argv)
    if args.floor and args.quiet:
        ap.error("--floor counts files in the job list, which --quiet leaves out")

    base = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    header = f"{'sessions':>8}  {'jobs':>8}  {'snakemake -n (s)':>16}  {'CPU (s)':>8}"
    if args.load:
        header += f"  {'--list-rules (s)':>16}"
    header += f"  {'output (MB)':>11}"
    if args.floor:
        header += f"  {'floor (s)':>9}  per session"
    mode = "frozen-model mode" if args.frozen else "training mode"
    print(f"snakemake -n all{' --quiet rules' if args.quiet else ''}, {mode}, "
          f"zero-byte inputs ({base})")
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPU(s)")
    print(header)
    rows = []
    try:
        for n in args.sessions:
            row = bench_one(n, base, args.quiet, args.load, args.frozen, args.timeout,
                            args.floor)
            rows.append(row)
            line = (f"{row['sessions']:>8}  {row['jobs']:>8}  {row['dryrun_s']:>16.1f}"
                    f"  {row['dryrun_cpu_s']:>8.1f}")
            if args.load:
                line += f"  {row['load_s']:>16.1f}"
            line += f"  {row['output_mb']:>11.1f}"
            if args.floor:
                line += f"  {row['floor_s']:>9.1f}  {row['floor_shape']}"
            print(line, flush=True)
    finally:
        if args.keep:
            print(f"cohorts kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    for row in rows:
        if row["sessions"] == TARGET_SESSIONS:
            ok = row["dryrun_s"] <= TARGET_S
            print(f"target: <= {TARGET_S:.0f} s for {TARGET_SESSIONS} sessions: "
                  f"{'met' if ok else 'NOT met'} ({row['dryrun_s']:.1f} s wall, "
                  f"{row['dryrun_cpu_s']:.1f} s CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
