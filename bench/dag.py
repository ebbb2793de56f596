"""How long Snakemake takes to build the workflow's DAG: ``snakemake -n`` (target ``all``)
on fake cohorts of 100, 1,000 and 5,000 sessions. Target: <= 20 s for 5,000 sessions.

    python bench/dag.py                         # 100, 1000 and 5000 sessions
    python bench/dag.py --sessions 100 1000     # chosen sizes
    python bench/dag.py --quiet                 # snakemake -n --quiet rules (no job list)
    python bench/dag.py --frozen                # frozen-model mode (no training jobs)

Each cohort lives in a temporary folder: a participants table (two sessions per subject,
EDSS spread over 0-9) and, for every session, the three maps as zero-byte files named by
the config's patterns. Zero-byte files are enough because nothing reads an image while the
DAG is built: at parse time ``gamer_mril.inputs.check_session_files`` only matches file
names against the patterns (glob) and the table; images are opened by the jobs.

The time is the wall-clock time of the whole ``snakemake -n`` process (interpreter start,
imports, parsing, the input check, DAG building and printing the plan), with its output
sent to a file as a user piping it would; its CPU time is shown beside it, which other
work on a shared machine does not inflate. ``--load`` also times ``snakemake --list-rules``
with the same config (start-up, parsing and the input check, but no DAG), which tells the
parse-time part from the DAG part.
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

REPO = Path(__file__).resolve().parents[1]
MAP_PATTERNS = {
    "qT1": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz",
    "MWF": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz",
    "NDI": "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_model-noddi_param-icvf_dwimap.nii.gz",
}
TARGET_S = 20.0
TARGET_SESSIONS = 5000


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


def snakemake_cmd(workdir: Path, configfile: Path, *args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
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


def count_jobs(text: str) -> dict:
    """{rule: count} from the "Job stats" table of a dry run (``total`` included)."""
    stats = text.split("Job stats:")[-1]
    jobs = {}
    for line in stats.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if not m:
            break
        jobs[m.group(1)] = int(m.group(2))
    return jobs


def bench_one(n: int, base: Path, quiet: bool, load: bool, frozen: bool,
              timeout: float) -> dict:
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
    jobs = count_jobs(text)
    if "total" not in jobs:
        raise RuntimeError(f"no job table in the dry run's output ({root / 'dryrun.log'})")
    row["jobs"] = jobs["total"]
    row["output_mb"] = len(text) / 1e6
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--quiet", action="store_true",
                    help="time snakemake -n --quiet rules (the plan without the job list)")
    ap.add_argument("--load", action="store_true",
                    help="also time snakemake --list-rules (parsing and the input check)")
    ap.add_argument("--frozen", action="store_true", help="frozen-model mode")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per snakemake run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cohorts")
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    header = f"{'sessions':>8}  {'jobs':>8}  {'snakemake -n (s)':>16}  {'CPU (s)':>8}"
    if args.load:
        header += f"  {'--list-rules (s)':>16}"
    header += f"  {'output (MB)':>11}"
    mode = "frozen-model mode" if args.frozen else "training mode"
    print(f"snakemake -n all{' --quiet rules' if args.quiet else ''}, {mode}, "
          f"zero-byte inputs ({base})")
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPU(s)")
    print(header)
    rows = []
    try:
        for n in args.sessions:
            row = bench_one(n, base, args.quiet, args.load, args.frozen, args.timeout)
            rows.append(row)
            line = (f"{row['sessions']:>8}  {row['jobs']:>8}  {row['dryrun_s']:>16.1f}"
                    f"  {row['dryrun_cpu_s']:>8.1f}")
            if args.load:
                line += f"  {row['load_s']:>16.1f}"
            line += f"  {row['output_mb']:>11.1f}"
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
