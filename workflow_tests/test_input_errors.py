"""Bad input stops with a clear message naming the session, the file and the problem,
and what could be computed is kept."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gamer_mril.jobs import job_stats

from .conftest import MAP_PATTERNS, PREPROCESSING_RULES, make_config, run_snakemake

pytestmark = pytest.mark.slow


def _path(raw, contrast, subject, session):
    return raw / MAP_PATTERNS[contrast].format(subject=subject, session=session)


def _rewrite(path, fn):
    img = nib.load(path)
    data = fn(np.asarray(img.get_fdata(), dtype=np.float32))
    nib.save(nib.Nifti1Image(data, img.affine), path)


def _dry_run_error(tmp_path, raw) -> str:
    proc = run_snakemake(tmp_path / "work", make_config(raw), "all", "-n")
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_listed_session_without_maps(tmp_path, cohort_copy):
    missing = _path(cohort_copy, "MWF", "002", "2")
    missing.unlink()
    out = _dry_run_error(tmp_path, cohort_copy)
    assert "sub-002 ses-2" in out and str(missing) in out


def test_map_without_table_row(tmp_path, cohort_copy):
    table = pd.read_csv(cohort_copy / "participants.tsv", sep="\t", dtype=str)
    table[~((table.subject == "003") & (table.session == "1"))].to_csv(
        cohort_copy / "participants.tsv", sep="\t", index=False)
    out = _dry_run_error(tmp_path, cohort_copy)
    assert "sub-003 ses-1" in out and "sub-003_ses-1_T1map.nii.gz" in out


@pytest.mark.parametrize("column,value,expect", [
    ("edss", "10.5", "10.5"), ("edss", "3.3", "3.3"), ("age", "", "age"),
])
def test_bad_table_values(tmp_path, cohort_copy, column, value, expect):
    table = pd.read_csv(cohort_copy / "participants.tsv", sep="\t", dtype=str)
    table.loc[0, column] = value
    table.to_csv(cohort_copy / "participants.tsv", sep="\t", index=False)
    out = _dry_run_error(tmp_path, cohort_copy)
    assert "sub-001 ses-1" in out and expect in out and "participants.tsv" in out


def test_duplicate_rows(tmp_path, cohort_copy):
    table = pd.read_csv(cohort_copy / "participants.tsv", sep="\t", dtype=str)
    pd.concat([table, table.iloc[[1]]]).to_csv(cohort_copy / "participants.tsv", sep="\t", index=False)
    out = _dry_run_error(tmp_path, cohort_copy)
    assert "sub-002 ses-1" in out and "duplicate" in out.lower()


def test_nii_where_the_pattern_says_nii_gz(tmp_path, cohort_copy):
    gz = _path(cohort_copy, "NDI", "003", "1")
    plain = gz.with_name(gz.name[: -len(".gz")])
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    out = _dry_run_error(tmp_path, cohort_copy)
    assert "sub-003 ses-1" in out and f"{plain} does" in out and ".nii.gz" in out


def test_a_subset_needs_only_its_own_maps(tmp_path, cohort_copy):
    """participant_label/exclude_session_label select rows; the other sessions' maps may
    be missing or without a row, and the selected table is what the cohort rules read."""
    _path(cohort_copy, "MWF", "003", "1").unlink()  # not selected: not needed
    table = pd.read_csv(cohort_copy / "participants.tsv", sep="\t", dtype=str)
    table[table.subject != "001"].to_csv(cohort_copy / "participants.tsv", sep="\t",
                                         index=False)  # sub-001's maps: no row, not selected
    config = make_config(cohort_copy)
    config["inputs"].update(participant_label=["sub-002"], exclude_session_label=["2"])
    work = tmp_path / "work"
    proc = run_snakemake(work, config, "preprocess_all", "-n")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "1 of 3 sessions" in text and "maps of 3 unselected sessions" in text
    stats = job_stats(text)
    assert stats["scale_map"] == 1 and stats["select_participants"] == 1
    proc = run_snakemake(work, config, "results/participants.tsv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    selected = pd.read_csv(work / "results" / "participants.tsv", sep="\t", dtype=str)
    assert list(zip(selected.subject, selected.session)) == [("002", "1")]
    # a label the table does not have is an error that names it
    config["inputs"]["participant_label"] = ["sub-002", "sub-077"]
    out = run_snakemake(tmp_path / "bad", config, "all", "-n")
    assert out.returncode != 0 and "077" in out.stdout + out.stderr


def test_broken_maps_fail_their_session_only(tmp_path, cohort_copy, tiny_cohort):
    truncated = _path(cohort_copy, "qT1", "001", "1")
    blob = truncated.read_bytes()
    truncated.write_bytes(gzip.compress(gzip.decompress(blob)[: len(gzip.decompress(blob)) // 2]))
    seconds = _path(cohort_copy, "qT1", "002", "1")
    _rewrite(seconds, lambda d: d / 1000.0)
    percent = _path(cohort_copy, "MWF", "002", "1")       # a second problem, same session
    _rewrite(percent, lambda d: d * 100.0)
    four_d = _path(cohort_copy, "NDI", "003", "1")
    _rewrite(four_d, lambda d: np.stack([d, d, d], axis=-1))
    with_nan = _path(cohort_copy, "MWF", "002", "2")      # the only flaw of its session
    _rewrite(with_nan, lambda d: np.where(np.arange(d.size).reshape(d.shape) % 997 == 0, np.nan, d))
    n_nan = int(np.isnan(nib.load(with_nan).get_fdata()).sum())
    assert n_nan > 0

    work = tmp_path / "work"
    config = make_config(cohort_copy)
    config["inputs"]["brain_mask"] = str(
        tiny_cohort / "ground_truth" / "sub-{subject}" / "ses-{session}"
        / "sub-{subject}_ses-{session}_space-qT1_desc-brain_mask.nii.gz")
    proc = run_snakemake(work, config, "preprocess_all", "--keep-going")
    assert proc.returncode != 0
    logs = work / "results" / "logs" / "scale_map"

    def log(sub, ses):
        return (logs / f"sub-{sub}_ses-{ses}.log").read_text()

    # Each broken session's log names the session, every bad file and what is wrong
    # with it: the job checks all three maps before it stops.
    cases = [("001", "1", truncated, "truncated"), ("002", "1", seconds, "seconds"),
             ("002", "1", percent, "percent"), ("003", "1", four_d, "volumes")]
    for sub, ses, path, word in cases:
        text = log(sub, ses)
        assert f"sub-{sub} ses-{ses}" in text and str(path) in text and word in text.lower(), text
    assert "2 bad input map(s)" in log("002", "1")
    # A failed session leaves no output (nor sidecar) that could be taken for done.
    for sub, ses, _, _ in cases:
        anat = work / "results" / f"sub-{sub}" / f"ses-{ses}" / "anat"
        assert not anat.exists() or not any(anat.iterdir()), sorted(anat.iterdir())
    # NaN voxels: counted, zeroed, warned about; not an error: the session (and what was
    # computed for it) is done.
    anat = work / "results" / "sub-002" / "ses-2" / "anat"
    scaled = anat / "sub-002_ses-2_desc-scaled_MWFmap"
    facts = json.loads(scaled.with_suffix(".json").read_text())["Facts"]
    assert facts["NonFiniteVoxels"] == n_nan
    assert np.isfinite(nib.load(str(scaled) + ".nii.gz").get_fdata()).all()
    assert "non-finite" in log("002", "2")
    assert len(list(anat.glob("*desc-preproc_*map.nii.gz"))) == 3
    # Once the maps are fixed, a rerun runs the failed sessions only.
    for path in (truncated, seconds, percent, four_d):
        src = tiny_cohort / "rawdata" / path.relative_to(cohort_copy)
        path.write_bytes(src.read_bytes())
    proc = run_snakemake(work, config, "preprocess_all", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_stats(proc.stdout + proc.stderr) == {**{r: 3 for r in PREPROCESSING_RULES},
                                                    "preprocessing_qc": 1, "preprocess_all": 1}


def test_a_missing_table_stops_every_target_but_not_linting(tmp_path):
    """Without its participants table the workflow still parses (--lint, --list-rules),
    and every target stops when it is planned, naming the table."""
    config = make_config(tmp_path / "nowhere")
    table = config["inputs"]["participants"]
    lint = run_snakemake(tmp_path / "lint", config, "--lint")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    assert f"The participants table {table} does not exist" in lint.stderr
    for target in ("all", "preprocess_all", "train_all", "explain_all", "assess_all"):
        proc = run_snakemake(tmp_path / target, config, target, "-n")
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "MissingInputException" in text, (target, text[-2000:])
        assert table in text, target


def test_a_qt1_map_300_mm_away_stops_its_coregistration_only(tmp_path, cohort_copy):
    """A qT1 map whose header puts it 300 mm from NDI: that session's co-registration
    stops before ANTs, its log naming the session, both files and what to check; the
    other session's transforms and the session's own scaled maps are kept."""
    from gamer_mril.layout import SUFFIX, Session

    moved = _path(cohort_copy, "qT1", "002", "1")
    img = nib.load(moved)
    affine = img.affine.copy()
    affine[0, 3] += 300.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), moved)
    work = tmp_path / "work"
    good, bad = Session("results", "001", "1"), Session("results", "002", "1")
    targets = [s.xfm_to_ndi(SUFFIX[c]) for s in (good, bad) for c in ("qT1", "MWF")]
    proc = run_snakemake(work, make_config(cohort_copy), *targets, "--keep-going")
    assert proc.returncode != 0
    log = (work / "results" / "logs" / "coregister_to_ndi" / "sub-002_ses-1.log").read_text()
    ndi = _path(cohort_copy, "NDI", "002", "1")
    assert f"sub-002 ses-1: the qT1 map {moved} and the NDI map {ndi} do not overlap in " \
           f"scanner space" in log, log[-3000:]
    assert "qform" in log and "belong to sub-002 ses-1" in log
    assert "Zero-valued spacing" not in log and "itk::" not in log
    assert all((work / t).exists() for t in targets[:2])
    assert not any((work / t).exists() for t in targets[2:])
    for c in ("qT1", "MWF", "NDI"):                    # what the session computed is kept
        assert (work / bad.scaled(SUFFIX[c])).exists()


def test_planning_errors_name_file_key_and_link(tmp_path, cohort_copy):
    """Problems found when the run is planned: a config typo (the file, the key, the
    nearest key, no schema), a number on the command line (accepted), a dangling symbolic
    link given as a map (the session, the file, the link's target)."""
    config = make_config(cohort_copy)
    typo = dict(config, trainig={"epochs": 3})
    proc = run_snakemake(tmp_path / "typo", typo, "all", "-n")
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"trainig (in {tmp_path / 'typo' / 'config.yaml'}): unknown key 'trainig'" in text
    assert "did you mean 'training'?" in text
    assert "$schema" not in text and "additionalProperties" not in text, text[-3000:]
    assert len(text.splitlines()) < 20

    proc = run_snakemake(tmp_path / "number", config, "preprocess_all", "-n",
                         "--config", "training={restarts: 3}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    link = _path(cohort_copy, "MWF", "003", "1")
    target = tmp_path / "moved-away" / link.name
    link.unlink()
    link.symlink_to(target)
    proc = run_snakemake(tmp_path / "link", config, "all", "-n")
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "MissingInputException" not in text
    assert f"sub-003 ses-1: the MWF map {link} is a symbolic link to {target} that does " \
           f"not exist" in text, text[-3000:]
