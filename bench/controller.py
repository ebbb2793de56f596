"""What the Snakemake controller itself costs per job, with Snakemake's scheduler as it is
and with the workflow's one re-evaluation timer at a time (gamer_mril/scheduling.py, which
the Snakefile applies), on a toy workflow of N independent jobs that only sleep (so the
CPU a run uses is the controller's, plus a few ms of shell per job).

Snakemake's scheduler arms a one-shot timer of the rate limit's timespan (1 s) at the end
of every scheduling round in which jobs wait; each timer's round arms the next, so every
job that finishes while others wait starts a chain that re-runs the scheduler once a
second for as long as jobs wait: the cost grows with the jobs finished times the run's
length. This prints, per variant: the run's wall time, the controller's CPU seconds (the child's
own rusage, its sleeping jobs included) and CPU ms per job, and the most threads the
controller held at once.

    python bench/controller.py [--jobs 120] [--sleep 1] [--cores 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PATCH = """
from gamer_mril.scheduling import coalesce_reevaluation
from snakemake.scheduling.job_scheduler import JobScheduler
coalesce_reevaluation(JobScheduler)
"""
SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))

rule one:
    output: "out/{{i}}.txt"
    shell: "sleep {sleep} && touch {{output}}"
"""
SETTINGS = {"Snakemake 9 as it is": "",
            "one timer (gamer_mril.scheduling)": PATCH}


def _threads(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(ln.split()[1] for ln in text.splitlines() if ln.startswith("Threads:")))


def measure(folder: Path, cores: int) -> dict:
    """One run in ``folder``: wall s, CPU s of the controller process tree, peak threads."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--quiet", "all",
           "--scheduler", "greedy"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peak = [0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], _threads(proc.pid))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"snakemake failed in {folder} ({' '.join(cmd)})")
    return dict(wall_s=time.monotonic() - start, cpu_s=usage.ru_utime + usage.ru_stime,
                peak_threads=peak[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=120)
    ap.add_argument("--sleep", type=float, default=1.0, help="seconds each job sleeps")
    ap.add_argument("--cores", type=int, default=2)
    a = ap.parse_args(argv)
    print(f"{a.jobs} jobs of `sleep {a.sleep}` on {a.cores} cores "
          f"(at least {a.jobs * a.sleep / a.cores:.0f} s)")
    for label, patch in SETTINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "Snakefile").write_text(patch + SNAKEFILE.format(jobs=a.jobs,
                                                                       sleep=a.sleep))
            r = measure(Path(tmp), a.cores)
        print(f"{label:<32} wall {r['wall_s']:6.1f} s  controller CPU {r['cpu_s']:6.1f} s "
              f"({1000 * r['cpu_s'] / a.jobs:5.0f} ms per job)  peak threads "
              f"{r['peak_threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
