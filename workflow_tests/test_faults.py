"""Faults: jobs killed while writing their outputs, for real, on the tiny cohort.

A session's preprocessing is one job that writes the session's ``anat/`` folder step by
step (gamer_mril/session_jobs.py). A watcher finds the running job's process from the
pid in its scratch folder (``.work-preprocess_session-anat-<pid>`` beside the folder,
gamer_mril/jobs.py; checked against the process's command line) and polls the names of
the resampling step's outputs every few milliseconds; as soon as the first is in place
(the job is half done, and that step is mid-write) it kills:

1. session A's job alone (SIGKILL), while session B's job runs beside it: Snakemake
   sees A's job fail, removes A's folder and finishes B;
2. in a second run, A's job again, together with Snakemake itself (SIGKILL to the
   process group: a crash, or a cluster node lost): nobody cleans up.

Then: no file under a final name is truncated (outputs are written to a temporary name
and renamed, gamer_mril/io.py); A's partial folder is refused by Snakemake (incomplete)
unless ``--rerun-incomplete`` is given; with it the rerun runs exactly the killed job and
completes, and everything finished before the kills (B's folder) is kept as it was.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import yaml

from .conftest import REPO, jobs_run, make_config, run_snakemake

pytestmark = pytest.mark.slow


def _config(cohort: Path) -> dict:
    """The tiny cohort with the generator's brain masks (no skull strip: faster)."""
    config = make_config(cohort / "rawdata")
    config["inputs"]["brain_mask"] = str(
        cohort / "ground_truth" / "sub-{subject}" / "ses-{session}"
        / "sub-{subject}_ses-{session}_space-qT1_desc-brain_mask.nii.gz")
    return config


def _anat(work: Path, sub: str, ses: str) -> Path:
    return work / "results" / f"sub-{sub}" / f"ses-{ses}" / "anat"


def _resample_outputs(anat: Path, sub: str, ses: str) -> list[Path]:
    stem = f"sub-{sub}_ses-{ses}_space-NDI_desc-brain"
    names = [f"{stem}_{s}" for s in ("T1map", "MWFmap", "NDImap", "mask")]
    return [anat / (n + e) for n in names for e in (".nii.gz", ".json")]


RULE = "preprocess_session"


def _job_pid(anat: Path) -> int | None:
    """The pid of the running preprocess_session job writing ``anat``, from its scratch
    folder's name (beside ``anat``), checked against the process's command line."""
    if not anat.parent.is_dir():
        return None
    for entry in os.scandir(anat.parent):
        if entry.name.startswith(f".work-{RULE}-anat-"):
            pid = int(entry.name.rsplit("-", 1)[1])
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"{RULE}.py".encode() in cmdline:
                return pid
    return None


def _process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _state(paths) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def _check_whole(path: Path) -> None:
    """A file under a final name is complete: gzip stream and NIfTI data whole, JSON
    parses, anything else not empty."""
    if path.name.endswith(".nii.gz"):
        gzip.decompress(path.read_bytes())  # raises on a truncated stream
        nib.load(str(path)).get_fdata()
    elif path.suffix == ".json":
        json.loads(path.read_text())
    else:
        assert path.stat().st_size > 0, path


def _finals(work: Path) -> list[Path]:
    """Every file under a final name (nothing inside or named like a hidden scratch)."""
    return [p for p in (work / "results").rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(work).parts)]


def _hidden(work: Path) -> list[Path]:
    """Hidden files and folders under results/, but Snakemake's own marker of a finished
    folder output (.snakemake_timestamp)."""
    return [p for p in (work / "results").rglob(".*") if p.name != ".snakemake_timestamp"]


def _run_and_kill(work: Path, config: dict, targets, anat: Path, outputs, crash: bool,
                  log: Path):
    """Start the workflow; when the preprocessing job writing ``anat`` has put the first
    of ``outputs`` in place, SIGKILL the job (``crash``: Snakemake and all its jobs too).
    Returns (the outputs in place at the kill, Snakemake's exit code, its output)."""
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
           "--directory", str(work), "--configfile", str(work / "config.yaml"),
           "--cores", "2", *targets]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    written = None
    try:
        deadline = time.monotonic() + 600
        while written is None:
            assert proc.poll() is None, "the run ended before the kill:\n" + log.read_text()[-5000:]
            assert time.monotonic() < deadline, "timed out:\n" + log.read_text()[-5000:]
            pid = _job_pid(anat)
            done = [p for p in outputs if p.exists()] if pid is not None else []
            if done:
                if crash:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                written = done
            time.sleep(0.002)
        rc = proc.wait(timeout=300)
        for _ in range(1000):  # the job's process is gone too
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    return written, rc, log.read_text()


def test_killed_jobs_leave_no_accepted_output_and_rerun_incomplete_completes(
        tiny_cohort, tmp_path):
    table = pd.read_csv(tiny_cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    (sub_a, ses_a), (sub_b, ses_b) = list(zip(table.subject, table.session))[:2]
    work = tmp_path / "work"
    work.mkdir()
    config = _config(tiny_cohort)
    anat_a, anat_b = _anat(work, sub_a, ses_a), _anat(work, sub_b, ses_b)
    out_a = _resample_outputs(anat_a, sub_a, ses_a)

    def rel(path):
        return str(path.relative_to(work))

    # 1. Both sessions; A's job is killed while it writes, B's runs beside it.
    written_a, rc, log1 = _run_and_kill(
        work, config, [rel(anat_a), rel(anat_b)], anat_a, out_a, crash=False,
        log=tmp_path / "run1.log")
    assert 0 < len(written_a) < len(out_a), written_a  # caught mid-write
    assert rc != 0 and f"Error in rule {RULE}" in log1, log1[-3000:]
    assert not anat_a.exists()  # Snakemake removed the partial folder
    assert (anat_b / f"sub-{sub_b}_ses-{ses_b}_timing.tsv").exists()  # and finished B

    # 2. A again: Snakemake and the job are killed together while it writes.
    written_a, rc, _ = _run_and_kill(
        work, config, [rel(anat_a)], anat_a, out_a, crash=True, log=tmp_path / "run2.log")
    assert rc == -signal.SIGKILL
    assert 0 < len(written_a) < len(out_a), written_a
    left_a = [p for p in anat_a.iterdir()]
    assert left_a  # nobody cleaned up

    # No file under a final name is truncated; what the kills left besides outputs is
    # hidden (scratch folders, temporary names), so no output pattern matches it.
    finals = _finals(work)
    for path in finals:
        _check_whole(path)
    litter = _hidden(work)
    assert all(p.name.startswith((".work-", ".sub-")) for p in litter), litter

    # Everything finished before the kills, to be kept as it is.
    kept = [p for p in finals if anat_a not in p.parents
            and not {"logs", "benchmarks"} & set(p.relative_to(work).parts)]
    assert {p for p in finals if anat_b in p.parents} <= set(kept)
    before = _state(kept)

    targets = [rel(anat_a), rel(anat_b)]
    # Snakemake does not accept A's partial folder: without --rerun-incomplete (and
    # without the default profile, which sets it) it stops, naming it.
    refused = run_snakemake(work, config, *targets, "-n", "--workflow-profile", "none")
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "IncompleteFilesException" in text, text[-3000:]
    print(text[text.index("IncompleteFilesException"):][:2000])
    assert rel(anat_a) in text, text[-3000:]

    # After a crash the working directory is still locked (a real run would stop and
    # say so): --unlock, then with --rerun-incomplete exactly the killed job runs, and the
    # run completes.
    unlock = run_snakemake(work, config, *targets, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = run_snakemake(work, config, *targets, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert jobs_run(rerun) == {RULE: 1}
    for path in _finals(work):
        _check_whole(path)
    assert all(p.exists() for p in out_a)
    assert _state(kept) == before  # nothing already computed was lost or redone
    # and the rerun job swept what its killed attempt had left (gamer_mril.jobs)
    assert litter, "the kills should have left scratch folders or temporary files"
    left = _hidden(work)
    assert left == [], left
    nothing = run_snakemake(work, config, *targets, "-n")
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
