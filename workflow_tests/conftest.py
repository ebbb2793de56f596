"""Fixtures for workflow tests: a tiny synthetic cohort and a snakemake runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gamer_mril.jobs import job_stats

REPO = Path(__file__).resolve().parents[1]
MAP_PATTERNS = {
    "qT1": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz",
    "MWF": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz",
    "NDI": "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_model-noddi_param-icvf_dwimap.nii.gz",
}


#: The per-session preprocessing rules (rules/preprocessing.smk and the reportlets of
#: rules/qc.smk, group "preprocess"), one job each per session, in the order they run.
PREPROCESSING_RULES = ("scale_map", "skull_strip", "register_to_template", "make_brain_mask",
                       "coregister_to_ndi", "resample_to_ndi", "crop_to_brain",
                       "remove_cerebellum", "warp_brain_mask_to_template", "qc_reportlets")


#: qc.max_crop_cut_share of the workflow tests' runs (see make_config).
TEST_CROP_CUT_SHARE = 0.05


def make_config(rawdata: Path, **preprocessing) -> dict:
    rawdata = Path(rawdata)
    return {
        "inputs": {
            "participants": str(rawdata / "participants.tsv"),
            "maps": {c: str(rawdata / p) for c, p in MAP_PATTERNS.items()},
        },
        "preprocessing": {"crop_shape": [48, 48, 56], **preprocessing},
        # the tiny cohorts' crop is kept small for speed and cuts up to about 2% of some
        # brains: flag a cut from TEST_CROP_CUT_SHARE on, above the default 2%
        "qc": {"max_crop_cut_share": TEST_CROP_CUT_SHARE},
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


@pytest.fixture(scope="session")
def training_cohort(tmp_path_factory) -> Path:
    """Eight subjects, half severe, one session each: the smallest cohort that fills a
    test set and two folds with both classes."""
    from gamer_mril.synthetic import generate_cohort

    root = tmp_path_factory.mktemp("training_cohort")
    generate_cohort(root, n_subjects=8, followup_fraction=0.0, severe_fraction=0.5,
                    scale=2.0, seed=11, log=lambda *_: None)
    return root


#: Quantile levels of the trained run: a small one for the AOPC and Table III's three
#: (every level's masks are checked the same way; the full list is covered by the unit
#: tests); the inverting controls at N = 5 and 40, the scenario chosen by the AOPC over
#: both (a cheap stand-in for the default 5, 10, 20).
FIXTURE_LEVELS = [5, 30, 40, 50]
FIXTURE_CONTROL_LEVELS = [5, 40]


def training_config(cohort: Path, **training) -> dict:
    """A fast configuration: the generator's true brain masks are given (no skull strip),
    an affine template registration (SyN is checked on the tiny cohort), two folds, a few
    epochs without augmentation, four quantile levels, the inverting controls at N = 5 and
    40 with two random masks, 200 permutations of the group tests in MNI152."""
    config = make_config(cohort / "rawdata", template_transform="Affine")
    config["inputs"]["brain_mask"] = str(
        cohort / "ground_truth" / "sub-{subject}" / "ses-{session}"
        / "sub-{subject}_ses-{session}_space-qT1_desc-brain_mask.nii.gz")
    config["split"] = {"test_fraction": 0.2, "n_folds": 2, "seed": 0}
    config["training"] = {"epochs": 8, "batch_size": 4, "lr": 1e-3, "seed": 0,
                          "augment": False, **training}
    config["relevance"] = {"ig_steps": 8}
    config["assessment"] = {"levels": list(FIXTURE_LEVELS),
                            "control_levels": list(FIXTURE_CONTROL_LEVELS),
                            "choice_levels": list(FIXTURE_CONTROL_LEVELS), "random_masks": 2,
                            "group_permutations": 200}
    return config


@pytest.fixture(scope="session")
def trained(training_cohort, tmp_path_factory) -> Path:
    """The whole workflow (target ``all``) run once on the training cohort."""
    work = tmp_path_factory.mktemp("train_run")
    proc = run_snakemake(work, training_config(training_cohort), "all")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return work


def jobs_run(proc) -> dict:
    """{rule: count} from Snakemake's own "Job stats" table of a finished run."""
    return job_stats(proc.stdout + proc.stderr)
