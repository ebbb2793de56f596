"""Quality-control flags of the preprocessing table, by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from gamer_mril.provenance import qc_flags


def _table(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)], "session": ["1"] * n,
                         **columns})


def test_low_dice_is_flagged_with_its_reason():
    out = qc_flags(_table(dice_template_brain=[0.95, 0.89, 0.9]))
    assert out["qc_flag"].tolist() == [False, True, False]
    assert out.loc[1, "qc_reasons"] == "Dice with the template brain mask 0.890 < 0.9"


def test_volume_outside_median_plus_minus_three_robust_sd():
    # median (1000 + 1010) / 2 = 1005; |x - 1005| = 5, 15, 5, 25, 15, 395 -> MAD 15,
    # robust sd 15 x 1.4826 = 22.24
    volumes = [1000, 990, 1010, 980, 1020, 1400]
    out = qc_flags(_table(brain_ml=volumes))
    assert out["qc_flag"].tolist() == [False] * 5 + [True]
    assert "brain_ml 1400.0 outside the cohort's 1005.0 +- 3 x 22.2" in out.loc[5, "qc_reasons"]
    # half a robust sd (11.1) also catches 990, 980 and 1020 (15, 25, 15 away)
    loose = qc_flags(_table(brain_ml=volumes), mad_limit=0.5)
    assert loose["qc_flag"].tolist() == [False, True, False, True, True, True]


def test_reasons_add_up_and_small_cohorts_are_not_judged_on_volume():
    out = qc_flags(_table(brain_ml=[1000, 2000, 1000], dice_template_brain=[0.5, 0.95, 0.95]))
    assert out["qc_flag"].tolist() == [True, False, False]   # fewer than 5: no volume check
    many = qc_flags(_table(cerebellum_ml=[100.0] * 5 + [300.0],
                           dice_template_brain=[0.95] * 5 + [0.5]))
    # no spread among the rest: MAD 0 -> no volume flags; the Dice still counts
    assert many["qc_flag"].tolist() == [False] * 5 + [True]
    assert many.loc[5, "qc_reasons"].count(";") == 0
