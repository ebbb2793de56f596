"""The provenance audit on a finished run: the command and the ``audit`` target.

A copy of the 8-subject run (the ``trained`` fixture) and of its raw data is audited as
it is, then with one raw map and one intermediate changed behind the workflow's back
(content rewritten, modification time kept, so Snakemake's own rerun logic sees
nothing): both routes must report STALE naming the changed file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gamer_mril.settings import ALL_SCENARIOS

from .conftest import REPO, jobs_run, run_snakemake, training_config

pytestmark = pytest.mark.slow


def copy_run(run: Path, cohort: Path, dst: Path) -> tuple[Path, Path]:
    """A private copy of a finished run and of its raw data, as if the project had been
    moved: the raw-data paths recorded in the sidecars and in Snakemake's metadata are
    changed to the copy's. Contents, hashes and modification times of the outputs are
    kept (a JSON output that carries its own provenance is an output like any other:
    its hash is recorded downstream, so it is left as it is and still names the
    original raw data, which is unchanged)."""
    new_cohort, new_run = dst / "cohort", dst / "run"
    shutil.copytree(cohort, new_cohort)  # copy2: modification times kept
    shutil.copytree(run, new_run, symlinks=True)
    old, new = f"{cohort}/", f"{new_cohort}/"
    sidecars = [p for p in (new_run / "results").rglob("*.json")
                if "Output" in json.loads(p.read_text())]
    for path in sidecars + list((new_run / ".snakemake" / "metadata").iterdir()):
        text = path.read_text()
        if old in text:
            st = path.stat()
            path.write_text(text.replace(old, new))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return new_run, new_cohort


def rewrite_keeping_mtime(path: Path, change) -> None:
    """Change a file's bytes behind the workflow's back (its mtime is kept)."""
    st = path.stat()
    path.write_bytes(change(path.read_bytes()))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def audit_cli(run: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "gamer_mril.audit", *args], cwd=run,
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def relmap(sub, space="NDI"):
    """A session's relevance maps (every scenario in one stack)."""
    return f"results/sub-{sub}/ses-1/xai/sub-{sub}_ses-1_space-{space}_relmap.nii.gz"


def read_audit_tsv(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "results" / "group" / "audit.tsv", sep="\t", keep_default_na=False)


def test_audit_command_and_target_find_changed_files(trained, training_cohort, tmp_path):
    run, cohort = copy_run(trained, training_cohort, tmp_path)
    config = training_config(cohort)

    # ---- intact run: the command walks a relevance map back to the raw maps, OK
    proc = audit_cli(run, relmap("002"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw_t1 = cohort / "rawdata" / "sub-002" / "ses-1" / "anat" / "sub-002_ses-1_T1map.nii.gz"
    chain = proc.stdout
    for rule in ("explain_session", "remove_cerebellum", "register_to_template",
                 "crop_to_brain", "resample_to_ndi", "coregister_to_ndi", "scale_map",
                 # ... and through the model that explains it to what trained it
                 "train_fold", "build_cache", "split_sessions"):
        assert f"[{rule}]" in chain, chain[:3000]
    assert f"image: {raw_t1}  (raw input)" in chain

    # ---- the target: every final map, OK; it runs no other job
    proc = run_snakemake(run, config, "audit")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert jobs_run(proc) == {"audit": 1}
    table = read_audit_tsv(run)
    maps = set(table["output"])
    assert (table["status"] == "OK").all()
    assert relmap("002") in maps and relmap("002", space="NDIcrop") in maps
    anat = "results/sub-002/ses-1/anat/sub-002_ses-1"
    assert f"{anat}_space-NDIcrop_desc-preproc_T1map.nii.gz" in maps
    heatmaps = {m for m in maps if m.startswith("results/group/heatmaps/")}
    # one heatmap per scenario the config asks for and group (severe, mild, all)
    scenarios = config["relevance"].get("scenarios", ALL_SCENARIOS)   # the schema's default
    assert len(heatmaps) == len(scenarios) * 3
    assert len(maps) == 8 * (3 + 2) + len(heatmaps)
    assert "audited" in (run / "results" / "logs" / "audit.log").read_text()

    # ---- tamper: a raw map of sub-002 and an intermediate of sub-005, mtimes kept
    rewrite_keeping_mtime(raw_t1, lambda b: b + b"\0")
    scaled = "results/sub-005/ses-1/anat/sub-005_ses-1_desc-scaled_MWFmap.nii.gz"
    rewrite_keeping_mtime(run / scaled, lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    # Snakemake's own rerun logic cannot see it (dates unchanged) ...
    proc = run_snakemake(run, config, "all", "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr

    # ... the command can: STALE, naming the file and the record that holds the old hash
    proc = audit_cli(run, relmap("002"))
    assert proc.returncode == 1
    assert f"STALE   image: {raw_t1}" in proc.stdout
    assert f"STALE {raw_t1}: changed since" in proc.stdout
    proc = audit_cli(run, relmap("005"), "--problems-only")
    assert proc.returncode == 1
    assert f"STALE {scaled}: the file changed since its rule wrote it" in proc.stdout
    # every model trained on a cache that holds sub-002's session, so every relevance map
    # depends on sub-002's raw map through its model; sub-001's preprocessing does not
    assert f"STALE {raw_t1}: changed since" in proc.stdout
    proc = audit_cli(run, relmap("001"), "--problems-only")
    assert proc.returncode == 1 and f"STALE {raw_t1}: changed since" in proc.stdout
    assert "[train_fold]" in audit_cli(run, relmap("001")).stdout
    anat1 = "results/sub-001/ses-1/anat/sub-001_ses-1_space-NDIcrop_desc-preproc_T1map.nii.gz"
    proc = audit_cli(run, anat1)
    assert proc.returncode == 0, proc.stdout[-2000:]

    # ... and so can the target, for named files (full chains in the log and output) ...
    proc = run_snakemake(run, config, "audit", "--config",
                         f"audit_target=[{relmap('002')},{relmap('005')},{relmap('001')}]")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "provenance audit: 3 STALE, 0 MISSING" in text  # all three, through the models
    assert f"STALE {raw_t1}: changed since" in text and f"STALE {scaled}:" in text
    log = (run / "results" / "logs" / "audit.log").read_text()
    assert f"STALE   image: {raw_t1}" in log and "[scale_map]" in log
    table = read_audit_tsv(run).set_index("output")
    assert list(table["status"]) == ["STALE", "STALE", "STALE"]
    assert str(raw_t1) in table.loc[relmap("002"), "problems"]
    assert scaled in table.loc[relmap("005"), "problems"]

    # ... and for every final map: those of sub-002 and sub-005 and the group heatmaps
    proc = run_snakemake(run, config, "audit")
    assert proc.returncode != 0
    table = read_audit_tsv(run)
    stale = set(table.loc[table["status"] == "STALE", "output"])
    assert (table.loc[~table["output"].isin(stale), "status"] == "OK").all()
    touched = {m for m in maps if "/sub-002/" in m or "/sub-005/" in m}
    xai = {m for m in maps if "/xai/" in m}    # all of them: through the models
    assert xai | heatmaps <= stale <= touched | xai | heatmaps
