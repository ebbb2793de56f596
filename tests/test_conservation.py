"""The cohort's conservation table (explain.conservation_table) from map sidecars."""

from __future__ import annotations

import json

import pytest

from gamer_mril.explain import conservation_table
from gamer_mril.io import sidecar_path


def _map(tmp_path, subject, session, n, error=None):
    path = tmp_path / f"sub-{subject}_ses-{session}_space-NDIcrop_scenario-{n:02d}_relmap.nii.gz"
    path.write_bytes(b"")
    scenario = {"number": n}
    if error is not None:
        scenario["conservation"] = dict(start_value=2.0, total=2.0 * (1 - error),
                                        relative_error=error)
    sidecar_path(path).write_text(json.dumps({"Facts": {"scenario": scenario}}))
    return path


def test_per_scenario_median_largest_and_worst_session(tmp_path):
    maps = [_map(tmp_path, "01", "1", 5, 0.01), _map(tmp_path, "02", "1", 5, 0.30),
            _map(tmp_path, "02", "2", 5, 0.02), _map(tmp_path, "01", "1", 1, 1e-7)]
    per_map, summary = conservation_table(maps)
    assert list(per_map["scenario"]) == [1, 5, 5, 5]
    assert per_map.loc[1:, "total"].tolist() == pytest.approx([1.98, 1.4, 1.96])
    five = summary.set_index("scenario").loc[5]
    assert five["n_maps"] == 3
    assert five["median_relative_error"] == pytest.approx(0.02)
    assert five["max_relative_error"] == pytest.approx(0.30)
    assert five["worst_session"] == "sub-02 ses-1"
    assert summary.set_index("scenario").loc[1, "max_relative_error"] == pytest.approx(1e-7)


def test_a_map_without_record_is_named(tmp_path):
    bad = _map(tmp_path, "03", "1", 11)
    with pytest.raises(ValueError, match="sub-03 ses-1") as err:
        conservation_table([bad])
    assert str(bad) in str(err.value)
