"""Controls and uncertainty of voxel inverting (gamer_mril.inverting): the LeRF and random
masks match the top-N masks voxel for voxel and lie in the region; AUCs, bands, AOPC and
the paired comparisons against direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from gamer_mril.assessment import controls
from gamer_mril.assessment import masks as QM
from gamer_mril import statistics
from gamer_mril.roc import delong_test

SHAPE = (9, 10, 11)


def _case(seed=0, n_volumes=3):
    rng = np.random.default_rng(seed)
    region = np.zeros(SHAPE, dtype=bool)
    region[1:8, 2:9, 1:10] = True
    region[4, 5, 5] = False                                   # a hole: not in the region
    # relevance with ties (rounded) and negative values
    rel = np.round(rng.normal(size=(n_volumes,) + SHAPE), 1).astype(np.float32)
    top = QM.quantile_masks(rel, region, [10, 40, 70], kind="individual")
    return rel, region, top


def test_lerf_masks_are_the_least_relevant_voxels_of_the_region():
    rel, region, top = _case()
    counts = [0, 5, 37, 120]
    m = controls.lerf_masks(rel[0], region, counts)
    assert m.shape == (4,) + SHAPE
    assert [int(x.sum()) for x in m] == counts
    assert not (m & ~region).any()
    for k in range(1, 4):
        assert not (m[k - 1] & ~m[k]).any()                  # nested
        inside, outside = rel[0][m[k]], rel[0][region & ~m[k]]
        assert inside.max() <= outside.min()                  # nothing lower left out


def test_random_masks_are_uniform_draws_of_the_region():
    _, region, _ = _case()
    counts = [3, 40, 200]
    a = controls.draw_random_masks(region, counts, np.random.default_rng(1))
    b = controls.draw_random_masks(region, counts, np.random.default_rng(1))
    c = controls.draw_random_masks(region, counts, np.random.default_rng(2))
    assert (a == b).all() and not (a == c).all()
    assert [int(x.sum()) for x in a] == counts
    assert not (a & ~region).any()
    assert not (a[0] & ~a[1]).any() and not (a[1] & ~a[2]).any()
    # each region voxel is drawn with probability count / |region|
    n = int(region.sum())
    freq = np.mean([controls.draw_random_masks(region, [40], np.random.default_rng(s))[0][region]
                    for s in range(400)], axis=0)
    assert abs(freq.mean() - 40 / n) < 1e-12
    assert np.abs(freq - 40 / n).max() < 0.12


def test_control_masks_match_the_top_masks_voxel_for_voxel():
    rel, region, top = _case()
    counts = top.reshape(top.shape[:2] + (-1,)).sum(-1)
    assert len(set(counts[1])) > 1                            # contrasts differ in size
    ctl = controls.control_masks(rel, region, top, random_masks=3, seed=7, subject="01", session="2")
    assert ctl["LeRF"].shape == top.shape and len(ctl["random"]) == 3
    for masks in [ctl["LeRF"], *ctl["random"]]:
        assert (masks.reshape(top.shape[:2] + (-1,)).sum(-1) == counts).all()
        assert not (masks & ~region).any()
    # draws differ; the same seed, subject and session give the same draws
    assert not (ctl["random"][0] == ctl["random"][1]).all()
    again = controls.control_masks(rel, region, top, random_masks=3, seed=7, subject="01", session="2")
    assert all((x == y).all() for x, y in zip(ctl["random"], again["random"]))
    other = controls.control_masks(rel, region, top, random_masks=1, seed=7, subject="01", session="3")
    assert not (other["random"][0] == ctl["random"][0]).all()


def test_control_masks_of_a_combined_map_are_shared_by_the_contrasts():
    rel, region, _ = _case(n_volumes=1)
    top = QM.quantile_masks(rel[0], region, [20, 50], kind="combined")[:, 0]   # (L, D, H, W)
    ctl = controls.control_masks(rel[0], region, top, random_masks=2, seed=0, subject="a", session="b")
    assert ctl["LeRF"].shape == top.shape
    for masks in [ctl["LeRF"], *ctl["random"]]:
        assert [int(m.sum()) for m in masks] == [int(m.sum()) for m in top]
        assert not (masks & ~region).any()


def test_control_masks_reject_sizes_beyond_the_region():
    rel, region, top = _case()
    small = np.zeros(SHAPE, dtype=bool)
    small[0, 0, :3] = True
    with pytest.raises(ValueError, match="mask sizes"):
        controls.control_masks(rel, small, top, 1, 0, "a", "b")


def test_auc_columns_equals_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.normal(size=(40, 6)) + y[:, None], 1)
    expect = [roc_auc_score(y, s[:, j]) for j in range(6)]
    assert np.allclose(statistics.auc_columns(y, s), expect, atol=1e-12)
    assert np.isnan(statistics.auc_columns(np.ones(5), np.arange(5.0))).all()


def _probs(seed=0, n_subjects=10, with_controls=True):
    """A long inverting frame of sessions (two per subject for half of them)."""
    rng = np.random.default_rng(seed)
    rows, labels, subjects = [], {}, {}
    for i in range(n_subjects):
        for t in range(1 + i % 2):
            key = f"{i:02d}_{t}"
            y = int(i % 3 == 0 or (i == 1 and t == 1))
            labels[key], subjects[key] = y, f"{i:02d}"
            base = 0.3 + 0.4 * y + rng.normal(0, 0.1)
            rows.append(dict(session=key, order="MoRF", draw=0, scenario=0, N=0, prob=base))
            for scn in (1, 2, 3):
                for n in (30, 40):
                    rows.append(dict(session=key, order="MoRF", draw=0, scenario=scn, N=n,
                                     prob=base - 0.1 * scn * y + rng.normal(0, 0.05)))
                    if with_controls:
                        rows.append(dict(session=key, order="LeRF", draw=0, scenario=scn,
                                         N=n, prob=base + rng.normal(0, 0.05)))
                        for d in range(4):
                            rows.append(dict(session=key, order="random", draw=d,
                                             scenario=scn, N=n,
                                             prob=base - 0.02 * y + rng.normal(0, 0.05)))
    return pd.DataFrame(rows), labels, subjects


def test_intervals_hold_the_direct_auc():
    probs, labels, subjects = _probs()
    out = controls.inverting_intervals(probs, labels, subjects, n_resamples=300, seed=1)
    assert len(out) == 1 + 3 * 2 * (1 + 1 + 4)
    for r in out.itertuples():
        sel = probs[(probs["order"] == r.order) & (probs["scenario"] == r.scenario)
                    & (probs["N"] == r.N) & (probs["draw"] == r.draw)]
        y = [labels[s] for s in sel["session"]]
        assert r.auc == pytest.approx(roc_auc_score(y, sel["prob"]), abs=1e-12)
        assert r.auc_low <= r.auc + 1e-12 and r.auc <= r.auc_high + 1e-12
        assert 0 < r.n_valid <= 300
    # the same seed gives the same intervals
    again = controls.inverting_intervals(probs, labels, subjects, n_resamples=300, seed=1)
    pd.testing.assert_frame_equal(out, again)


def test_control_summary_band_informative_and_aopc_by_hand():
    rows = [dict(order="MoRF", scenario=0, N=0, draw=0, auc=0.9, auc_low=0.8, auc_high=1.0)]
    for scn, morf in ((1, 0.40), (2, 0.75)):
        for n in (30, 40):
            rows.append(dict(order="MoRF", scenario=scn, N=n, draw=0, auc=morf - 0.1 * (n == 40),
                             auc_low=0, auc_high=1))
            rows.append(dict(order="LeRF", scenario=scn, N=n, draw=0, auc=0.85, auc_low=0,
                             auc_high=1))
            for d, a in enumerate((0.6, 0.7, 0.8, 0.9, 0.65)):
                rows.append(dict(order="random", scenario=scn, N=n, draw=d, auc=a,
                                 auc_low=0, auc_high=1))
    summary = controls.control_summary(pd.DataFrame(rows))
    band = np.quantile([0.6, 0.7, 0.8, 0.9, 0.65], [0.025, 0.975])
    assert np.allclose(summary["random_low"], band[0]) and np.allclose(summary["random_high"], band[1])
    assert np.allclose(summary["random_auc"], 0.73)
    assert (summary["baseline_auc"] == 0.9).all() and (summary["lerf_auc"] == 0.85).all()
    got = summary.set_index(["scenario", "N"])["informative"].to_dict()
    # scenario 1: 0.40 and 0.30, below the band's 0.605; scenario 2: 0.75 inside, 0.65 too
    assert got == {(1, 30): True, (1, 40): True, (2, 30): False, (2, 40): False}
    area = controls.aopc(summary)
    assert area[1] == pytest.approx(0.73 - (0.40 + 0.30) / 2)
    assert area[2] == pytest.approx(0.73 - (0.75 + 0.65) / 2)


#: A constructed AUC table for the AOPC and its band, every value countable by hand:
#: levels 5, 10, 20 with random means 0.80, 0.70, 0.60; four random draws per level whose
#: deviations from the mean, e[d][N], average to -0.03, -0.03, +0.03, +0.03 over the
#: levels (scenario 3: twice those). Leaving draw d out, the other three average
#: mean - e/3, so draw d's AOPC is -(4/3) mean_N e[d][N]: 0.04, 0.04, -0.04, -0.04, the
#: band (2.5-97.5 percentiles) [-0.04, 0.04]; scenario 3's [-0.08, 0.08].
RANDOM_MEAN = {5: 0.80, 10: 0.70, 20: 0.60}
DEVIATIONS = {5: (-0.09, 0.03, 0.03, 0.03), 10: (0.03, -0.09, 0.03, 0.03),
              20: (-0.03, -0.03, 0.03, 0.03)}


def _aopc_aucs(morf_drop=None, lerf_shift=None):
    """AUC rows of :func:`controls.inverting_intervals`' form: MoRF below the random mean
    by ``morf_drop[s]`` at every choice level (AOPC = that drop), LeRF above it by
    ``lerf_shift[s]`` (LeRF AOPC = minus that), and at N = 40 MoRF AUCs 0.50, 0.45,
    0.30 (the paper's rule picks scenario 3) without controls."""
    morf_drop = morf_drop or {1: 0.05, 2: 0.03, 3: 0.07}
    lerf_shift = lerf_shift or {1: 0.05, 2: 0.0, 3: -0.10}
    rows = [dict(order="MoRF", scenario=0, N=0, draw=0, auc=0.9)]
    for scn in morf_drop:
        scale = 2 if scn == 3 else 1
        for n, mean in RANDOM_MEAN.items():
            rows.append(dict(order="MoRF", scenario=scn, N=n, draw=0,
                             auc=mean - morf_drop[scn]))
            rows.append(dict(order="LeRF", scenario=scn, N=n, draw=0,
                             auc=mean + lerf_shift[scn]))
            for d, e in enumerate(DEVIATIONS[n]):
                rows.append(dict(order="random", scenario=scn, N=n, draw=d,
                                 auc=mean + scale * e))
        rows.append(dict(order="MoRF", scenario=scn, N=40, draw=0,
                         auc={1: 0.50, 2: 0.45, 3: 0.30}[scn]))
    out = pd.DataFrame(rows)
    return out.assign(auc_low=out["auc"] - 0.1, auc_high=out["auc"] + 0.1)


def test_aopc_and_its_band_by_hand():
    aucs = _aopc_aucs()
    summary = controls.control_summary(aucs)
    area = controls.aopc(summary, [5, 10, 20])
    assert area.to_dict() == pytest.approx({1: 0.05, 2: 0.03, 3: 0.07})
    # without levels, every level with controls: the same three
    assert controls.aopc(summary).to_dict() == pytest.approx(area.to_dict())
    # a level without controls (40) is no mean over part of the levels
    assert controls.aopc(summary, [5, 10, 20, 40]).isna().all()
    assert controls.aopc(summary, [10]).to_dict() == pytest.approx({1: 0.05, 2: 0.03, 3: 0.07})
    t = controls.aopc_table(aucs, [20, 5, 10])
    assert list(t.index) == [1, 2, 3]
    assert t["aopc"].to_dict() == pytest.approx({1: 0.05, 2: 0.03, 3: 0.07})
    assert t["aopc_low"].to_dict() == pytest.approx({1: -0.04, 2: -0.04, 3: -0.08})
    assert t["aopc_high"].to_dict() == pytest.approx({1: 0.04, 2: 0.04, 3: 0.08})
    assert t["clears_band"].to_dict() == {1: True, 2: False, 3: False}
    assert t["lerf_aopc"].to_dict() == pytest.approx({1: -0.05, 2: 0.0, 3: 0.10})
    assert (t["n_draws"] == 4).all()
    # one level alone: draw d's AOPC is -(4/3) e[d][5]: 0.12, -0.04, -0.04, -0.04
    one = controls.aopc_table(aucs, [5])
    band = np.quantile([0.12, -0.04, -0.04, -0.04], [0.025, 0.975])
    assert one.loc[1, ["aopc_low", "aopc_high"]].tolist() == pytest.approx(band)
    assert one.loc[1, "clears_band"] is False


def test_the_choice_prefers_a_band_clearing_scenario_and_says_when_none_clears():
    t = controls.aopc_table(_aopc_aucs(), [5, 10, 20])
    # 3 has the largest AOPC (0.07) but inside its wide band; 1 (0.05) clears its own
    assert controls.choose_by_aopc(t) == (1, True)
    none = controls.aopc_table(_aopc_aucs(morf_drop={1: 0.03, 2: 0.03, 3: 0.07}),
                               [5, 10, 20])
    assert not none["clears_band"].any()
    assert controls.choose_by_aopc(none) == (3, False)
    # ties go to the lowest number; a NaN AOPC is passed over
    assert controls.choose_by_aopc(none.drop(index=3)) == (1, False)
    nan = none.copy()
    nan.loc[3, "aopc"] = np.nan
    assert controls.choose_by_aopc(nan) == (1, False)
    with pytest.raises(ValueError, match="no scenario has a defined AOPC"):
        controls.choose_by_aopc(none.assign(aopc=np.nan))


def test_the_scenario_table_beside_the_papers_choice(tmp_path):
    """The chosen scenario clears its band where the paper's (largest drop at N = 40)
    does not; with choice paper the paper's is the chosen one; the comparisons are with
    the chosen scenario; chosen_scenario.json's record read back from the TSV."""
    from gamer_mril.assessment.correlation import chosen_record
    from gamer_mril.assessment.inverting import choose_scenario

    aucs = _aopc_aucs()
    table = controls.control_summary(aucs)
    table["auc_drop"] = table["baseline_auc"] - table["auc"]
    paper = choose_scenario(table, n=40)
    assert paper == 3
    probs, labels, subjects = _probs(seed=2, n_subjects=12, with_controls=False)
    probs = probs.assign(N=probs["N"].replace({30: 20}))
    for choice, chosen in (("aopc", 1), ("paper", 3)):
        scen = controls.scenario_table(probs, labels, subjects, table, aucs, level=40,
                                       paper=paper, choice=choice, choice_levels=[5, 10, 20],
                                       n_resamples=50)
        assert list(scen["scenario"]) == [1, 2, 3]
        assert scen.set_index("scenario")["chosen"].to_dict() == {s: s == chosen for s in (1, 2, 3)}
        assert scen.set_index("scenario")["chosen_paper"].to_dict() == {1: False, 2: False, 3: True}
        assert scen["aopc"].tolist() == pytest.approx([0.05, 0.03, 0.07])
        assert scen.loc[scen["chosen"], "difference"].isna().all()
        assert scen.loc[~scen["chosen"], "difference"].notna().all()
        line = controls.choice_line(scen, choice, [5, 10, 20])
        path = tmp_path / f"{choice}.tsv"
        scen.to_csv(path, sep="\t", index=False, na_rep="n/a")
        record = chosen_record(pd.read_csv(path, sep="\t"), path)
        assert record["scenario"] == chosen and record["paper_scenario"] == 3
        assert record["scenarios_clearing_band"] == [1] and record["none_cleared"] is False
        assert record["clears_band"] is (chosen == 1) and record["level"] == 40
        assert record["aopc_band"] == pytest.approx([-0.04, 0.04] if chosen == 1 else [-0.08, 0.08])
        assert record["auc"] == pytest.approx(0.50 if chosen == 1 else 0.30)
        assert record["random_band"] is None and record["clears_random_band"] is None
    assert line.startswith("chosen scenario 3 by the paper's rule (largest AUC drop at N = 40)")
    assert "AOPC 0.070 over N = 5, 10, 20, inside its random band [-0.080, 0.080]" in line
    scen = controls.scenario_table(probs, labels, subjects, table, aucs, level=40,
                                   paper=paper, choice="aopc", choice_levels=[5, 10, 20],
                                   n_resamples=50)
    assert controls.choice_line(scen, "aopc", [5, 10, 20]) == (
        "chosen scenario 1 by the largest AOPC: AOPC 0.050 over N = 5, 10, 20, above its "
        "random band [-0.040, 0.040]; the paper's rule (largest AUC drop at N = 40): "
        "scenario 3")
    with pytest.raises(ValueError, match="choice must be one of"):
        controls.scenario_table(probs, labels, subjects, table, aucs, level=40, paper=3,
                                choice="best", choice_levels=[5])


def test_paired_comparisons_are_delong_with_bh():
    probs, labels, subjects = _probs(seed=4, n_subjects=16, with_controls=False)
    out = controls.paired_comparisons(probs, labels, subjects, chosen=3, level=40, n_resamples=300)
    assert list(out["scenario"]) == [1, 2]
    at = probs[(probs["N"] == 40)].pivot(index="session", columns="scenario", values="prob")
    y = [labels[s] for s in at.index]
    for r in out.itertuples():
        d = delong_test(y, at[3], at[r.scenario])
        assert r.difference == pytest.approx(d.difference, abs=1e-12)
        assert r.p == pytest.approx(d.p_value, abs=1e-12)
        assert r.difference_low <= r.difference <= r.difference_high
    assert np.allclose(out["p_bh"], multipletests(out["p"], method="fdr_bh")[1])


# ------------------------------------------------------------------ DistinctImages

def test_distinct_images_sends_each_distinct_input_once():
    from gamer_mril.assessment.distinct import DistinctImages

    seen = []

    def forward(batch, ages):
        seen.append(len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1) / 100 + np.asarray(ages) / 1000

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 2, 3, 3, 3)).astype(np.float32)
    predict = DistinctImages(forward)
    first = predict(np.stack([a, b, a]), [40.0, 40.0, 40.0])     # a twice in one batch
    again = predict(np.stack([b, a, a]), [40.0, 40.0, 50.0])     # a at another age is new
    np.testing.assert_allclose(first, forward(np.stack([a, b, a]), [40.0] * 3))
    np.testing.assert_allclose(again, forward(np.stack([b, a, a]), [40.0, 40.0, 50.0]))
    assert seen[:2] == [2, 1]                    # (a, b), then only (a, 50)
    assert (predict.asked, predict.images, predict.calls) == (6, 3, 2)
    b2 = b.copy()
    b2[0, 0, 0, 0] = np.nextafter(b2[0, 0, 0, 0], 2)                   # one ulp differs
    predict(b2[None], [40.0])
    assert predict.images == 4


def test_distinct_images_checks_the_answer_count():
    from gamer_mril.assessment.distinct import DistinctImages

    predict = DistinctImages(lambda batch, ages: np.zeros(len(batch) + 1))
    with pytest.raises(ValueError, match="2 values for 1 images"):
        predict(np.zeros((1, 1, 2, 2, 2), np.float32), [1.0])


# ------------------------------------------------- the jobs of voxel_inverting, correlations


def _job_inputs(tmp_path, n_subjects=12, seed=0):
    """Per-session inverting tables, predictions, mask values and a participants table:
    scenario 1 wrecks the prediction at N = 5 (its probabilities there know nothing of
    the label) and leaves it whole at 40; scenario 3 leaves it whole at 5 and reverses it
    at 40 (the paper's rule picks 3); scenario 2 changes nothing; the three random draws
    at 5 and 40 add a little noise to the baseline."""
    rng = np.random.default_rng(seed)
    inverting, values, rows = [], [], []
    pred = []
    for i in range(n_subjects):
        sub, ses, y = f"{i:02d}", "1", i % 2
        base = 0.2 + 0.6 * y + rng.normal(0, 0.05)
        rows.append(dict(participant_id=f"sub-{sub}", session_id=f"ses-{ses}",
                         age=40.0 + i, edss=(5.0 if y else 1.0) + 0.5 * (i // 2 % 4)))
        pred.append(dict(subject=sub, session=ses, label=y, set="cv", fold=i % 2, prob=base))
        probs = [dict(order="MoRF", draw=0, scenario=0, N=0, prob=base)]
        for scn in (1, 2, 3):
            for n in (5, 40):
                p = base
                if scn == 1 and n == 5:
                    p = rng.uniform(0.3, 0.7)
                if scn == 3 and n == 40:
                    p = 1.0 - base
                probs.append(dict(order="MoRF", draw=0, scenario=scn, N=n, prob=p))
                probs.append(dict(order="LeRF", draw=0, scenario=scn, N=n, prob=base))
                for d in range(3):
                    probs.append(dict(order="random", draw=d, scenario=scn, N=n,
                                      prob=base + rng.normal(0, 0.3)))
                for c in ("qT1", "MWF", "NDI"):
                    values.append(dict(subject=sub, session=ses, scenario=scn, N=n,
                                       contrast=c, value=rng.normal() + y, n_voxels=10))
        df = pd.DataFrame(probs)
        df.insert(0, "fold", i % 2)
        df.insert(0, "session", ses)
        df.insert(0, "subject", sub)
        path = tmp_path / f"sub-{sub}_inverting.tsv"
        df.to_csv(path, sep="\t", index=False)
        inverting.append(path)
    pd.DataFrame(pred).to_csv(tmp_path / "predictions.tsv", sep="\t", index=False)
    mv = tmp_path / "maskvalues.tsv"
    pd.DataFrame(values).to_csv(mv, sep="\t", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    return inverting, tmp_path / "predictions.tsv", mv, tmp_path / "participants.tsv"


@pytest.mark.parametrize("choice, chosen", [("aopc", 1), ("paper", 3)])
def test_the_jobs_choose_once_and_record_the_choice(tmp_path, choice, chosen):
    """voxel_inverting chooses (AOPC over N = 5: scenario 1, clearing its band; the
    paper's rule at N = 40: scenario 3), correlations takes its choice into
    chosen_scenario.json and Table IV, the paper's beside it."""
    import json

    from gamer_mril.assessment.correlation import run_correlations
    from gamer_mril.assessment.inverting import run_voxel_inverting

    inv, pred, mv, participants = _job_inputs(tmp_path)
    out = tmp_path / "group"
    out.mkdir()
    run_voxel_inverting(inv, pred, out / "inverting_auc.tsv", out / "fig4.png",
                        out / "inverting_scenarios.tsv", heatmap_level=40, choice=choice,
                        choice_levels=[5], n_bootstrap=20, seed=0)
    scen = pd.read_csv(out / "inverting_scenarios.tsv", sep="\t").set_index("scenario")
    assert scen["chosen"].to_dict() == {s: s == chosen for s in (1, 2, 3)}
    assert scen["chosen_paper"].to_dict() == {1: False, 2: False, 3: True}
    assert list(scen.index[scen["clears_band"].astype(str) == "True"]) == [1]
    table = pd.read_csv(out / "inverting_auc.tsv", sep="\t").set_index(["scenario", "N"])
    assert scen["aopc"].to_dict() == pytest.approx(
        {s: table.loc[(s, 5), "random_auc"] - table.loc[(s, 5), "auc"] for s in (1, 2, 3)})
    assert scen["lerf_aopc"].to_dict() == pytest.approx(
        {s: table.loc[(s, 5), "random_auc"] - table.loc[(s, 5), "lerf_auc"] for s in (1, 2, 3)})
    assert _is_png(out / "fig4.png")
    run_correlations([mv], out / "inverting_scenarios.tsv", participants,
                     chosen_out=out / "chosen.json", long_out=out / "corr.tsv",
                     table_iii_out=out / "t3.tsv", table_iv_out=out / "t4.tsv",
                     figure_out=out / "corr.png", n_permutations=99, seed=0,
                     heatmap_level=40, choice=choice, choice_levels=[5], n_bootstrap=20)
    record = json.loads((out / "chosen.json").read_text())
    assert record["scenario"] == chosen and record["paper_scenario"] == 3
    assert (record["choice"], record["choice_levels"], record["level"]) == (choice, [5], 40)
    assert record["scenarios_clearing_band"] == [1] and record["none_cleared"] is False
    assert record["clears_band"] is (chosen == 1)
    assert record["aopc"] == pytest.approx(scen.loc[chosen, "aopc"])
    assert record["rule"].startswith("largest AOPC over N = 5 among" if choice == "aopc"
                                     else "the paper's: largest AUC drop")
    corr = pd.read_csv(out / "corr.tsv", sep="\t")
    assert set(corr.loc[corr["table_iv"], "scenario"]) == {chosen}
    t3 = pd.read_csv(out / "t3.tsv", sep="\t")
    assert (t3["chosen"] == (t3["scenario"] == chosen)).all()


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 2000 and data[:8] == b"\x89PNG\r\n\x1a\n"
