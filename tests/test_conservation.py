"""The cohort's conservation table (explain.conservation_table) from the sidecars of the
relevance map stacks (every scenario of a session in one file)."""

from __future__ import annotations

import json

import pytest

from gamer_mril.explain import conservation_table
from gamer_mril.io import sidecar_path


def _stack(tmp_path, subject, session, errors):
    """A session's relevance map stack whose sidecar holds ``errors`` ({scenario: relative
    error, or None for no record})."""
    path = tmp_path / f"sub-{subject}_ses-{session}_space-NDIcrop_relmap.nii.gz"
    path.write_bytes(b"")
    scenarios = {}
    for n, error in errors.items():
        scenarios[str(n)] = {"number": n}
        if error is not None:
            scenarios[str(n)]["conservation"] = dict(start_value=2.0, total=2.0 * (1 - error),
                                                     relative_error=error)
    sidecar_path(path).write_text(json.dumps({"Facts": {"scenarios": scenarios}}))
    return path


def test_per_scenario_median_largest_and_worst_session(tmp_path):
    # scenario 11 (integrated gradients) has no record and is not an LRP scenario: no row
    maps = [_stack(tmp_path, "01", "1", {5: 0.01, 1: 1e-7, 11: None}),
            _stack(tmp_path, "02", "1", {5: 0.30, 11: None}),
            _stack(tmp_path, "02", "2", {5: 0.02})]
    per_map, summary = conservation_table(maps)
    assert list(per_map["scenario"]) == [1, 5, 5, 5]
    assert per_map.loc[1:, "total"].tolist() == pytest.approx([1.98, 1.4, 1.96])
    five = summary.set_index("scenario").loc[5]
    assert five["n_maps"] == 3
    assert five["median_relative_error"] == pytest.approx(0.02)
    assert five["max_relative_error"] == pytest.approx(0.30)
    assert five["worst_session"] == "sub-02 ses-1"
    assert summary.set_index("scenario").loc[1, "max_relative_error"] == pytest.approx(1e-7)


def test_an_lrp_scenario_without_record_is_named(tmp_path):
    bad = _stack(tmp_path, "03", "1", {11: None, 4: None})
    with pytest.raises(ValueError, match="scenario 4 .*sub-03 ses-1") as err:
        conservation_table([bad])
    assert str(bad) in str(err.value)
