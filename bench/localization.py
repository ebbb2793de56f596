"""Do the relevance maps localize the planted region? Relevance mass, pointing game, top-N
recall and group heatmap enrichment, per scenario and map (the synthetic cohort's planted
region as ground truth).

For every session of the assessment set (``predictions.tsv``) the generator's planted
region (``ground_truth/.../*_space-NDI_desc-planted_mask``) is carried into the cropped
grid of the relevance maps through the session's crop box and limited to the session's
cerebrum mask, the voxels every assessment of a map works in
(docs/method.md#72-quantile-masks). Per scenario and map (each contrast of an individual
scenario, the one map of a combined scenario), with R the region and C the cerebrum:

- ``mass_ratio``: the positive relevance in R over the positive relevance in C, divided by
  |R| / |C| (1: no spatial preference; |C| / |R| at most);
- ``pointing``: does the map's maximum within C lie in R (a plateau of equal maxima counts
  by its share in R); ``pointing_tol1`` the same with R widened by one voxel (26
  neighbours; one voxel is 5.4 mm in the quick demo, 3.6 mm in the full one); the chances
  ``pointing_chance`` / ``pointing_tol1_chance`` are the shares of C those regions hold;
- ``recall_ratio``: the share of R inside the session's top-N mask (``--level``, 40)
  divided by the mask's share of C, what a random mask of its size would cover. The
  masks are read from the workflow's level images (``desc-quantiles_mask``: top-N mask =
  ``(value > 0) & (value <= N)``) when their sidecar lists N, else recomputed with
  ``gamer_mril.assessment.quantile_mask``;
- ``heatmap_ratio``: the group heatmap (MNI152; ``results/group/heatmaps``; group
  ``severe`` for the severe sessions' rows, ``all`` for all) averaged over the planted
  region, divided by its average over the template cerebrum (MNI152 brain mask minus the
  workflow's cerebellum mask); the region in MNI152 is the ground truth's
  ``space-MNI152NLin2009cAsym_res-2_desc-planted_mask`` (the template-space region the
  subjects' anatomy was warped from). Without that file the column is empty and the
  output says so.

- ``rank_accuracy`` and ``mass_accuracy``: relevance rank accuracy and relevance mass
  accuracy as Quantus defines them (Arras et al. 2022): of the |R| voxels of highest
  relevance the share in R (chance ``rank_chance`` = |R| / |C|), and the share of the
  positive relevance that lies in R (``mass_ratio`` is it over |R| / |C|);
- ``share_<name>``: the share of the positive relevance on each other ground-truth mask
  of the session (``*_space-NDI_desc-<name>_mask`` besides brain, cerebellum and planted:
  the generator's ``lesions``, another generator's enlarged ventricles), outside R, with
  its chance ``share_<name>_chance``; a map that finds lesions is then not silently a
  miss.

The per-session figures are averaged over the sessions, once over all assessed sessions
and once over the severe ones (label 1). Reads the synthetic ground truth, so it lives
here and not in the workflow:

    python bench/localization.py RESULTS COHORT [--level 40] [--out TABLE.tsv]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import binary_dilation

from heatmap_groundtruth import resample_like  # bench/heatmap_groundtruth.py
from lrp_groundtruth import _load  # bench/lrp_groundtruth.py

from gamer_mril import CONTRASTS
from gamer_mril.assessment.masks import contrast_first, masks_from_levels, quantile_mask
from gamer_mril.io import sidecar_path
from gamer_mril.layout import Session
from gamer_mril.lrp import SCENARIOS
from gamer_mril.spaces import CropBox, apply_crop
from gamer_mril.scenario_stack import load_stack

#: Every scenario (docs/method.md#67-the-twelve-scenarios and #68-beyond-the-paper-scenarios-13-to-20): 1-8 and 15-18 LRP
#: (gamer_mril.layout.LRP_SCENARIOS), the others gradient methods.
SCENARIO_NUMBERS = tuple(sorted(SCENARIOS))
#: Session groups the figures are averaged over, and the group heatmap each row is read with.
GROUPS = {"all": "all", "severe": "severe"}
COLUMNS = ["scenario", "name", "map", "sessions", "n_sessions", "mass_ratio", "pointing",
           "pointing_tol1", "pointing_chance", "pointing_tol1_chance", "recall",
           "recall_chance", "recall_ratio", "mask_source", "heatmap_ratio", "heatmap_level",
           "rank_accuracy", "rank_chance", "mass_accuracy"]
#: Ground-truth masks of the session that are not a disability region of their own kind
#: (the others, e.g. ``lesions``, get a ``share_<name>`` column).
NOT_OTHER = ("brain", "cerebellum", "planted")
_TOUCH = np.ones((3, 3, 3), dtype=bool)   # 26-neighbourhood: one voxel in every direction


# ----------------------------------------------------------------------------- metrics

def _masks(region, cerebrum):
    cerebrum = np.asarray(cerebrum, dtype=bool)
    return np.asarray(region, dtype=bool) & cerebrum, cerebrum


def mass_ratio(relevance, region, cerebrum) -> float:
    """(positive relevance in ``region`` / positive relevance in ``cerebrum``) divided by
    (region voxels / cerebrum voxels), the region taken within the cerebrum. NaN when the
    map has no positive relevance in the cerebrum or the region is empty."""
    region, cerebrum = _masks(region, cerebrum)
    positive = np.clip(np.asarray(relevance, dtype=np.float64), 0, None)
    total = positive[cerebrum].sum()
    if total <= 0 or not region.any():
        return float("nan")
    return float(positive[region].sum() / total / (region.sum() / cerebrum.sum()))


def pointing_hit(relevance, region, cerebrum, tolerance: int = 0) -> float:
    """1 when the map's maximum within ``cerebrum`` lies in ``region`` (widened by
    ``tolerance`` voxels, 26-neighbourhood), else 0; when several voxels share the
    maximum, the share of them that lie in it. NaN when the map has no positive value in
    the cerebrum (it points nowhere) or the cerebrum is empty."""
    region, cerebrum = _masks(region, cerebrum)
    if tolerance:
        region = binary_dilation(region, _TOUCH, iterations=int(tolerance))
    rel = np.asarray(relevance, dtype=np.float64)
    if not cerebrum.any():
        return float("nan")
    top = rel[cerebrum].max()
    if top <= 0:
        return float("nan")
    plateau = cerebrum & (rel == top)
    return float(region[plateau].mean())


def rank_accuracy(relevance, region, cerebrum) -> float:
    """Relevance rank accuracy (Arras et al. 2022, as Quantus defines it): of the K
    cerebrum voxels of highest relevance, K the region's size within the cerebrum, the
    share that lie in the region. Voxels tied at the K-th value count by the share of them
    that fits in K (so a constant map scores the chance, K / |C|). NaN for an empty
    region or a map without positive relevance in the cerebrum."""
    region, cerebrum = _masks(region, cerebrum)
    k = int(region.sum())
    rel = np.asarray(relevance, dtype=np.float64)[cerebrum]
    inside = region[cerebrum]
    if k == 0 or not (rel > 0).any():
        return float("nan")
    kth = np.partition(rel, rel.size - k)[rel.size - k]        # the K-th largest value
    above, tied = rel > kth, rel == kth
    share = (k - above.sum()) / tied.sum()
    return float(((above & inside).sum() + share * (tied & inside).sum()) / k)


def mass_accuracy(relevance, region, cerebrum) -> float:
    """Relevance mass accuracy (Arras et al. 2022, Quantus): the positive relevance in the
    region over the positive relevance in the cerebrum (the share; ``mass_ratio`` is it
    over chance). NaN without positive relevance in the cerebrum."""
    region, cerebrum = _masks(region, cerebrum)
    positive = np.clip(np.asarray(relevance, dtype=np.float64), 0, None)
    total = positive[cerebrum].sum()
    return float(positive[region].sum() / total) if total > 0 else float("nan")


def pointing_chance(region, cerebrum, tolerance: int = 0) -> float:
    """The pointing game's chance: the share of the cerebrum in ``region`` (widened by
    ``tolerance`` voxels), the hit rate of a maximum placed at random."""
    region, cerebrum = _masks(region, cerebrum)
    if tolerance:
        region = binary_dilation(region, _TOUCH, iterations=int(tolerance)) & cerebrum
    return float(region.sum() / cerebrum.sum()) if cerebrum.any() else float("nan")


def top_recall(mask, region, cerebrum) -> tuple[float, float]:
    """``(recall, chance)``: the share of ``region`` covered by ``mask`` and the mask's
    share of ``cerebrum`` (what a random mask of its size covers on average), both within
    the cerebrum; their ratio is the recall over chance. NaN for an empty region."""
    region, cerebrum = _masks(region, cerebrum)
    mask = np.asarray(mask, dtype=bool) & cerebrum
    if not region.any():
        return float("nan"), float("nan")
    return float((mask & region).sum() / region.sum()), float(mask.sum() / cerebrum.sum())


def heatmap_ratio(heatmap, region, cerebrum) -> float:
    """The heatmap's mean over ``region`` (within ``cerebrum``) divided by its mean over
    ``cerebrum``; equivalently its mass in the region over the region's share (1: no
    preference). NaN when the heatmap is zero over the cerebrum or the region is empty."""
    return mass_ratio(heatmap, region, cerebrum)


# ----------------------------------------------------------------------------- inputs

def scenario_names() -> dict:
    """{number: name} of every scenario (gamer_mril.lrp.SCENARIOS)."""
    return {n: SCENARIOS[n].name for n in SCENARIO_NUMBERS}


def region_in_crop(results: Path, cohort: Path, subject: str, session: str):
    """``(planted region, cerebrum)`` of a session in the cropped grid of its relevance
    maps: the ground truth's NDI-grid region through the session's crop box (as
    bench/lrp_groundtruth.py carries it), limited to the cerebrum."""
    s = Session(results, subject, session)
    crop = json.loads(Path(s.crop_box).read_text())
    truth = (cohort / "ground_truth" / f"sub-{subject}" / f"ses-{session}"
             / f"{s.key}_space-NDI_desc-planted_mask.nii.gz")
    img = nib.load(str(truth))
    full = crop.get("FullShape")
    if full is not None and (tuple(img.shape[:3]) != tuple(full) or not np.allclose(
            img.affine, np.asarray(crop["FullAffine"]), atol=1e-3)):
        raise ValueError(f"{truth}: not on the session's NDI grid ({s.crop_box})")
    planted = apply_crop(np.asarray(img.dataobj) > 0, CropBox.from_dict(crop["CropBox"]))
    cerebrum = _load(s.cerebrum) > 0
    return planted & cerebrum, cerebrum


def other_truth_masks(results: Path, cohort: Path, subject: str, session: str,
                      region, cerebrum) -> dict:
    """``{name: mask}`` of the session's other ground-truth masks in the NDI grid
    (``*_space-NDI_desc-<name>_mask``, name not in :data:`NOT_OTHER`: the generator's
    lesions, another generator's enlarged ventricles), carried into the cropped grid like
    the region, within the cerebrum and outside the planted region (so a map on lesions
    is told apart from one on the region, and the shares add up)."""
    s = Session(results, subject, session)
    box = CropBox.from_dict(json.loads(Path(s.crop_box).read_text())["CropBox"])
    folder = cohort / "ground_truth" / f"sub-{subject}" / f"ses-{session}"
    out = {}
    for path in sorted(folder.glob(f"{s.key}_space-NDI_desc-*_mask.nii.gz")):
        name = re.search(r"_desc-([A-Za-z0-9]+)_mask", path.name).group(1)
        if name not in NOT_OTHER:
            mask = apply_crop(np.asarray(nib.load(str(path)).dataobj) > 0, box)
            out[name] = mask & cerebrum & ~region
    return out


def stored_level_images(session: Session, level: int) -> dict:
    """{scenario: level image} of the workflow's quantile-mask stack when its sidecar
    lists ``level``, else {} (the masks are then recomputed)."""
    path = Path(session.qmasks)
    if not (path.exists() and sidecar_path(path).exists()):
        return {}
    levels = json.loads(sidecar_path(path).read_text()).get("Facts", {}).get("levels")
    if not levels or int(level) not in [int(v) for v in levels]:
        return {}
    return load_stack(path)[0]


def top_masks(stored: dict, n: int, rel: np.ndarray, cerebrum, level: int):
    """``(masks, source)``: the top-``level`` mask of each of a scenario's maps (one per
    contrast, or one for a combined map), read from the workflow's level images
    (``stored``, :func:`stored_level_images`) when they hold the scenario
    (``source="read"``), else recomputed (``"computed"``)."""
    if n in stored:
        masks = masks_from_levels(contrast_first(stored[n]), [level])[0]
        return (list(masks) if masks.ndim == 4 else [masks]), "read"
    maps = [rel[..., i] for i in range(rel.shape[-1])] if rel.ndim == 4 else [rel]
    return [quantile_mask(m, cerebrum, level) for m in maps], "computed"


def session_rows(results: Path, cohort: Path, subject: str, session: str, level: int,
                 names: dict) -> list:
    """One row per scenario and map of one session: every per-session figure."""
    region, cerebrum = region_in_crop(results, cohort, subject, session)
    if not region.any():
        print(f"sub-{subject} ses-{session}: the planted region lies outside the cropped "
              f"cerebrum; left out", file=sys.stderr)
        return []
    s = Session(results, subject, session)
    chance = {t: pointing_chance(region, cerebrum, t) for t in (0, 1)}
    others = other_truth_masks(results, cohort, subject, session, region, cerebrum)
    rows = []
    path = Path(s.relmaps("NDIcrop"))
    relevance = load_stack(path, dtype=np.float64)[0] if path.exists() else {}
    stored = stored_level_images(s, level)
    for n in SCENARIO_NUMBERS:
        if n not in relevance:
            continue
        rel = relevance[n]
        if rel.shape[:3] != cerebrum.shape:
            raise ValueError(f"{path}: grid {rel.shape[:3]} is not the cropped grid "
                             f"{cerebrum.shape}")
        maps = [rel[..., i] for i in range(rel.shape[-1])] if rel.ndim == 4 else [rel]
        labels = list(CONTRASTS) if rel.ndim == 4 else ["combined"]
        masks, source = top_masks(stored, n, rel, cerebrum, level)
        for label, m, mask in zip(labels, maps, masks):
            recall, recall_chance = top_recall(mask, region, cerebrum)
            rows.append(dict(
                subject=subject, session=session, scenario=n, name=names[n], map=label,
                mass_ratio=mass_ratio(m, region, cerebrum),
                pointing=pointing_hit(m, region, cerebrum),
                pointing_tol1=pointing_hit(m, region, cerebrum, tolerance=1),
                pointing_chance=chance[0], pointing_tol1_chance=chance[1],
                recall=recall, recall_chance=recall_chance,
                recall_ratio=recall / recall_chance if recall_chance > 0 else np.nan,
                mask_source=source, rank_accuracy=rank_accuracy(m, region, cerebrum),
                rank_chance=chance[0], mass_accuracy=mass_accuracy(m, region, cerebrum),
                **{f"share_{k}": mass_accuracy(m, o, cerebrum) for k, o in others.items()},
                **{f"share_{k}_chance": pointing_chance(o, cerebrum)
                   for k, o in others.items()}))
    return rows


def template_region(results: Path, cohort: Path, ref):
    """``(planted region, cerebrum)`` on the grid of the heatmap ``ref`` (MNI152), or
    None when the ground truth holds no template-space region."""
    from gamer_mril import templates

    found = sorted((cohort / "ground_truth").glob("space-*_desc-planted_mask.nii.gz"))
    if not found:
        return None
    res = 1 if abs(ref.affine[0, 0]) < 1.5 else 2
    brain = resample_like(templates.template_brain_mask(res), ref)
    cereb_files = sorted((results / "templates").glob("tpl-*_desc-cerebellum_mask.nii.gz"))
    cereb_img = nib.load(str(cereb_files[0])) if cereb_files else templates.cerebellum_mask(res)
    cerebrum = brain & ~resample_like(cereb_img, ref)
    return resample_like(nib.load(str(found[0])), ref) & cerebrum, cerebrum


def heatmap_rows(results: Path, cohort: Path, names: dict):
    """``(rows, note)``: per scenario, map and group, the group heatmap's enrichment in
    the planted region (MNI152), and a sentence when it cannot be given."""
    folder = results / "group" / "heatmaps"
    files = {}
    for n in SCENARIO_NUMBERS:
        for sessions, group in GROUPS.items():
            hits = sorted(folder.glob(f"*_scenario-{n:02d}_group-{group}_desc-top*_heatmap.nii.gz"))
            if hits:
                files[(n, sessions)] = hits[0]
    if not files:
        return [], f"no group heatmaps under {folder}"
    first = nib.load(str(next(iter(files.values()))))
    regions = template_region(results, cohort, first)
    if regions is None:
        return [], (f"the ground truth ({cohort / 'ground_truth'}) holds no planted region in "
                    f"template space: no heatmap enrichment")
    region, cerebrum = regions
    rows = []
    for (n, sessions), path in files.items():
        img = nib.load(str(path))
        if img.shape[:3] != first.shape[:3] or not np.allclose(img.affine, first.affine):
            raise ValueError(f"{path}: not on the grid of the other heatmaps")
        heat = np.asarray(img.dataobj, dtype=np.float64)
        maps = [heat[..., i] for i in range(heat.shape[-1])] if heat.ndim == 4 else [heat]
        labels = list(CONTRASTS) if heat.ndim == 4 else ["combined"]
        level = int(re.search(r"desc-top(\d+)_", path.name).group(1))
        for label, h in zip(labels, maps):
            rows.append(dict(scenario=n, map=label, sessions=sessions, heatmap_level=level,
                             heatmap_ratio=heatmap_ratio(h, region, cerebrum)))
    return rows, None


# ----------------------------------------------------------------------------- table

def localization_table(results: Path, cohort: Path, level: int = 40):
    """``(table, notes)``: one row per scenario, map and session group (``COLUMNS``), and
    the sentences the output should carry."""
    results, cohort = Path(results), Path(cohort)
    names = scenario_names()
    pred = pd.read_csv(results / "group" / "predictions.tsv", sep="\t",
                       dtype={"subject": str, "session": str})
    rows = []
    for _, r in pred.iterrows():
        for row in session_rows(results, cohort, r["subject"], r["session"], level, names):
            rows.append({**row, "label": int(r["label"])})
    if not rows:
        raise SystemExit(f"no session of {results} with relevance maps and a planted region")
    df = pd.DataFrame(rows)
    shares = sorted(c for c in df.columns if c.startswith("share_"))
    figures = ["mass_ratio", "pointing", "pointing_tol1", "pointing_chance",
               "pointing_tol1_chance", "recall", "recall_chance", "recall_ratio",
               "rank_accuracy", "rank_chance", "mass_accuracy", *shares]
    parts = []
    for sessions in GROUPS:
        sub = df if sessions == "all" else df[df["label"] == 1]
        if sub.empty:
            continue
        g = sub.groupby(["scenario", "name", "map"], sort=False)
        part = g[figures].mean()
        part["n_sessions"] = g.size()
        part["mask_source"] = g["mask_source"].agg(lambda v: "/".join(sorted(set(v))))
        part = part.reset_index()
        part["sessions"] = sessions
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    heat, note = heatmap_rows(results, cohort, names)
    heat = pd.DataFrame(heat, columns=["scenario", "map", "sessions", "heatmap_level",
                                       "heatmap_ratio"])
    table = table.merge(heat, on=["scenario", "map", "sessions"], how="left")
    order = {c: i for i, c in enumerate([*CONTRASTS, "combined"])}
    table = table.sort_values(["sessions", "scenario", "map"],
                              key=lambda c: c.map(order) if c.name == "map" else c)
    notes = [] if note is None else [note]
    levels = set(table["heatmap_level"].dropna().astype(int))
    if levels and levels != {int(level)}:
        notes.append(f"the group heatmaps are of the top-{sorted(levels)} masks, not top-{level}")
    return table[COLUMNS + shares].reset_index(drop=True), notes


def format_table(table: pd.DataFrame, sessions: str, level: int) -> str:
    """One session group's rows as printed text."""
    t = table[table["sessions"] == sessions]
    shares = [c for c in t.columns if c.startswith("share_") and not c.endswith("_chance")]
    lines = [f"{'scen':>4} {'name':<28} {'map':<8} {'mass':>5} {'point':>5} {'pt+1':>5} "
             f"{'top' + str(level):>6} {'heat':>5} {'rank':>5} {'massacc':>7}"
             + "".join(f" {c[6:]:>8}" for c in shares)]
    for _, r in t.iterrows():
        lines.append(f"{r['scenario']:>4} {r['name'][:28]:<28} {r['map']:<8} "
                     f"{r['mass_ratio']:5.2f} {r['pointing']:5.2f} {r['pointing_tol1']:5.2f} "
                     f"{r['recall_ratio']:6.2f} {r['heatmap_ratio']:5.2f} "
                     f"{r['rank_accuracy']:5.2f} {r['mass_accuracy']:7.3f}"
                     + "".join(f" {r[c]:8.3f}" for c in shares))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results folder")
    ap.add_argument("cohort", type=Path, help="the synthetic cohort (with ground_truth/)")
    ap.add_argument("--level", type=int, default=40, help="top-N quantile mask (default 40)")
    ap.add_argument("--out", type=Path, help="also write the table as TSV")
    a = ap.parse_args(argv)
    table, notes = localization_table(a.results, a.cohort, a.level)
    for sessions in GROUPS:
        t = table[table["sessions"] == sessions]
        if t.empty:
            print(f"\nno {sessions} session")
            continue
        r = t.iloc[0]
        print(f"\n{sessions} sessions ({int(t['n_sessions'].max())}): mass = relevance mass "
              f"in the planted region / its share of the cerebrum; point, pt+1 = pointing "
              f"game (chance {r['pointing_chance']:.3f}, {r['pointing_tol1_chance']:.3f} "
              f"with 1 voxel); top{a.level} = recall / chance; heat = {GROUPS[sessions]} "
              f"group heatmap, mean in region / mean in cerebrum (MNI152); 1 = chance; "
              f"rank = rank accuracy (chance {r['rank_chance']:.3f}); massacc = share of "
              f"the positive relevance in the region"
              + "".join(f"; {c[6:]} = share on the {c[6:]} outside the region (chance "
                        f"{r[c + '_chance']:.3f})" for c in t.columns
                        if c.startswith("share_") and not c.endswith("_chance")))
        print(format_table(table, sessions, a.level).replace(" nan", "   -"))
    for note in notes:
        print(f"note: {note}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(a.out, sep="\t", index=False, float_format="%.6g", na_rep="n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
