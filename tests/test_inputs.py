"""Tests of input validation (gamer_mril.inputs): every error names the session and file."""

from __future__ import annotations

import gzip
import os
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gamer_mril import CONTRASTS
from gamer_mril.errors import InputError
from gamer_mril.inputs import (
    Selection,
    load_participants,
    run_select_participants,
    select_sessions,
    write_participants,
)
from gamer_mril.mapfiles import check_session_files, find_maps, load_map
from gamer_mril.valueranges import UNITS, check_units

HEADER = "subject\tsession\tage\tedss\n"
SUFFIX = {"qT1": "T1map", "MWF": "MWFmap", "NDI": "model-noddi_param-icvf_dwimap"}


def write_table(tmp_path, body, header=HEADER, name="participants.tsv"):
    path = tmp_path / name
    path.write_text(header + body)
    return path


def write_nifti(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine),
             str(path))
    return path


def patterns_for(root):
    return {c: str(root / "sub-{subject}" / "ses-{session}" / "anat"
                   / f"sub-{{subject}}_ses-{{session}}_{SUFFIX[c]}.nii.gz")
            for c in CONTRASTS}


def make_maps(root, subject, session, contrasts=CONTRASTS):
    paths = {}
    for c in contrasts:
        p = root / f"sub-{subject}" / f"ses-{session}" / "anat" / \
            f"sub-{subject}_ses-{session}_{SUFFIX[c]}.nii.gz"
        paths[c] = write_nifti(p, np.ones((6, 6, 6), np.float32))
    return paths


def two_session_table(tmp_path):
    return load_participants(write_table(tmp_path, "01\t01\t40\t2\n02\t01\t50\t6\n"))


# ----------------------------------------------------------------------------------------
# participants table: happy path
# ----------------------------------------------------------------------------------------

def test_load_participants_dtypes_labels_zeros_prefixes(tmp_path):
    path = write_table(
        tmp_path,
        "sub-010\tses-02\t41.5\t5\tF\tRRMS\n"
        "sub-002\tses-01\t30\t4.5\tM\tSPMS\n"
        "sub-010\tses-01\t40\t0\tF\tn/a\n",
        header="subject\tsession\tage\tedss\tsex\tphenotype\n")
    t = load_participants(path)
    assert list(t["subject"]) == ["002", "010", "010"]
    assert list(t["session"]) == ["01", "01", "02"]
    assert t["subject"].map(type).eq(str).all() and t["session"].map(type).eq(str).all()
    assert t["age"].dtype == np.float64 and t["edss"].dtype == np.float64
    assert t["label"].dtype == np.int64
    assert list(t["edss"]) == [4.5, 0.0, 5.0]
    assert list(t["label"]) == [0, 0, 1]  # 4.5 mild, 0 mild, 5 severe (EDSS >= 5)
    assert list(t["age"]) == [30.0, 40.0, 41.5]
    assert list(t["sex"]) == ["M", "F", "F"]
    assert pd.isna(t["phenotype"].iloc[1]) and t["phenotype"].iloc[0] == "SPMS"
    assert t.index.tolist() == [0, 1, 2]


def test_load_participants_csv_and_bids_column_names(tmp_path):
    path = write_table(tmp_path, "sub-07,ses-1,33,7.5\n",
                       header="participant_id,session_id,Age,EDSS\n", name="p.csv")
    t = load_participants(path)
    assert (t.loc[0, "subject"], t.loc[0, "session"]) == ("07", "1")
    assert t.loc[0, "edss"] == 7.5 and t.loc[0, "label"] == 1


def test_load_participants_missing_file(tmp_path):
    path = tmp_path / "nope.tsv"
    with pytest.raises(InputError, match="does not exist") as e:
        load_participants(path)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------------------
# participants table: errors
# ----------------------------------------------------------------------------------------

def test_missing_required_column(tmp_path):
    path = write_table(tmp_path, "01\t01\t40\n", header="subject\tsession\tage\n")
    with pytest.raises(InputError) as e:
        load_participants(path)
    msg = str(e.value)
    assert str(path) in msg and "'edss'" in msg


def test_csv_content_with_tsv_name_gets_a_hint(tmp_path):
    path = write_table(tmp_path, "01,01,40,2\n", header="subject,session,age,edss\n")
    with pytest.raises(InputError, match=r"rename it to \.csv") as e:
        load_participants(path)
    assert str(path) in str(e.value)


def test_duplicate_rows_name_session_and_both_lines(tmp_path):
    path = write_table(tmp_path, "01\t01\t40\t2\n02\t01\t41\t3\n\nsub-01\t01\t40\t2\n")
    with pytest.raises(InputError) as e:
        load_participants(path)
    msg = str(e.value)
    # header is line 1, rows on lines 2 and 3, a blank line 4, the duplicate on line 5
    assert "sub-01 ses-01" in msg and str(path) in msg
    assert "lines 2 and 5" in msg


@pytest.mark.parametrize("value, what", [
    ("10.5", "outside the scale 0 to 10"),
    ("-1", "outside the scale 0 to 10"),
    ("3.3", "not a step of the scale"),
    ("abc", "not a number"),
    ("", "EDSS is missing"),
    ("n/a", "EDSS is missing"),
    ("nan", "EDSS is missing"),
    ("inf", "not a number"),
])
def test_bad_edss(tmp_path, value, what):
    path = write_table(tmp_path, f"01\t01\t40\t2\n03\t02\t40\t{value}\n")
    with pytest.raises(InputError) as e:
        load_participants(path)
    msg = str(e.value)
    assert what in msg
    assert "sub-03 ses-02" in msg and str(path) in msg and "line 3" in msg
    if value not in ("", "n/a", "nan"):
        assert repr(value) in msg
    assert "sub-01 ses-01" not in msg  # the valid row is not blamed


def test_edss_boundaries_and_float_noise(tmp_path):
    path = write_table(tmp_path, "01\t01\t40\t0\n01\t02\t40\t10\n01\t03\t40\t4.99\n")
    with pytest.raises(InputError, match="not a step") as e:
        load_participants(path)
    assert "sub-01 ses-03" in str(e.value) and "'4.99'" in str(e.value)
    path = write_table(tmp_path,
                       "01\t01\t40\t0\n01\t02\t40\t10.0\n01\t03\t40\t4.9999999999\n"
                       "01\t04\t40\t4.5\n")
    t = load_participants(path)
    assert list(t["edss"]) == [0.0, 10.0, 5.0, 4.5]  # float noise snapped to the 0.5 grid
    assert list(t["label"]) == [0, 1, 1, 0]


def test_missing_trailing_edss_cell(tmp_path):
    path = write_table(tmp_path, "04\t01\t40\n")  # editor trimmed the empty last cell
    with pytest.raises(InputError, match="EDSS is missing") as e:
        load_participants(path)
    assert "sub-04 ses-01" in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("value, what", [
    ("", "age is missing"),
    ("NA", "age is missing"),
    ("forty", "not a number"),
    ("40,5", "decimal point"),
    ("0", "not a plausible age"),
    ("130", "not a plausible age"),
])
def test_bad_age(tmp_path, value, what):
    path = write_table(tmp_path, f"05\t01\t{value}\t3\n")
    with pytest.raises(InputError) as e:
        load_participants(path)
    msg = str(e.value)
    assert what in msg and "sub-05 ses-01" in msg and str(path) in msg and "line 2" in msg
    if value not in ("", "NA"):
        assert repr(value) in msg


def test_bad_labels_and_extra_fields(tmp_path):
    path = write_table(tmp_path, "\t01\t40\t2\n0 6\t01\t40\t2\n07\t01\t40\t2\textra\n")
    with pytest.raises(InputError) as e:
        load_participants(path)
    msg = str(e.value)
    assert "3 problems" in msg and str(path) in msg
    assert "line 2: the subject is missing" in msg
    assert "'0 6'" in msg and "letters and digits" in msg
    assert "line 4" in msg and "fields" in msg


def test_all_row_problems_reported_together(tmp_path):
    path = write_table(tmp_path, "01\t01\tabc\t2\n02\t01\t40\t11\n")
    with pytest.raises(InputError) as e:
        load_participants(path)
    msg = str(e.value)
    assert "2 problems" in msg
    assert "sub-01 ses-01" in msg and "'abc'" in msg
    assert "sub-02 ses-01" in msg and "'11'" in msg


def test_empty_table(tmp_path):
    path = write_table(tmp_path, "")
    with pytest.raises(InputError, match="no sessions") as e:
        load_participants(path)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------------------
# find_maps / check_session_files
# ----------------------------------------------------------------------------------------

def test_find_maps_repeated_placeholders(tmp_path):
    make_maps(tmp_path, "01", "01")
    make_maps(tmp_path, "010", "b2")
    make_maps(tmp_path, "02", "01", contrasts=("qT1",))
    # Not inputs: an extra BIDS entity, and a file from another pattern.
    write_nifti(tmp_path / "sub-01/ses-01/anat/sub-01_ses-01_acq-x_T1map.nii.gz",
                np.ones((6, 6, 6)))
    write_nifti(tmp_path / "sub-01/ses-01/anat/sub-01_ses-01_other.nii.gz", np.ones((6, 6, 6)))
    found = find_maps(patterns_for(tmp_path))
    assert list(found) == [("01", "01"), ("010", "b2"), ("02", "01")]
    assert set(found[("01", "01")]) == set(CONTRASTS)
    assert found[("010", "b2")]["MWF"] == str(
        tmp_path / "sub-010/ses-b2/anat/sub-010_ses-b2_MWFmap.nii.gz")
    assert set(found[("02", "01")]) == {"qT1"}


def test_find_maps_placeholder_must_take_one_value(tmp_path):
    bad = write_nifti(tmp_path / "sub-01/ses-01/anat/sub-02_ses-01_T1map.nii.gz",
                      np.ones((6, 6, 6)))
    with pytest.raises(InputError) as e:
        find_maps({"qT1": patterns_for(tmp_path)["qT1"]})
    msg = str(e.value)
    assert str(bad) in msg and "01 vs 02" in msg


def test_find_maps_bad_pattern(tmp_path):
    with pytest.raises(InputError, match=r"no \{session\} placeholder"):
        find_maps({"qT1": str(tmp_path / "sub-{subject}_T1map.nii.gz")})
    with pytest.raises(InputError, match=r"\{sub\}"):
        find_maps({"qT1": str(tmp_path / "sub-{sub}_ses-{session}_T1map.nii.gz")})


def test_find_maps_literal_glob_characters(tmp_path):
    root = tmp_path / "data[1]"
    make_maps(root, "01", "01", contrasts=("qT1",))
    make_maps(tmp_path / "data1", "09", "09", contrasts=("qT1",))  # would match [1] as glob
    found = find_maps({"qT1": patterns_for(root)["qT1"]})
    assert list(found) == [("01", "01")]


def test_check_session_files_ok(tmp_path):
    table = two_session_table(tmp_path)
    make_maps(tmp_path, "01", "01")
    make_maps(tmp_path, "02", "01")
    check_session_files(table, patterns_for(tmp_path))  # no error


def test_listed_session_without_maps(tmp_path):
    table = two_session_table(tmp_path)
    make_maps(tmp_path, "01", "01")
    make_maps(tmp_path, "02", "01", contrasts=("qT1",))
    with pytest.raises(InputError) as e:
        check_session_files(table, patterns_for(tmp_path))
    msg = str(e.value)
    assert "2 problems" in msg
    for c in ("MWF", "NDI"):
        expected = tmp_path / f"sub-02/ses-01/anat/sub-02_ses-01_{SUFFIX[c]}.nii.gz"
        assert f"sub-02 ses-01 is listed in the participants table but its {c} map " \
               f"{expected} does not exist" in msg
    assert "sub-01 ses-01" not in msg


def test_map_without_table_row(tmp_path):
    table = two_session_table(tmp_path)
    make_maps(tmp_path, "01", "01")
    make_maps(tmp_path, "02", "01")
    orphan = make_maps(tmp_path, "03", "07", contrasts=("NDI",))["NDI"]
    with pytest.raises(InputError) as e:
        check_session_files(table, patterns_for(tmp_path))
    msg = str(e.value)
    assert str(orphan) in msg and "sub-03 ses-07" in msg and "no row" in msg


def test_masks_optional_but_orphan_mask_is_error(tmp_path):
    table = two_session_table(tmp_path)
    make_maps(tmp_path, "01", "01")
    make_maps(tmp_path, "02", "01")
    mask_pattern = str(tmp_path / "masks" / "sub-{subject}_ses-{session}_mask.nii.gz")
    write_nifti(tmp_path / "masks" / "sub-01_ses-01_mask.nii.gz", np.ones((6, 6, 6), np.uint8))
    check_session_files(table, patterns_for(tmp_path), mask_pattern)  # sub-02 has none: OK
    orphan = write_nifti(tmp_path / "masks" / "sub-09_ses-01_mask.nii.gz",
                         np.ones((6, 6, 6), np.uint8))
    with pytest.raises(InputError) as e:
        check_session_files(table, patterns_for(tmp_path), mask_pattern)
    msg = str(e.value)
    assert str(orphan) in msg and "sub-09 ses-01" in msg and "brain mask" in msg


def test_nii_where_pattern_says_nii_gz_names_the_file_found(tmp_path):
    table = two_session_table(tmp_path)
    make_maps(tmp_path, "01", "01")
    paths = make_maps(tmp_path, "02", "01")
    gz = paths["MWF"]
    plain = gz.with_name(gz.name[:-3])
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    with pytest.raises(InputError) as e:
        check_session_files(table, patterns_for(tmp_path))
    msg = str(e.value)
    assert f"{gz} does not exist, but {plain} does" in msg
    assert "sub-02 ses-01" in msg and "MWF" in msg and "says .nii.gz" in msg
    # the reverse: the pattern says .nii, the file is .nii.gz
    patterns = {c: p[:-3] for c, p in patterns_for(tmp_path).items()}
    with pytest.raises(InputError) as e:
        check_session_files(table.iloc[:1], patterns)
    assert "says .nii and the file is .nii.gz" in str(e.value)


def _three_subjects(tmp_path):
    table = load_participants(write_table(
        tmp_path, "01\t01\t40\t2\n01\t02\t42\t2.5\n02\t01\t50\t6\n03\t01\t60\t7\n"))
    for subject, session in (("01", "01"), ("01", "02"), ("02", "01"), ("03", "01")):
        make_maps(tmp_path, subject, session)
    return table


@pytest.mark.parametrize("config, kept", [
    ({}, {("01", "01"), ("01", "02"), ("02", "01"), ("03", "01")}),
    ({"participant_label": ["sub-01", "03"]}, {("01", "01"), ("01", "02"), ("03", "01")}),
    ({"exclude_participant_label": ["02"]}, {("01", "01"), ("01", "02"), ("03", "01")}),
    ({"session_label": ["ses-01"]}, {("01", "01"), ("02", "01"), ("03", "01")}),
    ({"participant_label": ["01"], "exclude_session_label": ["01"]}, {("01", "02")}),
])
def test_selection_keeps_the_labelled_rows(tmp_path, config, kept):
    table = _three_subjects(tmp_path)
    selection = Selection.from_config(config)
    assert selection.active == bool(config)
    selected = select_sessions(table, selection)
    assert set(zip(selected["subject"], selected["session"])) == kept
    # only the selected sessions need their maps; the others on disk are ignored, counted
    ignored = check_session_files(selected, patterns_for(tmp_path), selection=selection)
    assert ignored == 4 - len(kept)


def test_unselected_sessions_need_no_maps_and_no_rows(tmp_path):
    table = _three_subjects(tmp_path)
    selection = Selection.from_config({"participant_label": ["01"]})
    selected = select_sessions(table, selection)
    # a map of an unselected subject with no row at all is ignored, not an error ...
    make_maps(tmp_path, "09", "01", contrasts=("NDI",))
    # ... and an unselected subject may lack its maps
    for path in (tmp_path / "sub-03").rglob("*.nii.gz"):
        path.unlink()
    # on disk and ignored: sub-02 ses-01 and sub-09 ses-01 (sub-03 has no files left)
    assert check_session_files(selected, patterns_for(tmp_path), selection=selection) == 2
    # a map of a selected subject without a row is still an error
    orphan = make_maps(tmp_path, "01", "05", contrasts=("qT1",))["qT1"]
    with pytest.raises(InputError, match="no row") as e:
        check_session_files(selected, patterns_for(tmp_path), selection=selection)
    assert str(orphan) in str(e.value)


def test_selection_errors_name_the_labels(tmp_path):
    table = _three_subjects(tmp_path)
    with pytest.raises(InputError) as e:
        select_sessions(table, Selection.from_config(
            {"participant_label": ["01", "07"], "exclude_session_label": ["09"]}))
    msg = str(e.value)
    assert "participant_label names the subject label(s) 07" in msg
    assert "exclude_session_label names the session label(s) 09" in msg
    with pytest.raises(InputError, match="select no session"):
        select_sessions(table, Selection.from_config(
            {"participant_label": ["02"], "exclude_participant_label": ["02"]}))
    with pytest.raises(InputError, match="not a BIDS label"):
        Selection.from_config({"session_label": ["a_b"]})


def test_selected_table_reads_back_unchanged(tmp_path):
    table = _three_subjects(tmp_path)
    out = tmp_path / "out" / "participants.tsv"
    run_select_participants(tmp_path / "participants.tsv", out,
                            selection={"exclude_participant_label": ["sub-02"]},
                            maps=patterns_for(tmp_path))
    back = load_participants(out)
    expected = table[table["subject"] != "02"].reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected)
    write_participants(back, tmp_path / "again.tsv")
    assert (tmp_path / "again.tsv").read_text() == out.read_text()


def test_patterns_must_name_the_three_contrasts(tmp_path):
    table = two_session_table(tmp_path)
    pats = patterns_for(tmp_path)
    del pats["NDI"]
    with pytest.raises(InputError, match="missing: NDI"):
        check_session_files(table, pats)


# ----------------------------------------------------------------------------------------
# load_map
# ----------------------------------------------------------------------------------------

def assert_names(exc, path, who="sub-01 ses-01", contrast="qT1"):
    msg = str(exc.value)
    assert who in msg and str(path) in msg and contrast in msg, msg


def test_load_map_ok_and_nonfinite_counted(tmp_path):
    data = np.arange(216, dtype=np.float32).reshape(6, 6, 6) + 1
    data[0, 0, 0] = np.nan
    data[1, 2, 3] = np.inf
    data[5, 5, 5] = -np.inf
    data[2, 2, 2] = np.nan
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    path = write_nifti(tmp_path / "m.nii.gz", data, affine)
    out, aff, n_bad = load_map(path, "sub-01 ses-01", "qT1")
    assert n_bad == 4
    assert out.dtype == np.float32 and out.shape == (6, 6, 6)
    assert np.isfinite(out).all()
    for ijk in [(0, 0, 0), (1, 2, 3), (5, 5, 5), (2, 2, 2)]:
        assert out[ijk] == 0
    assert out[3, 3, 3] == data[3, 3, 3]
    np.testing.assert_allclose(aff, affine)
    # uncompressed .nii, and a (subject, session) pair as the session argument
    sub = data[1:, 1:, 1:]  # keeps (1,2,3), (2,2,2) and (5,5,5), drops (0,0,0)
    out, _, n_bad = load_map(write_nifti(tmp_path / "ok.nii", sub), ("01", "01"), "qT1")
    assert n_bad == 3 and np.isfinite(out).all()


def test_load_map_missing_file(tmp_path):
    path = tmp_path / "absent.nii.gz"
    with pytest.raises(InputError, match="does not exist") as e:
        load_map(path, ("01", "01"), "qT1")
    assert_names(e, path)


def test_load_map_random_bytes(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match="could not be read") as e:
        load_map(path, "sub-01 ses-01", "MWF")
    assert_names(e, path, contrast="MWF")
    assert e.value.__cause__ is not None


def test_load_map_random_bytes_in_gzip(tmp_path):
    path = tmp_path / "junk2.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(1).bytes(5000)))
    with pytest.raises(InputError, match="could not be read") as e:
        load_map(path, "sub-01 ses-01", "NDI")
    assert_names(e, path, contrast="NDI")
    assert e.value.__cause__ is not None


@pytest.mark.parametrize("name, keep", [
    ("t.nii.gz", None),  # gzip stream cut in half (inside the data)
    ("t.nii", None),     # uncompressed, cut in half (inside the data)
    ("h.nii", 200),      # uncompressed, cut inside the 348-byte header
    ("h.nii.gz", 30),    # gzip cut inside the header
])
def test_load_map_truncated(tmp_path, name, keep):
    path = tmp_path / name
    write_nifti(path, np.random.default_rng(2).random((20, 20, 20)).astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 if keep is None else keep])
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        load_map(path, "sub-01 ses-01", "qT1")
    assert_names(e, path)
    assert e.value.__cause__ is not None


def test_load_map_4d(tmp_path):
    path = write_nifti(tmp_path / "v3.nii.gz", np.ones((6, 6, 6, 3), np.float32))
    with pytest.raises(InputError, match="3 volumes") as e:
        load_map(path, "sub-01 ses-01", "NDI")
    assert_names(e, path, contrast="NDI")

    vol = np.random.default_rng(3).random((6, 6, 6, 1)).astype(np.float32)
    path = write_nifti(tmp_path / "v1.nii.gz", vol)
    data, _, n_bad = load_map(path, "sub-01 ses-01", "NDI")
    assert data.shape == (6, 6, 6) and n_bad == 0
    np.testing.assert_array_equal(data, vol[..., 0])


def test_load_map_too_few_dimensions(tmp_path):
    path = write_nifti(tmp_path / "2d.nii.gz", np.ones((6, 6), np.float32))
    with pytest.raises(InputError, match="dimension") as e:
        load_map(path, "sub-01 ses-01", "qT1")
    assert_names(e, path)
    path = write_nifti(tmp_path / "slice.nii.gz", np.ones((6, 6, 1), np.float32))
    with pytest.raises(InputError, match="single slice") as e:
        load_map(path, "sub-01 ses-01", "qT1")
    assert_names(e, path)


def test_load_map_singular_affine(tmp_path):
    # nibabel refuses to write a zero affine, so zero the sform rows in the header bytes.
    img = nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(np.eye(4), code=1)
    path = tmp_path / "z.nii"
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    raw[280:328] = bytes(48)  # srow_x, srow_y, srow_z
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="voxel-to-world") as e:
        load_map(path, "sub-01 ses-01", "qT1")
    assert_names(e, path)


# ----------------------------------------------------------------------------------------
# check_units
# ----------------------------------------------------------------------------------------

def brain_like(rng, low, high, shape=(6, 6, 6), background=0.3):
    data = rng.uniform(low, high, size=shape).astype(np.float32)
    data[rng.random(shape) < background] = 0  # background voxels are ignored
    return data


def test_units_table():
    assert UNITS == {"qT1": ("ms", "s"), "MWF": ("fraction", "percent"), "NDI": ("fraction",)}


def test_t1_seconds_declared_ms_is_error_and_declared_s_gives_1000(tmp_path):
    rng = np.random.default_rng(4)
    seconds = brain_like(rng, 0.6, 4.0)
    with pytest.raises(InputError) as e:
        check_units(seconds, "qT1", "ms", "sub-01 ses-01", tmp_path / "t1.nii.gz")
    msg = str(e.value)
    assert "look like seconds" in msg and "'units: qT1: s'" in msg
    assert "sub-01 ses-01" in msg and str(tmp_path / "t1.nii.gz") in msg
    # the median of the map (every positive voxel: too small for a core) is quoted
    assert f"median {np.median(seconds[seconds > 0]):.4g}" in msg
    assert check_units(seconds, "qT1", "s", "sub-01 ses-01", "t1") == 1000.0
    assert check_units(seconds, "qT1", " S ", "sub-01 ses-01", "t1") == 1000.0


def test_t1_ms_declared_s_is_error_and_declared_ms_gives_1(tmp_path):
    ms = brain_like(np.random.default_rng(5), 600, 4000)
    with pytest.raises(InputError, match="look like milliseconds") as e:
        check_units(ms, "qT1", "s", ("02", "03"), tmp_path / "t1.nii.gz")
    assert "sub-02 ses-03" in str(e.value) and str(tmp_path / "t1.nii.gz") in str(e.value)
    assert check_units(ms, "qT1", "ms", ("02", "03"), "t1") == 1.0


def test_unit_check_is_robust_to_a_few_hot_voxels():
    seconds = np.full((10, 10, 10), 1.2, np.float32)
    seconds.flat[:5] = 3000.0  # 0.5 % outliers do not move the 99th percentile
    assert check_units(seconds, "qT1", "s", "sub-01 ses-01", "t1") == 1000.0
    seconds.flat[0] = np.nan  # non-finite values are ignored
    assert check_units(seconds, "qT1", "s", "sub-01 ses-01", "t1") == 1000.0


def test_mwf_percent_declared_fraction_is_error_and_declared_percent_gives_001(tmp_path):
    percent = brain_like(np.random.default_rng(6), 2, 30)
    path = tmp_path / "mwf.nii.gz"
    with pytest.raises(InputError) as e:
        check_units(percent, "MWF", "fraction", "sub-01 ses-01", path)
    msg = str(e.value)
    assert "look like a percentage" in msg and "'units: MWF: percent'" in msg
    assert "sub-01 ses-01" in msg and str(path) in msg
    assert check_units(percent, "MWF", "percent", "sub-01 ses-01", path) == 0.01


def test_mwf_fraction_declared_percent_is_error(tmp_path):
    fraction = brain_like(np.random.default_rng(7), 0.02, 0.3)
    path = tmp_path / "mwf.nii.gz"
    with pytest.raises(InputError, match="look like a fraction") as e:
        check_units(fraction, "MWF", "percent", "sub-01 ses-01", path)
    assert "sub-01 ses-01" in str(e.value) and str(path) in str(e.value)
    assert check_units(fraction, "MWF", "fraction", "sub-01 ses-01", path) == 1.0


def test_ndi_must_be_fraction(tmp_path):
    rng = np.random.default_rng(8)
    path = tmp_path / "ndi.nii.gz"
    assert check_units(brain_like(rng, 0.1, 0.9), "NDI", "fraction", "sub-01 ses-01",
                       path) == 1.0
    with pytest.raises(InputError, match="must be a fraction") as e:
        check_units(brain_like(rng, 10, 90), "NDI", "fraction", "sub-01 ses-01", path)
    assert "sub-01 ses-01" in str(e.value) and str(path) in str(e.value)
    with pytest.raises(InputError, match="not known for NDI") as e:
        check_units(brain_like(rng, 0.1, 0.9), "NDI", "percent", "sub-01 ses-01", path)
    assert "units: NDI:" in str(e.value) and str(path) in str(e.value)


def test_unknown_unit_and_empty_map(tmp_path):
    path = tmp_path / "t1.nii.gz"
    with pytest.raises(InputError, match="'msec'") as e:
        check_units(np.ones((6, 6, 6)), "qT1", "msec", "sub-01 ses-01", path)
    assert "sub-01 ses-01" in str(e.value) and str(path) in str(e.value)
    empty = np.zeros((6, 6, 6), np.float32)
    empty[0, 0, 0] = -5
    empty[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="empty") as e:
        check_units(empty, "qT1", "ms", "sub-01 ses-01", path)
    assert "sub-01 ses-01" in str(e.value) and str(path) in str(e.value)


def test_package_does_not_import_snakemake():
    import subprocess

    code = ("import sys, gamer_mril.inputs; "
            "sys.exit(1 if 'snakemake' in sys.modules else 0)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# ----------------------------------------------------------------------------------------
# check_units on maps of a head: T1 in ms or s, R1 in 1/s or 1/ms (QT1_CRITERIA)
# ----------------------------------------------------------------------------------------

#: Textbook T1 (ms) per field strength: white and grey matter, CSF, MS lesions (a range),
#: scalp fat, skull (marrow and partial volume).
T1_VALUES = {
    "1.5T": dict(wm=650, gm=1100, csf=3600, lesion=(1000, 2400), fat=260, skull=500),
    "3T": dict(wm=850, gm=1350, csf=3800, lesion=(1300, 2600), fat=380, skull=600),
    "7T": dict(wm=1150, gm=1900, csf=4200, lesion=(1700, 3000), fat=600, skull=800),
}


def head_t1(voxel=(2.0, 2.0, 2.0), field="3T", head=True, seed=0, lesions=8,
            failures=0.005, speckle=False):
    """A T1 map (ms) of an ellipsoid head: white matter, grey matter, a CSF rim and two
    ventricles, deep grey matter, lesions, skull and scalp fat (``head``; else the brain
    alone), 3% noise, fit failures (0, 5000 ms, negative) on ``failures`` of the brain, and
    optionally a speckled noise background. Returns ``(t1, affine, brain)``."""
    rng = np.random.default_rng(seed)
    voxel = np.asarray(voxel, float)
    shape = tuple(int(round(e / v)) for e, v in zip((170.0, 210.0, 180.0), voxel))
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * v
                                  for n, v in zip(shape, voxel)], indexing="ij"))

    def inside(radii, centre=(0.0, 0.0, 0.0)):
        return sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1

    v = T1_VALUES[field]
    brain_r = np.array([62.0, 82.0, 66.0])
    t1 = np.zeros(shape, np.float32)
    if head:
        t1[inside(brain_r + 14)] = v["fat"]
        t1[inside(brain_r + 9)] = v["skull"]
    brain = inside(brain_r)
    t1[brain] = v["csf"]
    t1[inside(brain_r - 3)] = v["gm"]
    t1[inside(brain_r * 0.72)] = v["wm"]
    for x in (-18, 18):
        t1[inside((9, 12, 9), (x, 0, 0))] = v["gm"]
    for x in (-9, 9):
        t1[inside((8, 35, 11), (x, 5, 8))] = v["csf"]
    for _ in range(lesions):
        r = rng.uniform(2.5, 6)
        t1[inside((r, r, r), rng.uniform(-30, 30, 3) * [1, 1.3, 1]) & brain] = \
            rng.uniform(*v["lesion"])
    t1 *= (1 + rng.normal(0, 0.03, shape)).astype(np.float32)
    tissue = t1 > 0
    bad = rng.choice(np.flatnonzero(brain), int(failures * brain.sum()), replace=False)
    t1.flat[bad] = rng.choice([0.0, 5000.0, -100.0], bad.size)
    if speckle:
        bg = ~tissue
        t1[bg] = np.abs(rng.normal(0, 40, int(bg.sum()))) * (rng.random(int(bg.sum())) < 0.5)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * voxel
    return t1, affine, brain


def r1_of(t1_ms, per="s", speckle=False, seed=1):
    """The R1 map (1/T1) of a T1 map in ms, in 1/s or 1/ms, 0 where T1 is no tissue;
    optionally a speckled background in R1's own units."""
    scale = 1000.0 if per == "s" else 1.0
    r1 = np.where(t1_ms > 100, scale / np.maximum(t1_ms, 1.0), 0).astype(np.float32)
    if speckle:
        rng = np.random.default_rng(seed)
        bg = r1 == 0
        r1[bg] = np.abs(rng.normal(0, 0.03 * scale / 1000, int(bg.sum()))) * \
            (rng.random(int(bg.sum())) < 0.5)
    return r1


MAPS = [  # field, voxel (mm), head or brain only, speckled background
    ("3T", (2.0, 2.0, 2.0), True, False),
    ("1.5T", (2.0, 2.0, 2.0), False, True),
    ("7T", (1.2, 1.2, 3.0), True, True),
    ("3T", (1.2, 1.2, 3.0), False, False),
]


@pytest.mark.parametrize("field,voxel,head,speckle", MAPS)
def test_r1_maps_are_named_as_r1_and_the_fix_is_to_invert(tmp_path, field, voxel, head,
                                                         speckle):
    """An R1 map (1/s or 1/ms), with lesions, noise and fit failures, given as qT1 is named
    an R1 map whatever unit is declared, and the fix is to invert it, never 'units: s'."""
    t1, affine, brain = head_t1(voxel, field, head)
    if not head:
        t1 = np.where(brain, t1, 0)
    path = tmp_path / "sub-01_ses-01_T1map.nii.gz"
    for per, formula in (("s", "1000 / R1"), ("ms", "1 / R1")):
        r1 = r1_of(t1, per, speckle)
        for declared in ("ms", "s"):
            with pytest.raises(InputError) as e:
                check_units(r1, "qT1", declared, ("01", "01"), path, voxel_mm=voxel)
            msg = str(e.value)
            assert msg.startswith(f"sub-01 ses-01: the qT1 map {path} looks like an R1 map")
            assert f"in 1/{per}" in msg and formula in msg and "fslmaths" in msg, msg
            assert "units: qT1: s'" not in msg and "'units: qT1: s" not in msg


@pytest.mark.parametrize("field,voxel,head,speckle", MAPS + [("1.5T", (1.0, 1.0, 1.0),
                                                               True, False)])
def test_real_t1_maps_in_ms_and_s_are_accepted(field, voxel, head, speckle):
    """T1 maps with CSF, lesions, fit failures, noise and (in a head) scalp fat and skull
    pass in their own unit and are refused in the other, named as the unit they are."""
    t1, affine, brain = head_t1(voxel, field, head, speckle=speckle)
    if not head:
        t1 = np.where(brain, t1, 0)
    assert check_units(t1, "qT1", "ms", "sub-01 ses-01", "t1", voxel_mm=voxel) == 1.0
    assert check_units(t1 / 1000, "qT1", "s", "sub-01 ses-01", "t1", voxel_mm=voxel) == 1000
    with pytest.raises(InputError, match="look like milliseconds.*'units: qT1: ms'"):
        check_units(t1, "qT1", "s", "sub-01 ses-01", "t1", voxel_mm=voxel)
    with pytest.raises(InputError, match="look like seconds.*'units: qT1: s'"):
        check_units(t1 / 1000, "qT1", "ms", "sub-01 ses-01", "t1", voxel_mm=voxel)


def test_a_map_on_the_seconds_scale_without_csf_is_not_guessed():
    """Without CSF a T1 map in s and an R1 map in 1/s cannot be told apart: declared in
    ms it stops with both possible fixes; declared in s it passes (with a warning)."""
    rng = np.random.default_rng(3)
    tissue = rng.uniform(0.8, 1.4, (20, 20, 20)).astype(np.float32)
    with pytest.raises(InputError) as e:
        check_units(tissue, "qT1", "ms", "sub-01 ses-01", "t1.nii.gz")
    assert "'units: qT1: s'" in str(e.value) and "R1" in str(e.value)
    assert check_units(tissue, "qT1", "s", "sub-01 ses-01", "t1.nii.gz") == 1000.0


def test_criteria_are_data():
    from gamer_mril.valueranges import QT1_CRITERIA

    lo, hi = QT1_CRITERIA.t1_csf_window
    rlo, rhi = QT1_CRITERIA.r1_csf_window
    assert (rlo, rhi) == pytest.approx((1 / hi, 1 / lo))     # the reciprocal window
    assert QT1_CRITERIA.r1_max_median == pytest.approx(1 / QT1_CRITERIA.t1_min_median_s)


def test_mwf_percent_map_of_a_head_is_named():
    """An MWF map in percent (a head's tissue, fit noise, negatives) declared a fraction."""
    rng = np.random.default_rng(9)
    _, _, brain = head_t1((3.0, 3.0, 3.0), head=False)
    mwf = np.where(brain, rng.normal(12, 6, brain.shape), 0).astype(np.float32)
    with pytest.raises(InputError, match="look like a percentage.*'units: MWF: percent'"):
        check_units(mwf, "MWF", "fraction", "sub-01 ses-01", "mwf.nii.gz")
    assert check_units(mwf, "MWF", "percent", "sub-01 ses-01", "mwf.nii.gz") == 0.01
    assert check_units(mwf / 100, "MWF", "fraction", "sub-01 ses-01", "mwf.nii.gz") == 1.0


# ----------------------------------------------------------------------------------------
# values outside the physical range; dangling links; a pattern without {session}
# ----------------------------------------------------------------------------------------

def test_negative_mwf_voxels_are_counted_as_clipped(tmp_path):
    """step_scale counts an MWF map's negative voxels as clipped, apart from those above
    the method's range, and those outside the physical range as impossible."""
    from gamer_mril.preprocessing import step_scale

    rng = np.random.default_rng(4)
    mwf = rng.uniform(0.0, 0.25, (20, 20, 20)).astype(np.float32)
    negative = rng.random(mwf.shape) < 0.15
    mwf[negative] = -rng.uniform(0.01, 0.2, int(negative.sum()))
    mwf[0, 0, :5] = 0.5                                   # above 0.30, below 1: clipped
    mwf[1, 1, :3] = 1.7                                   # above 1: impossible
    src = write_nifti(tmp_path / "mwf.nii.gz", mwf, np.diag([2.0, 2.0, 2.0, 1.0]))
    facts = step_scale(src, tmp_path / "out.nii.gz", "MWF", "fraction", "sub-01 ses-01")
    n_neg = int((mwf < 0).sum())
    assert facts["NegativeVoxels"] == n_neg and facts["ClippedBelow"] == n_neg
    assert facts["ClippedVoxels"] == n_neg + 5 + 3
    assert facts["AbovePhysicalRange"] == 3 and facts["ImpossibleVoxels"] == n_neg + 3
    assert facts["VoxelVolume_ml"] == pytest.approx(0.008)
    assert nib.load(tmp_path / "out.nii.gz").get_fdata().min() == 0.0


def test_dangling_symlink_is_named(tmp_path):
    table = two_session_table(tmp_path)
    make_maps(tmp_path / "raw", "01", "01")
    make_maps(tmp_path / "raw", "02", "01")
    link = tmp_path / "raw" / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_T1map.nii.gz"
    link.unlink()
    target = tmp_path / "elsewhere" / "gone_T1map.nii.gz"
    link.symlink_to(target)
    with pytest.raises(InputError) as e:
        check_session_files(table, patterns_for(tmp_path / "raw"))
    msg = str(e.value)
    assert f"sub-02 ses-01: the qT1 map {link} is a symbolic link to {target} that does " \
           f"not exist" in msg
    with pytest.raises(InputError, match="symbolic link to .* that does not exist"):
        load_map(link, "sub-02 ses-01", "qT1")


def test_pattern_without_session_says_how_to_describe_single_session_data(tmp_path):
    with pytest.raises(InputError) as e:
        find_maps({"qT1": str(tmp_path / "sub-{subject}_T1map.nii.gz")})
    msg = str(e.value)
    assert "{session}" in msg and "same session" in msg and "ses-{session}" in msg
