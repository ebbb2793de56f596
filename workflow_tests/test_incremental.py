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
* The analysed sessions are known once the checkpoint analysed_sessions has run (its
  input is the QC table: qc.exclude_flagged). A dry run in which the checkpoint must run
  again (a session's preprocessing, the QC table or qc.exclude changed) plans the jobs up
  to it and the cohort-level jobs after it, and no per-session job that waits for the
  analysed sessions (relevance maps, their assessment, the baselines' regional means);
  the real run decides again once the checkpoint has run, and a table that came out the
  same (checksum) reruns nothing after it.
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
#: classifiers too (an analysed session's: planned after the checkpoint).
BASELINE_INPUTS = {"region_means": 1, "template_maps": 1}
EXPLANATION = {r: 1 for r in ("explain_session", "quantile_masks", "invert_session",
                              "warp_top_masks", "warp_relevance", "relevance_reportlet",
                              "session_report")}
#: In frozen mode nothing but the group test of the input maps (group_input_stats) reads
#: a session's template maps, so `all` makes them there.
INPUT_MAPS = {"template_maps": 1}
#: A new chosen scenario (the cohort's) redraws every session's relevance reportlet, and
#: so its page (which also reads the QC table).
REDRAWN = {"relevance_reportlet": 1, "session_report": 1}
TRAINING = {"split_sessions", "train_fold", "predict_test", "evaluate_models"}
#: A job in a dry run's listing (indented when it is part of a group job, as the
#: preprocessing steps of a session are; the checkpoint is listed as one).
_BLOCK = re.compile(r"^( *)(?:local)?(?:rule|checkpoint) (\w+):\n((?:\1    .*\n)*)",
                    re.MULTILINE)


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
    # it (every session), not the steps it does not depend on; the QC table changes, so
    # what follows the checkpoint waits for it
    finer = training_config(cohort)
    finer["preprocessing"]["skullstrip_template_resolution"] = 1
    jobs = dry_run(run, finer, "all")
    for sub in sessions:
        planned_here = per_session(jobs, sub)
        # its page reads the QC table and waits for the checkpoint (rules/report.smk)
        assert planned_here.pop("session_report", 0) == 1, (sub, planned_here)
        assert not set(planned_here) & set(INDEPENDENT_OF_TEMPLATE), (sub, planned_here)
        assert PREPROCESSING == {
            **{r: 1 for r in INDEPENDENT_OF_TEMPLATE}, **planned_here}, (sub, planned_here)
    assert {"preprocessing_qc", "analysed_sessions"} <= cohort_level(jobs)
    # the template at the new resolution is a new input file (rule template_images makes
    # it once), so the registration reruns for it and for nothing else (Snakemake names
    # one reason per job: the later steps' inputs are updated anyway)
    assert "template_images" in cohort_level(jobs)
    registrations = [why for r, s, why in jobs if s and r == "register_to_template"]
    assert all("res-01" in why or "Set of input files has changed" in why
               for why in registrations), registrations
    assert not {r for r, s, why in jobs if s and "Params have changed" in why}
    # new network inputs: retrained; the split only because the checkpoint is to run
    assert TRAINING <= cohort_level(jobs)
    [why] = [why for r, s, why in jobs if r == "split_sessions"]
    assert why.startswith("Input files updated by another job") and \
        "analysed_sessions.tsv" in why, why

    # ---- the MNI152 grid of the outputs: the warps to MNI152 (the QC's, the top-N masks
    # after the checkpoint) and the heatmaps, no preprocessing step before them
    finer = training_config(cohort)
    finer["preprocessing"]["template_resolution"] = 1
    jobs = dry_run(run, finer, "all")
    for sub in sessions:
        assert per_session(jobs, sub) == {"warp_brain_mask_to_template": 1,
                                          "qc_reportlets": 1, "session_report": 1}, sub
    assert {"preprocessing_qc", "analysed_sessions", "group_heatmaps",
            "heatmap_viewer", "session_index"} <= cohort_level(jobs)

    # ---- the integrated-gradients path: relevance maps and what depends on them only
    ig = training_config(cohort)
    ig["relevance"]["ig_steps"] = 9
    jobs = dry_run(run, ig, "all")
    for sub in sessions:
        assert per_session(jobs, sub) == EXPLANATION, sub
    assert all("Params have changed" in why for r, _, why in jobs if r == "explain_session")
    assert cohort_level(jobs) == {"voxel_inverting", "correlations", "group_heatmaps",
                                  "heatmap_viewer", "relevance_conservation",
                                  "session_index", "group_relevance_stats",
                                  "dataset_description", "all"}  # (it records the config)

    # ---- qc.exclude: the session stays preprocessed and checked, and leaves the split,
    # the training and the assessment (every other session is re-explained by the new
    # models); nothing of its own runs but its page (which says why it is left out)
    left_out = sorted(sessions)[0]
    excluded = training_config(cohort)
    excluded["qc"] = {**excluded.get("qc", {}),
                      "exclude": {f"sub-{left_out}_ses-1": "constructed failure"}}
    jobs = dry_run(run, excluded, "all")
    # every session's jobs wait for it, but its page (the page reads the checkpoint's table)
    assert {r for r, s, _ in jobs if s} <= {"session_report"}
    assert {"analysed_sessions", "build_cache"} | TRAINING <= cohort_level(jobs)
    assert "preprocessing_qc" not in cohort_level(jobs)
    [why] = [why for r, _, why in jobs if r == "analysed_sessions"]
    assert why.startswith("Params have changed")
    # the checkpoint run for real (it reads the QC table and the participants): then
    # the plan is whole, without the session's relevance (its page says why it is left out)
    proc = run_snakemake(run, excluded, "analysed_sessions")
    assert jobs_run(proc) == {"analysed_sessions": 1}, proc.stderr[-3000:]
    jobs = dry_run(run, excluded, "all")
    assert per_session(jobs, left_out) == {"session_report": 1}
    for sub in sorted(sessions)[1:]:
        assert per_session(jobs, sub) == EXPLANATION, sub
    assert {"build_cache"} | TRAINING <= cohort_level(jobs)
    assert not {"analysed_sessions", "preprocessing_qc"} & cohort_level(jobs)
    # back to every session: the checkpoint's table is the one the run was made from
    # (same checksum), so nothing after it reruns
    proc = run_snakemake(run, config, "analysed_sessions")
    assert jobs_run(proc) == {"analysed_sessions": 1}, proc.stderr[-3000:]
    assert nothing_to_do(run_snakemake(run, config, "all", "-n"))
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

    # frozen: that subject's preprocessing and the cohort-level jobs; its relevance maps
    # and the others' reportlets wait for the checkpoint (checked after it below)
    jobs = dry_run(run, frozen, "all")
    assert per_session(jobs, NEW) == {**PREPROCESSING, "session_report": 1}
    for sub in sorted(sessions):
        assert per_session(jobs, sub) == {"session_report": 1}, sub   # the QC table changes
    assert cohort_level(jobs) == {"select_participants", "analysed_sessions",
                                  "preprocessing_qc", "build_cache", "predict_sessions",
                                  "voxel_inverting", "correlations", "group_heatmaps",
                                  "heatmap_viewer", "relevance_conservation",
                                  "session_index", "group_relevance_stats",
                                  "group_input_stats", "all"}
    assert all(why.startswith("Missing output files") for _, s, why in jobs if s == NEW)

    # training mode: no other subject's preprocessing, the training after the checkpoint
    jobs = dry_run(run, config, "all")
    assert per_session(jobs, NEW) == {**PREPROCESSING, "session_report": 1}
    subjects = sorted(after.subject)
    assert {r for r, s, _ in jobs if s not in (NEW, None)} == {"session_report"}
    assert TRAINING <= cohort_level(jobs)
    assert "make_template_cerebellum" not in cohort_level(jobs)

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
    # training mode after the checkpoint: re-split, retrain, re-explain every session
    # because the models change (and for no other reason); no other subject's
    # preprocessing
    jobs = dry_run(run, config, "all")
    # (the new subject's preprocessing is done: its regional means for the baselines)
    assert per_session(jobs, NEW) == {**BASELINE_INPUTS, **EXPLANATION}
    for sub in subjects[:8]:
        assert per_session(jobs, sub) == EXPLANATION, sub
    assert TRAINING <= cohort_level(jobs)
    for rule, sub, why in jobs:
        if sub not in (None, NEW) and rule == "explain_session":
            assert "results/models/" in why or "split.tsv" in why, why

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
    assert cohort_level(jobs) == {"preprocessing_qc", "analysed_sessions", "build_cache",
                                  "predict_sessions", "preprocess_all", "train_all"}


def test_until_a_step_plans_that_step_and_what_it_needs(tiny_cohort, tmp_path):
    config = make_config(tiny_cohort / "rawdata")
    n = len(pd.read_csv(tiny_cohort / "rawdata" / "participants.tsv", sep="\t"))
    jobs = dry_run(tmp_path / "work", config, "all", "--until", "register_to_template")
    counts = Counter(rule for rule, _, _ in jobs)
    # and the template image, made once for every session
    assert counts == {**{r: n for r in BEFORE_TEMPLATE + ("register_to_template",)},
                      "template_images": 1}, counts
