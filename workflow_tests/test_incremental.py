"""Incremental reruns, read from Snakemake's own job lists (dry runs and a real run).

On a copy of the finished 8-subject run (the ``trained`` fixture, moved with its raw data:
see test_audit_workflow.copy_run) a ninth subject is added with the synthetic generator.

* Frozen-model mode: the copy is first switched to frozen mode on its own fold models
  (predictions made for real; the relevance and assessment outputs declared current
  with ``snakemake --touch``, Snakemake's way of saying "these outputs stand", since a
  real frozen run of 8 sessions' relevance maps takes minutes and only which jobs
  Snakemake would run is asked of them). Adding the subject then schedules exactly that
  subject's per-session jobs and the cohort-level jobs; no split, training or
  evaluation job exists. The preprocessing and the predictions are then run for real
  and give the same job list.
* Training mode: adding a subject reruns no other subject's preprocessing; it re-splits
  and retrains, and then (new models) re-explains every session, for that reason only.
* One changed raw map reruns only its own session's preprocessing and what depends on
  it; touching a file without changing it reruns nothing when Snakemake has its checksum
  (files up to --max-checksum-file-size, 1 MB by default) and reruns by date otherwise;
  a changed parameter reruns its jobs unless --rerun-triggers leaves out params.
* Every step is a rule, so a changed setting reruns from its step on: the resolution of
  the template registration reruns the registration and what depends on it, not the
  steps it does not depend on (scaling, skull strip, co-registration); the MNI152 grid
  of the outputs reruns only the warps to it and the heatmaps; the integrated-gradients path reruns the relevance maps and what depends on
  them, no preprocessing and no training. ``--until register_to_template`` plans the
  steps up to the template registration and nothing else. A session left out by
  ``qc.exclude`` keeps its preprocessing and leaves the split, training and assessment.
"""

from __future__ import annotations

import os
import re
from collections import Counter

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gamer_mril.synthetic import generate_cohort

from .conftest import PREPROCESSING_RULES, jobs_run, make_config, run_snakemake, training_config
from .test_audit_workflow import copy_run

pytestmark = pytest.mark.slow

NEW = "009"
#: A session's jobs: its preprocessing steps (anat/) and its relevance maps with their
#: per-session assessment (xai/), one job per rule.
PREPROCESSING = {r: 1 for r in PREPROCESSING_RULES}
#: The steps the template registration (step 2b) does not depend on.
BEFORE_TEMPLATE = ("scale_map", "skull_strip")
INDEPENDENT_OF_TEMPLATE = BEFORE_TEMPLATE + ("coregister_to_ndi",)
#: In training mode a session's regional means and template maps feed the baseline
#: classifiers too.
TRAINED_PREPROCESSING = {**PREPROCESSING, "region_means": 1, "template_maps": 1}
EXPLANATION = {r: 1 for r in ("explain_session", "quantile_masks", "invert_session",
                              "warp_top_masks", "warp_relevance", "relevance_reportlet")}
#: In frozen mode nothing but the group test of the input maps (group_input_stats) reads
#: a session's template maps, so `all` makes them there.
INPUT_MAPS = {"template_maps": 1}
#: A new chosen scenario (the cohort's) redraws every session's relevance reportlet.
REDRAWN = {"relevance_reportlet": 1}
TRAINING = {"split_sessions", "train_fold", "predict_test", "evaluate_models"}
#: A job in a dry run's listing (indented when it is part of a group job, as the
#: preprocessing steps of a session are).
_BLOCK = re.compile(r"^( *)(?:local)?rule (\w+):\n((?:\1    .*\n)*)", re.MULTILINE)


def planned(proc) -> list[tuple[str, str | None, str]]:
    """(rule, subject or None, reason) of every job in a dry run's listing."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = []
    for _, rule, body in _BLOCK.findall(proc.stdout + proc.stderr):
        wc = re.search(r"^ +wildcards: (.*)$", body, re.MULTILINE)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        reason = re.search(r"^ +reason: (.*)$", body, re.MULTILINE)
        jobs.append((rule, wildcards.get("subject"), reason.group(1) if reason else ""))
    return jobs


def per_session(jobs, subject) -> Counter:
    return Counter(rule for rule, sub, _ in jobs if sub == subject)


def cohort_level(jobs) -> set:
    return {rule for rule, sub, _ in jobs if sub is None}


def dry_run(run, config, *args):
    return planned(run_snakemake(run, config, "-n", *args))


def nothing_to_do(proc) -> bool:
    return proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_adding_a_subject_and_changing_a_file(trained, training_cohort, tmp_path):
    run, cohort = copy_run(trained, training_cohort, tmp_path)
    config = training_config(cohort)
    assert nothing_to_do(run_snakemake(run, config, "all", "-n"))  # the copy is current

    # ---- parameters: a changed training setting retrains (and re-explains), unless
    # the params trigger is left out
    longer = training_config(cohort, epochs=9)
    jobs = dry_run(run, longer, "all")
    assert Counter(r for r, s, _ in jobs if r == "train_fold") == {"train_fold": 2}
    assert not {r for r, _, _ in jobs} & set(PREPROCESSING)
    assert all("Params have changed" in why for r, _, why in jobs if r == "train_fold")
    assert nothing_to_do(run_snakemake(run, longer, "all", "-n", "--rerun-triggers",
                                       "mtime", "input", "code", "software-env"))
    sessions = set(pd.read_csv(cohort / "rawdata" / "participants.tsv", sep="\t",
                               dtype=str).subject)

    # ---- the template registration's resolution: the registration and what depends on
    # it (every session), not the steps it does not depend on
    finer = training_config(cohort)
    finer["preprocessing"]["skullstrip_template_resolution"] = 1
    jobs = dry_run(run, finer, "all")
    for sub in sessions:
        planned_here = per_session(jobs, sub)
        assert not set(planned_here) & set(INDEPENDENT_OF_TEMPLATE), (sub, planned_here)
        assert {**TRAINED_PREPROCESSING, **EXPLANATION} == {
            **{r: 1 for r in INDEPENDENT_OF_TEMPLATE}, **planned_here}, (sub, planned_here)
    # the template at the new resolution is a new input file (rule template_images makes
    # it once), so the registration reruns for it and for nothing else (Snakemake names
    # one reason per job: the later steps' inputs are updated anyway)
    assert "template_images" in cohort_level(jobs)
    registrations = [why for r, s, why in jobs if s and r == "register_to_template"]
    assert all("res-01" in why or "Set of input files has changed" in why
               for why in registrations), registrations
    assert not {r for r, s, why in jobs if s and "Params have changed" in why}
    # new network inputs: retrained on the same split
    assert TRAINING - {"split_sessions"} <= cohort_level(jobs)
    assert "split_sessions" not in cohort_level(jobs)

    # ---- the MNI152 grid of the outputs: the warps to MNI152 and the heatmaps only, no
    # preprocessing step before them, no training
    finer = training_config(cohort)
    finer["preprocessing"]["template_resolution"] = 1
    jobs = dry_run(run, finer, "all")
    for sub in sessions:
        assert per_session(jobs, sub) == {"warp_brain_mask_to_template": 1,
                                          "warp_top_masks": 1, "qc_reportlets": 1}, sub
    assert not TRAINING & cohort_level(jobs)
    assert {"group_heatmaps", "heatmap_viewer"} <= cohort_level(jobs)

    # ---- the integrated-gradients path: relevance maps and what depends on them only
    ig = training_config(cohort)
    ig["relevance"]["ig_steps"] = 9
    jobs = dry_run(run, ig, "all")
    for sub in sessions:
        assert per_session(jobs, sub) == EXPLANATION, sub
    assert all("Params have changed" in why for r, _, why in jobs if r == "explain_session")
    assert cohort_level(jobs) == {"voxel_inverting", "correlations", "group_heatmaps",
                                  "heatmap_viewer", "relevance_conservation",
                                  "group_relevance_stats",
                                  "dataset_description", "all"}  # (it records the config)

    # ---- qc.exclude: the session stays preprocessed and checked, and leaves the split,
    # the training and the assessment (every other session is re-explained by the new
    # models); nothing of its own runs
    left_out = sorted(sessions)[0]
    excluded = training_config(cohort)
    excluded["qc"] = {**excluded.get("qc", {}),
                      "exclude": {f"sub-{left_out}_ses-1": "constructed failure"}}
    jobs = dry_run(run, excluded, "all")
    assert not per_session(jobs, left_out)
    for sub in sorted(sessions)[1:]:
        assert per_session(jobs, sub) == EXPLANATION, sub
    assert {"analysed_sessions", "build_cache"} | TRAINING <= cohort_level(jobs)
    assert "preprocessing_qc" not in cohort_level(jobs)
    unknown = training_config(cohort)
    unknown["qc"] = {**unknown.get("qc", {}), "exclude": ["sub-999_ses-1"]}
    proc = run_snakemake(run, unknown, "all", "-n")
    assert proc.returncode != 0
    assert "qc.exclude names sessions that are not among the selected ones: sub-999_ses-1" \
        in proc.stdout + proc.stderr

    # ---- frozen-model mode on the run's own models: predictions for real (the training
    # run's tables removed first: Snakemake would take its predictions.tsv as current),
    # the rest declared current
    frozen = training_config(cohort, frozen_models=str(run / "results" / "models"))
    for name in ("split.tsv", "table_ii.tsv", "attention_weights.tsv", "roc.png",
                 "predictions.tsv"):
        (run / "results" / "group" / name).unlink()
    proc = run_snakemake(run, frozen, "train_all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert jobs_run(proc) == {"predict_sessions": 1, "train_all": 1}
    proc = run_snakemake(run, frozen, "all", "--touch")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert nothing_to_do(run_snakemake(run, frozen, "all", "-n"))

    # ---- add a ninth subject to the raw data (the first eight are left as they are)
    before = pd.read_csv(cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    generate_cohort(cohort, n_subjects=9, followup_fraction=0.0, severe_fraction=0.5,
                    scale=2.0, seed=11, subjects=[NEW], log=lambda *_: None)
    after = pd.read_csv(cohort / "rawdata" / "participants.tsv", sep="\t", dtype=str)
    assert after.iloc[:8].equals(before) and list(after.subject[8:]) == [NEW]

    # frozen: that subject's per-session jobs and the cohort-level jobs; of the others,
    # only the relevance reportlet (the chosen scenario is chosen again)
    jobs = dry_run(run, frozen, "all")
    assert per_session(jobs, NEW) == {**PREPROCESSING, **EXPLANATION, **INPUT_MAPS}
    for sub in sorted(sessions):
        assert per_session(jobs, sub) == REDRAWN, sub
    assert cohort_level(jobs) == {"select_participants", "analysed_sessions",
                                  "preprocessing_qc", "build_cache", "predict_sessions",
                                  "voxel_inverting", "correlations", "group_heatmaps",
                                  "heatmap_viewer", "relevance_conservation",
                                  "group_relevance_stats", "group_input_stats", "all"}
    assert all(why.startswith("Missing output files") for _, s, why in jobs if s == NEW)

    # training mode: no other subject's preprocessing; re-split, retrain, re-explain
    # every session because the models change (and for no other reason)
    jobs = dry_run(run, config, "all")
    assert per_session(jobs, NEW) == {**TRAINED_PREPROCESSING, **EXPLANATION}
    subjects = sorted(after.subject)
    for sub in subjects[:8]:
        assert per_session(jobs, sub) == EXPLANATION, sub
    assert TRAINING <= cohort_level(jobs)
    assert "make_template_cerebellum" not in cohort_level(jobs)
    for rule, sub, why in jobs:
        if sub not in (None, NEW) and rule == "explain_session":
            assert "results/models/" in why or "split.tsv" in why, why

    # ---- the real rerun (frozen): preprocessing and predictions of the new subject
    proc = run_snakemake(run, frozen, "preprocess_all", "train_all")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert jobs_run(proc) == {**PREPROCESSING, "select_participants": 1,
                              "analysed_sessions": 1, "preprocessing_qc": 1, "build_cache": 1,
                              "predict_sessions": 1, "preprocess_all": 1, "train_all": 1}
    predictions = pd.read_csv(run / "results" / "group" / "predictions.tsv", sep="\t",
                              dtype={"subject": str, "session": str})
    assert sorted(predictions.subject) == subjects
    assert nothing_to_do(run_snakemake(run, frozen, "preprocess_all", "train_all", "-n"))
    # what is left of `all`: the new subject's relevance maps and the cohort assessment
    jobs = dry_run(run, frozen, "all")
    assert per_session(jobs, NEW) == {**EXPLANATION, **INPUT_MAPS}
    assert all(per_session(jobs, sub) == REDRAWN for sub in sessions)

    # ---- one input file: touched (same bytes) or changed
    raw = cohort / "rawdata" / "sub-003" / "ses-1" / "anat"
    mwf, t1 = raw / "sub-003_ses-1_MWFmap.nii.gz", raw / "sub-003_ses-1_T1map.nii.gz"
    targets = ("preprocess_all", "train_all")
    assert mwf.stat().st_size < 1_000_000 < t1.stat().st_size
    os.utime(mwf)  # newer, same bytes, checksum recorded: nothing to do
    assert nothing_to_do(run_snakemake(run, frozen, *targets, "-n"))
    # newer, same bytes, too large for a recorded checksum: its chain reruns by date
    t1_times = t1.stat()
    os.utime(t1)
    jobs = dry_run(run, frozen, *targets)
    assert per_session(jobs, "003") == PREPROCESSING
    [why] = [why for r, s, why in jobs if s == "003" and r == "scale_map"]
    assert why == f"Updated input files: {t1}"
    assert {s for _, s, _ in jobs} == {"003", None}
    os.utime(t1, ns=(t1_times.st_atime_ns, t1_times.st_mtime_ns))
    # the content of the MWF map changed: that session's preprocessing
    img = nib.load(mwf)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[data > 0] *= 1.01
    nib.save(nib.Nifti1Image(data, img.affine, img.header), mwf)
    jobs = dry_run(run, frozen, *targets)
    assert {s for _, s, _ in jobs} == {"003", None}
    assert per_session(jobs, "003") == PREPROCESSING
    [why] = [why for r, s, why in jobs if r == "scale_map"]
    assert why == f"Updated input files: {mwf}"
    assert cohort_level(jobs) == {"preprocessing_qc", "build_cache", "predict_sessions",
                                  "preprocess_all", "train_all"}


def test_until_a_step_plans_that_step_and_what_it_needs(tiny_cohort, tmp_path):
    config = make_config(tiny_cohort / "rawdata")
    n = len(pd.read_csv(tiny_cohort / "rawdata" / "participants.tsv", sep="\t"))
    jobs = dry_run(tmp_path / "work", config, "all", "--until", "register_to_template")
    counts = Counter(rule for rule, _, _ in jobs)
    # and the template image, made once for every session
    assert counts == {**{r: n for r in BEFORE_TEMPLATE + ("register_to_template",)},
                      "template_images": 1}, counts
