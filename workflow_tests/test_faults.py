"""Faults: jobs killed while writing their outputs, for real, on the tiny cohort.

A watcher finds a running job's process from the pid in its scratch folder
(``.work-<rule>-<name>-<pid>``, gamer_mril/jobs.py; checked against the process's command
line) and polls the job's final output names every few milliseconds; as soon as the job
has renamed its first output into place (and before it has written the others) it kills:

1. session A's resampling job alone (SIGKILL): Snakemake sees the job fail, removes what
   it had written and finishes the other session's jobs;
2. in a second run, session B's crop job together with Snakemake itself (SIGKILL to the
   process group: a crash, or a cluster node lost): nobody cleans up.

Then: no file under a final name is truncated (outputs are written to a temporary name
and renamed, gamer_mril/io.py); B's partial outputs are refused by Snakemake (incomplete)
unless ``--rerun-incomplete`` is given; with it the rerun runs exactly the two killed jobs
and completes, every output finished before the kills is kept as it was, and every
provenance sidecar (written beside its image, not an output Snakemake knows) describes
the image beside it (a job removes stale sidecars of its outputs when it starts:
tests/test_jobs.py).
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
    """The resampling job's outputs, in the order it writes them."""
    stem = f"sub-{sub}_ses-{ses}_space-NDI_desc-brain"
    return [anat / f"{stem}_{s}.nii.gz" for s in ("T1map", "MWFmap", "NDImap", "mask")]


def _crop_outputs(anat: Path, sub: str, ses: str) -> list[Path]:
    """The crop job's outputs, in the order it writes them."""
    stem = f"sub-{sub}_ses-{ses}_space-NDIcrop_desc-brain"
    box = anat / f"sub-{sub}_ses-{ses}_from-NDI_to-NDIcrop_mode-image_xfm.json"
    return [anat / f"{stem}_{s}.nii.gz" for s in ("T1map", "MWFmap", "NDImap", "mask")] + [box]


def _sidecars_describe_their_images(work: Path) -> None:
    """Every sidecar under results/ names the image beside it and its current hash."""
    from gamer_mril.io import sha256

    for side in (work / "results").rglob("sub-*/ses-*/anat/*.json"):
        doc = json.loads(side.read_text())
        if "Output" not in doc:
            continue                       # a JSON output that carries its own provenance
        image = work / doc["Output"]["path"]
        assert image.exists(), f"{side}: its image {image} is gone"
        assert sha256(image) == doc["Output"]["sha256"], side


def _job_pid(anat: Path, rule: str) -> int | None:
    """The pid of the running job of ``rule`` writing into ``anat``, from its scratch
    folder's name, checked against the process's command line."""
    if not anat.is_dir():
        return None
    for entry in os.scandir(anat):
        if entry.name.startswith(f".work-{rule}-"):
            pid = int(entry.name.rsplit("-", 1)[1])
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"{rule}.py".encode() in cmdline:
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


def _run_and_kill(work: Path, config: dict, targets, anat: Path, rule: str, outputs,
                  crash: bool, log: Path):
    """Start the workflow; when ``rule``'s job writing into ``anat`` has put its first
    output in place, SIGKILL the job (``crash``: Snakemake and all its jobs too). Returns
    (the outputs in place at the kill, Snakemake's exit code, its output)."""
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
            pid = _job_pid(anat, rule)
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
    out_b = _crop_outputs(anat_b, sub_b, ses_b)
    resampled_b = _resample_outputs(anat_b, sub_b, ses_b)

    def rel(path):
        return str(path.relative_to(work))

    # 1. Both sessions up to resampling; A's resampling job is killed while writing.
    written_a, rc, log1 = _run_and_kill(
        work, config, [rel(out_a[0]), rel(resampled_b[0])], anat_a, "resample_to_ndi",
        out_a, crash=False, log=tmp_path / "run1.log")
    assert 0 < len(written_a) < len(out_a), written_a  # caught mid-write
    assert rc != 0 and "Error in rule resample_to_ndi" in log1, log1[-3000:]
    assert not [p for p in out_a if p.exists()]  # Snakemake removed the partial outputs
    assert all(p.exists() for p in resampled_b)  # and finished the other session

    # 2. B's crop: Snakemake and the job are killed together while it writes.
    written_b, rc, _ = _run_and_kill(
        work, config, [rel(out_b[0])], anat_b, "crop_to_brain", out_b, crash=True,
        log=tmp_path / "run2.log")
    assert rc == -signal.SIGKILL
    assert 0 < len(written_b) < len(out_b), written_b
    left_b = [p for p in out_b if p.exists()]
    assert left_b and len(left_b) < len(out_b)  # nobody cleaned up

    # No file under a final name is truncated; what the kills left besides outputs is
    # hidden (scratch folders, temporary names), so no output pattern matches it.
    finals = _finals(work)
    for path in finals:
        _check_whole(path)
    litter = list((work / "results").rglob(".*"))
    assert all(p.name.startswith((".work-", ".sub-")) for p in litter), litter

    # Everything finished before the kills, to be kept as it is.
    # (sidecars of A's and B's killed jobs may be stale until the rerun: left out)
    killed = {str(p).rsplit(".nii.gz", 1)[0] for p in out_a + out_b}
    kept = [p for p in finals if p not in left_b
            and str(p).rsplit(".json", 1)[0] not in killed
            and not {"logs", "benchmarks"} & set(p.relative_to(work).parts)]
    assert set(resampled_b) <= set(kept)
    before = _state(kept)

    targets = [rel(out_a[0]), rel(out_b[0])]
    # Snakemake does not accept B's partial outputs: without --rerun-incomplete (and
    # without the default profile, which sets it) it stops, naming them.
    refused = run_snakemake(work, config, *targets, "-n", "--workflow-profile", "none")
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "IncompleteFilesException" in text, text[-3000:]
    print(text[text.index("IncompleteFilesException"):][:2000])
    assert all(rel(p) in text for p in left_b), text[-3000:]

    # After a crash the working directory is still locked (a real run would stop and
    # say so): --unlock, then with --rerun-incomplete exactly the two killed jobs run,
    # and the run completes.
    unlock = run_snakemake(work, config, *targets, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = run_snakemake(work, config, *targets, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert jobs_run(rerun) == {"resample_to_ndi": 1, "crop_to_brain": 1}
    for path in out_a + out_b:
        _check_whole(path)
    _sidecars_describe_their_images(work)
    assert _state(kept) == before  # nothing already computed was lost or redone
    # and the rerun jobs swept what their killed attempts had left (gamer_mril.jobs)
    assert litter, "the kills should have left scratch folders or temporary files"
    left = list((work / "results").rglob(".*"))
    assert left == [], left
    nothing = run_snakemake(work, config, *targets, "-n")
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
