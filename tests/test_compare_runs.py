"""bench/compare_runs.py: two results trees compared by content, not by bytes."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
from conftest import import_bench


def _tree(root, value=1.0, table="a\tb\n1\t2.5\n", facts=None, created="2026-01-01"):
    (root / "sub-1").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "logs" / "x.log").write_text(created)          # logs are never compared
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = value
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "sub-1" / "map.nii.gz"))
    (root / "sub-1" / "map.json").write_text(json.dumps(
        {"Created": created, "Parameters": {"level": 40}, "Facts": facts or {"n": 1}}))
    (root / "table.tsv").write_text(table)
    (root / "chosen.json").write_text(json.dumps({"scenario": 6, "Created": created}))


def test_identical_content_with_other_dates_is_the_same(tmp_path):
    cr = import_bench("compare_runs")
    _tree(tmp_path / "a")
    _tree(tmp_path / "b", created="2027-05-05")
    out = io.StringIO()
    assert cr.compare(tmp_path / "a", tmp_path / "b", out=out) == 0
    text = out.getvalue()
    assert "4 files compared" in text and "largest image difference: 0" in text


def test_a_changed_voxel_table_cell_or_fact_is_reported(tmp_path):
    cr = import_bench("compare_runs")
    _tree(tmp_path / "a")
    _tree(tmp_path / "b", value=1.25, table="a\tb\n1\t2.0\n", facts={"n": 2})
    out = io.StringIO()
    assert cr.compare(tmp_path / "a", tmp_path / "b", out=out) == 1
    text = out.getvalue()
    assert "largest image difference: 0.25 (sub-1/map.nii.gz)" in text
    assert "different: table.tsv: max numeric diff 0.5" in text
    assert "different: sub-1/map.json: differs at Facts.n" in text
    assert "chosen.json" not in text.split("largest")[1]      # same once dates are dropped


def test_a_file_on_one_side_only_fails(tmp_path):
    cr = import_bench("compare_runs")
    _tree(tmp_path / "a")
    _tree(tmp_path / "b")
    (tmp_path / "b" / "extra.tsv").write_text("x\n")
    out = io.StringIO()
    assert cr.compare(tmp_path / "a", tmp_path / "b", out=out) == 1
    assert "only in B: extra.tsv" in out.getvalue()
