"""Fixtures for workflow tests: a tiny synthetic cohort and a snakemake runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MAP_PATTERNS = {
    "qT1": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz",
    "MWF": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz",
    "NDI": "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_model-noddi_param-icvf_dwimap.nii.gz",
}


def make_config(rawdata: Path, **preprocessing) -> dict:
    rawdata = Path(rawdata)
    return {
        "inputs": {
            "participants": str(rawdata / "participants.tsv"),
            "maps": {c: str(rawdata / p) for c, p in MAP_PATTERNS.items()},
        },
        "preprocessing": {"crop_shape": [48, 48, 56], **preprocessing},
    }


def run_snakemake(workdir: Path, config: dict, *args, timeout=1800) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` with ``config``; returns the finished process."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(cfg), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Three subjects (one severe, one with a follow-up) at twice the paper's voxel size."""
    from gamer_mril.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, n_subjects=3, followup_fraction=0.34, severe_fraction=0.34,
                    scale=2.0, seed=5, log=lambda *_: None)
    return root


@pytest.fixture()
def cohort_copy(tiny_cohort, tmp_path) -> Path:
    """A private copy of the tiny cohort's rawdata that a test may break."""
    dst = tmp_path / "rawdata"
    shutil.copytree(tiny_cohort / "rawdata", dst)
    return dst
