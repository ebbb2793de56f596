"""The assessment stage (docs/method.md#7-assessment) from the workflow run on the
training cohort: quantile masks, voxel inverting (Fig. 4), correlations (Tables III, IV),
the masks in MNI152 and the group heatmaps (Fig. 6), and the report."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gamer_mril.assessment import correlation, inverting
from gamer_mril.assessment import masks as QM
from gamer_mril import CONTRASTS
from gamer_mril.inputs import load_participants
from gamer_mril.io import sidecar_path
from gamer_mril.modelfiles import best_fold
from gamer_mril.scenario_stack import load_stack
from gamer_mril.settings import ALL_SCENARIOS
from gamer_mril.split import read_split

from .conftest import (FIXTURE_CONTROL_LEVELS, FIXTURE_LEVELS, PREPROCESSING_RULES,
                       run_snakemake, training_config)

pytestmark = pytest.mark.slow

LEVELS = FIXTURE_LEVELS
CONTROL_LEVELS = FIXTURE_CONTROL_LEVELS
#: Every scenario (the schema's default): the paper's twelve and 13-20 beyond it.
SCENARIOS = list(ALL_SCENARIOS)
INDIVIDUAL = set(SCENARIOS) - {3, 4, 7, 8}
TPL = "MNI152NLin2009cAsym"
IDS = {"subject": str, "session": str}


def _xai(results, s, t, name):
    return results / f"sub-{s}" / f"ses-{t}" / "xai" / f"sub-{s}_ses-{t}_{name}"


def _anat(results, s, t, name):
    return results / f"sub-{s}" / f"ses-{t}" / "anat" / f"sub-{s}_ses-{t}_{name}"


def _sessions(results):
    return read_split(results / "group" / "split.tsv")


def _predictions(results):
    return pd.read_csv(results / "group" / "predictions.tsv", sep="\t", dtype=IDS)


def _load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_quantile_masks_are_nested_inside_the_cerebrum(trained):
    results = trained / "results"
    for _, row in _sessions(results).iterrows():
        s, t = row["subject"], row["session"]
        cerebrum = _load(_anat(results, s, t, "space-NDIcrop_desc-cerebrum_mask.nii.gz")) > 0
        images = np.stack([_load(_anat(results, s, t, f"space-NDIcrop_desc-preproc_{suf}.nii.gz"))
                           .astype(np.float32) for suf in ("T1map", "MWFmap", "NDImap")])
        values = pd.read_csv(_xai(results, s, t, "space-NDIcrop_maskvalues.tsv"), sep="\t",
                             dtype=IDS)
        assert len(values) == len(SCENARIOS) * len(LEVELS) * len(CONTRASTS)
        # every scenario in one stack: three volumes for an individual map, one else
        path = _xai(results, s, t, "space-NDIcrop_desc-quantiles_mask.nii.gz")
        n_volumes = sum(3 if n in INDIVIDUAL else 1 for n in SCENARIOS)
        assert nib.load(str(path)).shape == (48, 48, 56, n_volumes)
        level_images, _, table = load_stack(path)
        relmaps, _, rel_table = load_stack(_xai(results, s, t, "space-NDIcrop_relmap.nii.gz"))
        assert table == rel_table and len(table) == n_volumes
        side = json.loads(sidecar_path(path).read_text())
        assert side["Facts"]["volumes"] == table
        for n in SCENARIOS:
            lvl, rel = level_images[n], relmaps[n]
            assert lvl.dtype == np.uint8
            assert set(np.unique(lvl)) <= {0, *LEVELS}
            if n in INDIVIDUAL:
                assert lvl.shape == (48, 48, 56, 3)
                lvl_v, rel_v = np.moveaxis(lvl, -1, 0), np.moveaxis(rel, -1, 0)
            else:
                assert lvl.shape == (48, 48, 56)
                lvl_v, rel_v = lvl[None], rel[None]
            # inside the cerebrum and over positive relevance only
            assert not (lvl_v > 0)[:, ~cerebrum].any()
            assert not ((lvl_v > 0) & (rel_v <= 0)).any()
            masks = QM.masks_from_levels(lvl_v, LEVELS)           # (levels, V, D, H, W)
            counts = masks.reshape(len(LEVELS), masks.shape[1], -1).sum(-1)
            assert (np.diff(counts, axis=0) >= 0).all()           # nested
            assert (counts[-1] > 0).all()
            # the same masks as the package computes from the map
            kind = "individual" if n in INDIVIDUAL else "combined"
            expect = QM.quantile_masks(rel_v if kind == "individual" else rel, cerebrum,
                                      LEVELS, kind=kind)
            assert np.array_equal(expect[:, :masks.shape[1]], masks)
            # top-N holds about N % of the positive voxels (ties may add a few)
            positive = ((rel_v > 0) & cerebrum).reshape(rel_v.shape[0], -1).sum(-1)
            for k, lv in enumerate(LEVELS):
                assert (counts[k] >= np.floor(positive * lv / 100) - 1).all()
            assert side["Facts"]["scenarios"][str(n)]["kind"] == kind
            # per-session values: counts and means agree with the masks
            full = masks if kind == "individual" else np.repeat(masks, 3, axis=1)
            means = QM.mean_in_mask(images, full)
            sub = values[values["scenario"] == n]
            for k, lv in enumerate(LEVELS):
                for c, contrast in enumerate(CONTRASTS):
                    r = sub[(sub["N"] == lv) & (sub["contrast"] == contrast)]
                    assert len(r) == 1
                    assert int(r["n_voxels"].iloc[0]) == int(full[k, c].sum())
                    assert r["value"].iloc[0] == pytest.approx(means[k, c], rel=1e-9)


def test_inverting_tsv_is_complete_and_auc_consistent(trained):
    results = trained / "results"
    split = _sessions(results)
    pred = _predictions(results).set_index(["subject", "session"])
    metas = {k: json.loads((results / "models" / f"fold-{k}" / "model.json").read_text())
             for k in (0, 1)}
    best = best_fold(metas)
    frames = []
    for _, row in split.iterrows():
        s, t = row["subject"], row["session"]
        df = pd.read_csv(_xai(results, s, t, "space-NDIcrop_inverting.tsv"), sep="\t", dtype=IDS)
        # the controls: LeRF and two random masks at N = 5 and 40 (training_config)
        controls = df[df["order"] != "MoRF"]
        assert sorted(set(zip(controls["order"], controls["draw"], controls["scenario"],
                              controls["N"]))) == sorted(
            {("LeRF", 0, n, lv) for n in SCENARIOS for lv in CONTROL_LEVELS}
            | {("random", d, n, lv) for n in SCENARIOS for d in (0, 1)
               for lv in CONTROL_LEVELS})
        assert len(controls) == 3 * len(SCENARIOS) * len(CONTROL_LEVELS)
        df = df[df["order"] == "MoRF"].drop(columns=["order", "draw"])
        assert len(df) == 1 + len(SCENARIOS) * len(LEVELS)
        assert not df.duplicated(["scenario", "N"]).any()
        assert set(zip(df["scenario"], df["N"])) == \
            {(0, 0)} | {(n, lv) for n in SCENARIOS for lv in LEVELS}
        assert df["prob"].between(0, 1).all()
        assert (df["fold"] == (row["fold"] if row["set"] == "cv" else best)).all()
        base = df.loc[df["scenario"] == 0, "prob"].iloc[0]
        assert base == pytest.approx(pred.loc[(s, t), "prob"], abs=1e-5)
        frames.append(df)
    probs = pd.concat(frames, ignore_index=True)
    probs["key"] = probs["subject"] + "_" + probs["session"]
    labels = {f"{s}_{t}": int(v) for (s, t), v in pred["label"].items()}
    models = {f"{s}_{t}": f"{r['set']} fold {r['fold']}" for (s, t), r in pred.iterrows()}
    expect = inverting.auc_table(probs.drop(columns="session").rename(columns={"key": "session"}),
                         labels, models)
    table = pd.read_csv(results / "group" / "inverting_auc.tsv", sep="\t")
    assert len(table) == len(SCENARIOS) * len(LEVELS)
    assert table["n_sessions"].eq(len(split)).all()
    pd.testing.assert_frame_equal(table[list(expect.columns)].reset_index(drop=True), expect,
                                  check_dtype=False)
    assert (table["auc_low"] <= table["auc_high"]).all()
    assert table[["auc_low", "auc_high"]].stack().between(0, 1).all()
    # the random band where the controls ran (N = 5 and 40), and only there
    ran = table[table["N"].isin(CONTROL_LEVELS)]
    assert ran["n_random"].eq(2).all() and (ran["random_low"] <= ran["random_high"]).all()
    assert (ran["informative"].astype(str) == (ran["auc"] < ran["random_low"]).astype(str)).all()
    assert table.loc[~table["N"].isin(CONTROL_LEVELS), "random_low"].isna().all()
    at40 = table[table["N"] == 40]
    assert (results / "group" / "fig4_inverting.png").stat().st_size > 10_000
    # per scenario: the AOPC over the choice levels (5, 40) from the table, its band, the
    # choice (the largest AOPC among those clearing the band) beside the paper's, and the
    # paired comparisons with the chosen scenario
    scen = pd.read_csv(results / "group" / "inverting_scenarios.tsv", sep="\t")
    assert sorted(scen["scenario"]) == sorted(SCENARIOS)
    paper = inverting.choose_scenario(table, n=40)
    assert list(scen.loc[scen["chosen_paper"], "scenario"]) == [paper]
    by = ran.set_index(["scenario", "N"])
    expect = (by["random_auc"] - by["auc"]).groupby("scenario").mean()
    assert np.allclose(scen["aopc"], expect.loc[scen["scenario"]])
    assert ((scen["aopc_low"] <= 1e-12) & (scen["aopc_high"] >= -1e-12)).all()
    clears = scen["aopc"] > scen["aopc_high"]
    assert (scen["clears_band"].astype(bool) == clears).all()
    pool = scen[clears] if clears.any() else scen
    chosen = int(pool.sort_values(["aopc", "scenario"], ascending=[False, True])
                 ["scenario"].iloc[0])
    assert list(scen.loc[scen["chosen"], "scenario"]) == [chosen]
    others = scen[~scen["chosen"]]
    assert others["p"].between(0, 1).all() and (others["p_bh"] >= others["p"] - 1e-12).all()
    assert np.allclose(others["difference"],
                       at40.set_index("scenario").loc[chosen, "auc"]
                       - at40.set_index("scenario").loc[others["scenario"], "auc"].to_numpy())


def test_correlation_tables(trained, training_cohort):
    results = trained / "results"
    group = results / "group"
    inv = pd.read_csv(group / "inverting_auc.tsv", sep="\t")
    scen = pd.read_csv(group / "inverting_scenarios.tsv", sep="\t").set_index("scenario")
    chosen = json.loads((group / "chosen_scenario.json").read_text())
    assert chosen["scenario"] == int(scen.index[scen["chosen"]][0])
    assert chosen["paper_scenario"] == inverting.choose_scenario(inv, n=40)
    assert chosen["level"] == 40 and chosen["choice"] == "aopc"
    assert chosen["choice_levels"] == CONTROL_LEVELS
    assert chosen["aopc"] == pytest.approx(scen.loc[chosen["scenario"], "aopc"])
    assert chosen["none_cleared"] == (not chosen["scenarios_clearing_band"])
    assert chosen["scenarios_clearing_band"] == sorted(scen.index[scen["clears_band"].astype(bool)])
    row = inv[(inv["N"] == 40) & (inv["scenario"] == chosen["scenario"])].iloc[0]
    assert chosen["random_band"] == pytest.approx([row["random_low"], row["random_high"]])
    assert chosen["clears_random_band"] == bool(row["auc"] < row["random_low"])
    t3 = pd.read_csv(group / "table_iii.tsv", sep="\t")
    assert len(t3) == len(SCENARIOS) * 3
    assert set(zip(t3["scenario"], t3["N"])) == {(n, lv) for n in SCENARIOS for lv in (30, 40, 50)}
    assert list(t3.columns[-9:]) == list(CONTRASTS) + [f"{c}_{end}" for end in ("low", "high")
                                                       for c in CONTRASTS]
    for c in CONTRASTS:
        ok = t3[c].notna()
        assert (t3.loc[ok, f"{c}_low"] <= t3.loc[ok, f"{c}_high"]).all()
        assert t3.loc[ok, [f"{c}_low", f"{c}_high"]].abs().le(1 + 1e-12).all().all()
    assert (t3["chosen"] == (t3["scenario"] == chosen["scenario"])).all()
    t4 = pd.read_csv(group / "table_iv.tsv", sep="\t").set_index("statistic")
    assert list(t4.index) == ["rho", "rho_low", "rho_high", "p", "p_bh"]
    assert list(t4.columns) == list(CONTRASTS)
    # rho recomputed from the per-session values and the participants table's EDSS
    table = load_participants(training_cohort / "rawdata" / "participants.tsv")
    edss = dict(zip(table["subject"] + "_" + table["session"], table["edss"]))
    for c in CONTRASTS:
        vals, ys = [], []
        for _, row in table.iterrows():
            s, t = row["subject"], row["session"]
            v = pd.read_csv(_xai(results, s, t, "space-NDIcrop_maskvalues.tsv"), sep="\t")
            r = v[(v["scenario"] == chosen["scenario"]) & (v["N"] == 40) & (v["contrast"] == c)]
            vals.append(float(r["value"].iloc[0]))
            ys.append(edss[f"{s}_{t}"])
        rho = correlation.spearman_rho(vals, ys)
        assert t4.loc["rho", c] == pytest.approx(rho, abs=1e-9)
        row3 = t3[(t3["scenario"] == chosen["scenario"]) & (t3["N"] == 40)]
        assert row3[c].iloc[0] == pytest.approx(rho, abs=1e-9)
        if np.isfinite(rho):
            assert 0 < t4.loc["p", c] <= 1 and t4.loc["p", c] <= t4.loc["p_bh", c] <= 1
    assert (group / "correlations.png").stat().st_size > 10_000


def test_warped_masks_and_group_heatmaps(trained):
    results = trained / "results"
    group = results / "group"
    pred = _predictions(results)
    chosen = json.loads((group / "chosen_scenario.json").read_text())["scenario"]
    split = _sessions(results)
    tshape = None
    stacks = {}
    for _, row in split.iterrows():
        s, t = row["subject"], row["session"]
        path = _xai(results, s, t, f"space-{TPL}_desc-top40_mask.nii.gz")
        assert sidecar_path(path).exists()
        stacks[(s, t)] = load_stack(path)[0]
    for n in SCENARIOS:
        warped = []
        for _, row in split.iterrows():
            s, t = row["subject"], row["session"]
            data = stacks[(s, t)][n]
            assert set(np.unique(data)) <= {0, 1} and data.any()
            tshape = tshape or data.shape[:3]
            assert data.shape == (tshape + (3,) if n in INDIVIDUAL else tshape)
            label = int(pred.set_index(["subject", "session"]).loc[(s, t), "label"])
            warped.append((label, data > 0))
        for g in ("severe", "mild", "all"):
            path = group / "heatmaps" / f"tpl-{TPL}_scenario-{n:02d}_group-{g}_desc-top40_heatmap.nii.gz"
            heat = _load(path).astype(np.float64)
            assert sidecar_path(path).exists()
            assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
            members = [m for lab, m in warped
                       if g == "all" or lab == (1 if g == "severe" else 0)]
            assert members
            assert np.allclose(heat, np.mean(members, axis=0), atol=1e-6)
    peaks = pd.read_csv(group / "heatmap_peaks.tsv", sep="\t")
    assert set(peaks["scenario"]) == {chosen, 3, 4}
    assert set(peaks["group"]) == {"severe", "mild", "all"}
    assert peaks["value"].between(0, 1, inclusive="right").all()
    assert peaks["aal3"].astype(str).str.len().gt(0).all()
    assert (peaks.loc[peaks["scenario"] == chosen, "role"] == "chosen").all()
    assert (group / "fig6_heatmaps.png").stat().st_size > 50_000


def test_group_statistics_in_mni152(trained):
    """The warped, normalised relevance of every session and the group tests in MNI152
    (docs/method.md#77-group-statistics-in-mni152): every image on the voxel screen's
    grid, the t of the chosen scenario and of the qT1 map recomputed from the per-session
    files, the p images' order, the sidecars' subjects, the cluster tables' columns."""
    from gamer_mril.assessment.groupstats import CLUSTER_COLUMNS, glm_t, template_cerebrum
    from gamer_mril.baselines import screen_grid
    from gamer_mril.layout import GROUP_STATS, group_stat

    results = trained / "results"
    group = results / "group"
    shape, grid = screen_grid(4.0)
    table = pd.read_csv(group / "analysed_sessions.tsv", sep="\t", dtype=IDS)
    first = table.drop_duplicates("subject")
    labels = _predictions(results).set_index(["subject", "session"])["label"]
    severe = np.array([labels[(s, t)] for s, t in zip(first.subject, first.session)]) == 1
    templates = results / "templates"
    cerebrum = template_cerebrum(nib.load(str(templates / f"tpl-{TPL}_res-02_desc-brain_mask.nii.gz")),
                                 nib.load(str(templates / f"tpl-{TPL}_res-01_desc-cerebellum_mask.nii.gz")),
                                 shape, grid)
    chosen = json.loads((group / "chosen_scenario.json").read_text())["scenario"]
    relnorm = {}
    for s, t in zip(first.subject, first.session):
        path = _xai(results, s, t, f"space-{TPL}_desc-relnorm_relmap.nii.gz")
        arrays, affine, _ = load_stack(path)
        np.testing.assert_allclose(affine, grid, atol=1e-4)
        facts = json.loads(sidecar_path(path).read_text())["Facts"]["scenarios"]
        for n in SCENARIOS:
            assert arrays[n].shape == (shape + (3,) if n in INDIVIDUAL else shape)
            assert arrays[n].min() >= 0
            for f in facts[str(n)].values():
                assert f["all_zero"] == (f["positive_sum"] == 0)
                assert (f["template_sum"] > 0) != f["all_zero"]
        relnorm[(s, t)] = arrays
    age = first["age"].astype(float).to_numpy()[:, None]
    kinds = {"relevance": [(n, {"scenario": n}) for n in SCENARIOS],
             "input": [(c, {"contrast": c}) for c in CONTRASTS]}
    for kind, maps in kinds.items():
        for name, key in maps:
            for stat in GROUP_STATS:
                img = nib.load(group_stat(group, stat, **key))
                assert img.shape[:3] == shape and np.allclose(img.affine, grid, atol=1e-4)
                assert img.shape[3:] == ((3,) if kind == "relevance" and name in INDIVIDUAL
                                         else ())
            pfwe = _load(group_stat(group, "pfwe", **key))
            p = _load(group_stat(group, "p", **key))
            assert (0 < pfwe).all() and (pfwe <= 1).all() and (p <= pfwe + 1e-6).all()
            assert (pfwe[~cerebrum] == 1).all()
            facts = json.loads(sidecar_path(group_stat(group, "t", **key)).read_text())["Facts"]
            assert facts["groups"] == {"severe": int(severe.sum()),
                                       "mild": int((~severe).sum())}
            assert len(facts["subjects"]) == table["subject"].nunique() == 8
            assert all(v["n_permutations"] == 201 for v in facts["per_volume"].values())
    # t recomputed: the chosen scenario's first volume and the qT1 map
    data = relnorm[(first.subject.iloc[0], first.session.iloc[0])][chosen]
    pick = (lambda a: a[..., 0]) if data.ndim == 4 else (lambda a: a)
    y = np.stack([pick(relnorm[k][chosen])[cerebrum] for k in relnorm])
    t = pick(_load(group_stat(group, "t", scenario=chosen)))
    np.testing.assert_allclose(t[cerebrum], glm_t(y, severe, age), rtol=1e-3, atol=1e-4)
    y = np.stack([_load(_anat(results, s, t_, f"space-{TPL}_desc-screen_maps.nii.gz"))[..., 0][cerebrum]
                  for s, t_ in zip(first.subject, first.session)])
    t = _load(group_stat(group, "t", contrast="qT1"))
    np.testing.assert_allclose(t[cerebrum], glm_t(y, severe, age), rtol=1e-3, atol=1e-4)
    rel = pd.read_csv(group / "stats" / "relevance_clusters.tsv", sep="\t")
    assert list(rel.columns) == ["scenario", "volume"] + CLUSTER_COLUMNS
    inp = pd.read_csv(group / "stats" / "input_clusters.tsv", sep="\t")
    assert list(inp.columns) == ["contrast"] + CLUSTER_COLUMNS
    for name in ("group_relevance_stats.png", "group_input_stats.png"):
        assert (group / name).stat().st_size > 10_000
    # the viewer: the chosen scenario's and the input maps' t maps after the heatmaps
    viewer = (group / "heatmap_viewer.html").read_text()
    for c in CONTRASTS:
        assert f"Severe vs mild, t, input map {c}: " in viewer
    assert f"Severe vs mild, t, scenario {chosen}" in viewer


#: The per-session rules, one job per session each.
PER_SESSION_RULES = PREPROCESSING_RULES + ("explain_session", "quantile_masks",
                                           "invert_session", "warp_top_masks",
                                           "warp_relevance", "relevance_reportlet",
                                           "session_report")


def test_every_job_has_its_log_and_benchmark(trained):
    results = trained / "results"
    split = _sessions(results)
    keys = sorted(f"sub-{s}_ses-{t}" for s, t in zip(split.subject, split.session))
    assert len(keys) == 8
    for rule in PER_SESSION_RULES:
        logs = sorted(p.stem for p in (results / "logs" / rule).glob("*.log"))
        assert logs == keys, rule
        for key in keys:
            text = (results / "logs" / rule / f"{key}.log").read_text()
            assert f"rule {rule}, {key.replace('_', ' ')}" in text and "done in" in text, text
            bench = pd.read_csv(results / "benchmarks" / rule / f"{key}.tsv", sep="\t")
            assert bench["s"].iloc[0] > 0 and "max_rss" in bench
    for rule in ("voxel_inverting", "correlations", "group_heatmaps",
                 "group_relevance_stats", "group_input_stats"):
        assert (results / "logs" / f"{rule}.log").exists()
        assert (results / "benchmarks" / f"{rule}.tsv").exists()


def test_report_holds_the_papers_tables_and_figures(trained, training_cohort):
    report = trained / "report.zip"
    proc = run_snakemake(trained, training_config(training_cohort), "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    archive = zipfile.ZipFile(report)
    names = "\n".join(archive.namelist())
    for name in ("table_ii.tsv", "fig4_inverting.png", "table_iii.tsv", "table_iv.tsv",
                 "fig6_heatmaps.png", "baseline_comparison.tsv", "training_curves.png",
                 "reliability.png", "config.yaml", "preprocessing_qc.tsv",
                 "heatmap_viewer.html", "sessions.html", "group_relevance_stats.png",
                 "relevance_clusters.tsv", "group_input_stats.png", "input_clusters.tsv"):
        assert name in names, name
    # the Quality control category: the QC table and the index of the session pages; the
    # reportlets are on those pages, not in the report
    assert ".svg" not in names
    # the runtime of every rule, from Snakemake's own records
    [html] = [n for n in archive.namelist() if n.endswith("report.html")]
    text = archive.read(html).decode()
    assert "Runtimes of jobs." in text
    assert "Quality control" in text
    for rule in ("train_fold", "explain_session", "register_to_template"):
        assert re.search(r'"rule":\s*"%s"' % rule, text), rule
