"""Job scaffolding: what a killed attempt leaves behind is swept by the next attempt."""

from __future__ import annotations

import os

from gamer_mril.io import atomic_path
from gamer_mril.jobs import sweep_litter


def test_sweep_removes_a_dead_attempts_scratch_and_temp_files(tmp_path):
    out = tmp_path / "sub-001_ses-1_desc-scaled_T1map.nii.gz"
    side = tmp_path / "sub-001_ses-1_desc-scaled_T1map.json"
    # what a SIGKILLed attempt leaves: its scratch folder and a half-written temp file
    scratch = tmp_path / ".work-scale_map-sub-001_ses-1_desc-scaled_T1map-4242"
    (scratch / "nested").mkdir(parents=True)
    (scratch / "nested" / "xfm.mat").write_bytes(b"x" * 10)
    temp = tmp_path / f".{out.name}.k2j3h4.nii.gz"
    temp.write_bytes(b"half")
    # things that are not this job's: another job's scratch and temp, and finished files
    other_scratch = tmp_path / ".work-scale_map-sub-001_ses-1_desc-scaled_MWFmap-4242"
    other_scratch.mkdir()
    other_temp = tmp_path / ".sub-002_ses-1_desc-scaled_T1map.nii.gz.abc.nii.gz"
    other_temp.write_bytes(b"other")
    kept = tmp_path / "sub-001_ses-1_desc-scaled_MWFmap.nii.gz"
    kept.write_bytes(b"done")
    out.write_bytes(b"old finished output")     # an existing output is not litter

    removed = sweep_litter("scale_map", [out, side])

    assert sorted(p.name for p in removed) == sorted([scratch.name, temp.name])
    assert not scratch.exists() and not temp.exists()
    assert other_scratch.is_dir() and other_temp.exists() and kept.exists() and out.exists()
    assert sweep_litter("scale_map", [out, side]) == []        # nothing left the second time


def test_atomic_path_leaves_nothing_on_failure_and_sweep_agrees(tmp_path):
    out = tmp_path / "a.nii.gz"
    try:
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"partial")
            assert tmp.name.startswith(f".{out.name}.") and tmp.parent == tmp_path
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert os.listdir(tmp_path) == []
    assert sweep_litter("r", [out]) == []


def test_job_stats_reads_the_last_table_and_leaves_out_total():
    from gamer_mril.jobs import job_stats

    text = """Job stats:
job          count
---------  -------
scale_map        9
total            9

Building DAG of jobs...
Job stats:
job                 count
----------------  -------
crop_to_brain           1
resample_to_ndi         2
total                   3

Reasons:
    (check individual jobs above for details)
"""
    assert job_stats(text) == {"crop_to_brain": 1, "resample_to_ndi": 2}
    assert job_stats("Nothing to be done (all requested files are present and up to date).") == {}
