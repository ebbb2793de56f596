"""Simple classifiers beside the network, on the same split, with the same metrics.

A reader of Table II needs to know whether the network sees more than a simple statistic
of the same maps does. Three baselines, all L2-penalised logistic regressions with balanced
class weights, fitted per fold on that fold's training sessions exactly as the network is
(validation on the fold's own sessions, the test set scored by every fold model):

* ``cerebrum``: the mean of each preprocessed map (qT1, MWF, NDI) over the session's
  cerebrum, plus age: four numbers, a floor any model should clear;
* ``regional``: the mean of each map in every AAL3 region of the cerebrum, plus age. The
  atlas is carried from MNI152 into each session through the inverse of the session's
  template registration (nearest neighbour), as the cerebellum is. The penalty is chosen
  by a subject-grouped inner cross-validation on the training sessions only;
* ``screen``: a voxel screen in MNI152, as a voxel-wise group comparison works. The three
  maps are carried to MNI152 on a coarse grid (``screen_voxel_mm``) through the session's
  template registration; of those voxels (and age), the ones that vary over the training
  sessions are ranked by their ANOVA F between the training sessions' classes and the
  ``k`` best kept, ``k`` chosen from :data:`SCREEN_KS` by the same inner folds. It looks
  for a few voxels at the same place in every brain, where the network reads each
  session in its own grid: a focal effect that the network misses can show here
  (docs/benchmarks.md, "Where the ball is, and who can find it").

Features are standardised (and a region absent from a session imputed by its training
mean) inside the fitted pipeline, so nothing of the validation or test sessions leaks
into a fit. scikit-learn does the fitting; this module only assembles features and folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import CONTRASTS

#: The baselines, by name, with the label Table II gives them.
BASELINES = {"cerebrum": "baseline: cerebrum means + age",
             "regional": "baseline: AAL3 regional means + age",
             "screen": "baseline: MNI152 voxel screen + age"}
#: The row of a session's region table that holds the whole cerebrum.
CEREBRUM = "cerebrum"
#: Penalties searched for the regional baseline (inverse regularisation strength C).
REGIONAL_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))
#: Fixed penalty of the cerebrum baseline (four standardised features) and of the screen.
CEREBRUM_C = 1.0
#: Numbers of features the voxel screen may keep (chosen by inner folds).
SCREEN_KS = (10, 30, 100, 300, 1000)


# ------------------------------------------------------------------ per-session features
def cerebral_regions() -> dict:
    """AAL3 label -> name for the regions of the cerebrum (cerebellum and vermis out)."""
    from .templates import aal3_labels

    return {k: v for k, v in aal3_labels().items()
            if not v.startswith(("Cerebellum", "Vermis"))}


def region_means(maps: Mapping, cerebrum, atlas_labels, regions: Mapping) -> pd.DataFrame:
    """Mean of each map over the cerebrum and over each region, in the session's grid.

    ``maps``: {contrast: 3D array}; ``cerebrum``: boolean 3D mask; ``atlas_labels``:
    integer 3D array (the atlas in the session's grid); ``regions``: {label: name}.
    Rows: ``cerebrum`` first, then one per region in label order; columns region, label
    (0 for the cerebrum), voxels, then one column per contrast (NaN where a region has
    no voxel inside the cerebrum).
    """
    cerebrum = np.asarray(cerebrum, dtype=bool)
    atlas_labels = np.asarray(atlas_labels)
    rows = []

    def row(name, label, where):
        n = int(where.sum())
        values = {c: float(np.asarray(maps[c], dtype=np.float64)[where].mean()) if n
                  else float("nan") for c in CONTRASTS}
        rows.append(dict(region=name, label=int(label), voxels=n, **values))

    row(CEREBRUM, 0, cerebrum)
    for label in sorted(regions):
        row(regions[label], label, cerebrum & (atlas_labels == label))
    return pd.DataFrame(rows, columns=["region", "label", "voxels", *CONTRASTS])


def session_region_means(maps: Mapping, cerebrum_path, xfm: Mapping) -> pd.DataFrame:
    """:func:`region_means` of one session's network inputs (``maps``: {contrast: path}),
    the AAL3 atlas carried in through the session's template transforms ``xfm``."""
    import nibabel as nib

    from . import registration as reg
    from .spaces import from_template_transforms
    from .templates import aal3_path

    mask_img = nib.load(str(cerebrum_path))
    cerebrum = np.asarray(mask_img.dataobj) > 0
    atlas = nib.load(str(aal3_path()))
    fixed = reg.to_ants(cerebrum.astype(np.float32), mask_img.affine)
    moving = reg.to_ants(np.asarray(atlas.dataobj, dtype=np.float32), atlas.affine)
    tlist, inv = from_template_transforms(dict(xfm))
    labels = np.rint(reg.from_ants(reg.apply(fixed, moving, tlist, "nearestNeighbor", inv))[0])
    data = {c: np.asarray(nib.load(str(maps[c])).dataobj, dtype=np.float32) for c in CONTRASTS}
    return region_means(data, cerebrum, labels.astype(np.int64), cerebral_regions())


def read_region_means(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"region": str})


#: The MNI152 image (its resolution in mm) whose extent the screen's grid covers: the
#: package's own, so that the grid depends on ``screen_voxel_mm`` alone.
SCREEN_EXTENT = 2


def screen_grid(voxel_mm: float, extent=SCREEN_EXTENT) -> tuple:
    """``(shape, affine)`` of the voxel screen's MNI152 grid: voxels of ``voxel_mm`` over
    the extent of the MNI152 brain mask ``extent`` (a resolution in mm or a file), its
    first voxel centred on the mask's first voxel. The group statistics in MNI152 live on
    it too (gamer_mril.assessment.groupstats)."""
    from .templates import template_brain_mask

    tmask = template_brain_mask(extent)
    zooms = np.abs(tmask.header.get_zooms()[:3])
    shape = tuple(int(n) for n in np.ceil(np.array(tmask.shape) * zooms / voxel_mm))
    affine = tmask.affine.copy()
    affine[:3, :3] = tmask.affine[:3, :3] * (voxel_mm / zooms)
    return shape, affine


def warp_to_screen_grid(volumes, affine, xfm: Mapping, voxel_mm: float,
                        extent=SCREEN_EXTENT) -> tuple:
    """Volumes (V, D, H, W) of one session grid (``affine``: the cropped or NDI grid)
    carried to MNI152 through the session's template transforms ``xfm`` (linear), onto
    :func:`screen_grid`: ``(warped (V, X, Y, Z) float32, its affine)``."""
    from . import registration as reg
    from .spaces import to_template_transforms

    shape, grid = screen_grid(voxel_mm, extent)
    fixed = reg.to_ants(np.zeros(shape, dtype=np.float32), grid)
    tlist, inv = to_template_transforms(dict(xfm))
    return reg.apply_to_volumes(fixed, volumes, affine, tlist, "linear", inv), grid


def session_template_maps(maps: Mapping, xfm: Mapping, voxel_mm: float,
                          extent=SCREEN_EXTENT):
    """The session's network inputs (``maps``: {contrast: path}, cropped grid) carried to
    MNI152 through its template transforms ``xfm`` (linear), on a grid of ``voxel_mm``
    over the extent of the MNI152 brain mask ``extent`` (a resolution in mm or a file;
    :func:`warp_to_screen_grid`): (4D array with the contrasts last, in CONTRASTS order;
    its affine)."""
    import nibabel as nib

    images = [nib.load(str(maps[c])) for c in CONTRASTS]      # one grid: the cropped one
    volumes = np.stack([np.asarray(img.dataobj, dtype=np.float32) for img in images])
    warped, affine = warp_to_screen_grid(volumes, images[0].affine, xfm, voxel_mm, extent)
    return np.moveaxis(warped, 0, -1), affine


def read_template_maps(path) -> np.ndarray:
    """A session's template maps (:func:`session_template_maps`) as one vector, every
    contrast's voxels one after the other (the screen's features)."""
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    return np.moveaxis(data, -1, 0).ravel()


# ------------------------------------------------------------------ features per session
def feature_table(region_tables: Mapping, ages: Mapping, kind: str) -> pd.DataFrame:
    """One row per session (index: (subject, session)), the features of baseline ``kind``.

    ``region_tables``: {(subject, session): :func:`region_means` frame}; ``ages``:
    {(subject, session): years}. ``cerebrum``: ``<contrast>`` means of the cerebrum and
    ``age``; ``regional``: ``<region>:<contrast>`` for every region and contrast, and
    ``age``.
    """
    if kind not in BASELINES or kind == "screen":
        raise ValueError(f"unknown baseline {kind!r} of region tables; expected one of "
                         "cerebrum, regional (the screen's features: screen_table)")
    rows = {}
    for key, table in region_tables.items():
        table = table.set_index("region")
        if kind == "cerebrum":
            feats = {c: float(table.loc[CEREBRUM, c]) for c in CONTRASTS}
        else:
            regions = table.drop(index=CEREBRUM)
            feats = {f"{r}:{c}": float(regions.loc[r, c]) for r in regions.index
                     for c in CONTRASTS}
        feats["age"] = float(ages[key])
        rows[key] = feats
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["subject", "session"])
    return out


def screen_table(voxels: Mapping, ages: Mapping) -> pd.DataFrame:
    """The voxel screen's features, one row per session (index: (subject, session)):
    ``voxels``: {(subject, session): 1D array, every contrast's template-grid voxels one
    after the other (:func:`read_template_maps`)}; the voxels zero in every session (out
    of every brain) are left out, then ``age``."""
    keys = list(voxels)
    X = np.vstack([np.asarray(voxels[k], dtype=np.float32).ravel() for k in keys])
    used = np.flatnonzero((X != 0).any(axis=0))
    out = pd.DataFrame(X[:, used], columns=[f"v{i}" for i in used])
    out["age"] = [float(ages[k]) for k in keys]
    out.index = pd.MultiIndex.from_tuples(keys, names=["subject", "session"])
    return out


# ------------------------------------------------------------------ fitting
def _inner_splits(labels: np.ndarray, groups: np.ndarray, seed: int):
    """Subject-grouped, stratified inner folds on the training sessions, or None when the
    training set is too small to hold both classes in every inner fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = [len(set(groups[labels == k])) for k in (0, 1)]
    n_splits = min(3, *per_class)
    if n_splits < 2:
        return None
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    splits = list(cv.split(np.zeros(len(labels)), labels, groups))
    if any(len(set(labels[val])) < 2 or len(set(labels[tr])) < 2 for tr, val in splits):
        return None
    return splits


def fit_baseline(kind: str, X: pd.DataFrame, labels, groups, seed: int = 0):
    """The fitted pipeline (impute, standardise, penalised logistic regression) of one
    baseline on training features ``X`` with ``labels`` (0/1) and subject ``groups``.

    The cerebrum baseline uses a fixed penalty; the regional one picks C from
    :data:`REGIONAL_CS` by the mean AUC of subject-grouped inner folds (the middle value
    when the training set is too small for inner folds).
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=int)
    groups = np.asarray(groups)
    if len(set(labels)) < 2:
        raise ValueError(f"baseline {kind}: the training sessions hold one class only")

    def pipeline(c):
        return make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True),
                             StandardScaler(),
                             LogisticRegression(C=c, class_weight="balanced",
                                                max_iter=10000))

    if kind == "cerebrum":
        return pipeline(CEREBRUM_C).fit(X.to_numpy(float), labels)
    splits = _inner_splits(labels, groups, seed)
    if kind == "screen":
        model, grid = screen_pipeline(), {"selectkbest__k": screen_ks(X, splits)}
    else:
        model, grid = pipeline(1.0), {"logisticregression__C": list(REGIONAL_CS)}
    (key, values), = grid.items()
    if splits is None:
        return model.set_params(**{key: values[len(values) // 2]}).fit(X.to_numpy(float), labels)
    search = GridSearchCV(model, grid, scoring="roc_auc", cv=splits, refit=True)
    return search.fit(X.to_numpy(float), labels).best_estimator_


def screen_pipeline(k: int = SCREEN_KS[0]):
    """The voxel screen: of the features not constant over the training sessions, the
    ``k`` of largest ANOVA F between their classes, standardised, then the L2 logistic
    regression of the other baselines (balanced class weights, C = :data:`CEREBRUM_C`)."""
    from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(VarianceThreshold(), SelectKBest(f_classif, k=k), StandardScaler(),
                         LogisticRegression(C=CEREBRUM_C, class_weight="balanced",
                                            max_iter=10000))


def screen_ks(X, splits) -> list:
    """The values of :data:`SCREEN_KS` that every (inner) training set can supply: no more
    than the features that vary over it."""
    X = np.asarray(X, dtype=np.float64)
    parts = [X] + ([X[tr] for tr, _ in splits] if splits else [])
    most = min(int((part.std(axis=0) > 0).sum()) for part in parts)
    return [k for k in SCREEN_KS if k <= most] or [max(1, most)]


def available_baselines(screen: bool) -> list:
    """The baselines that can be fitted: all, or all but the voxel screen when the
    sessions' template maps are not given."""
    return [k for k in BASELINES if screen or k != "screen"]


def baseline_predictions(region_tables: Mapping, participants: pd.DataFrame,
                         split: pd.DataFrame, kinds: Sequence | None = None,
                         seed: int = 0, screen_voxels: Mapping | None = None) -> pd.DataFrame:
    """Every baseline fitted per fold as the network is; its predictions of the fold's
    validation sessions and of the test sessions.

    ``kinds``: the baselines to fit, by default every one whose features are given (the
    screen's come as ``screen_voxels``, see :func:`screen_table`).

    ``split``: the split table (subject, session, set = ``cv`` | ``test``, fold for cv
    sessions). For fold k the training sessions are the cv sessions of the other folds.
    Rows: baseline, fold, set (``validation`` | ``test``), subject, session, edss, label,
    prob.
    """
    table = participants.set_index(["subject", "session"])
    ages = {k: float(v) for k, v in table["age"].items()}
    split = split.copy()
    split["key"] = list(zip(split["subject"].astype(str), split["session"].astype(str)))
    cv = split[split["set"] == "cv"]
    test = split[split["set"] == "test"]
    folds = sorted(int(f) for f in cv["fold"].unique())
    if kinds is None:
        kinds = available_baselines(screen_voxels is not None)
    rows = []
    for kind in kinds:
        if kind == "screen":
            if screen_voxels is None:
                raise ValueError("the screen baseline needs the sessions' template maps")
            X = screen_table(screen_voxels, ages)
        else:
            X = feature_table(region_tables, ages, kind)
        for k in folds:
            train = cv[cv["fold"].astype(int) != k]
            val = cv[cv["fold"].astype(int) == k]
            y = table.loc[list(train["key"]), "label"].to_numpy(int)
            model = fit_baseline(kind, X.loc[list(train["key"])], y,
                                 train["subject"].to_numpy(), seed=seed)
            for name, part in (("validation", val), ("test", test)):
                if part.empty:
                    continue
                keys = list(part["key"])
                prob = model.predict_proba(X.loc[keys].to_numpy(float))[:, 1]
                for (subject, session), p in zip(keys, prob):
                    rows.append(dict(baseline=kind, fold=k, set=name, subject=subject,
                                     session=session, edss=float(table.loc[(subject, session), "edss"]),
                                     label=int(table.loc[(subject, session), "label"]),
                                     prob=float(p)))
    return pd.DataFrame(rows, columns=["baseline", "fold", "set", "subject", "session",
                                       "edss", "label", "prob"])


def split_by_fold(predictions: pd.DataFrame, kind: str) -> tuple[dict, dict]:
    """({fold: validation frame}, {fold: test frame}) of one baseline, as Table II takes
    the network's."""
    own = predictions[predictions["baseline"] == kind]
    val = {int(k): df.reset_index(drop=True)
           for k, df in own[own["set"] == "validation"].groupby("fold")}
    test = {int(k): df.reset_index(drop=True)
            for k, df in own[own["set"] == "test"].groupby("fold")}
    return val, test


# ------------------------------------------------------------------ the rules' jobs
def run_region_means(maps: Mapping, cerebrum, xfm: Mapping, out, *, subject=None,
                     session=None, log_file=None, threads: int = 1) -> None:
    """Rule region_means: the session's mean of each network input over the cerebrum and
    over each AAL3 region of it."""
    from .io import atomic_write_text
    from .jobs import step

    with step("region_means", inputs={**dict(maps), "cerebrum": cerebrum, **dict(xfm)},
              outputs=[out], log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        table = session_region_means(maps, cerebrum, xfm)
        atomic_write_text(out, table.to_csv(sep="\t", index=False, na_rep="n/a"))
        s.sidecar(out, {"Regions": int(len(table) - 1),
                        "RegionsWithoutVoxels": int((table["voxels"] == 0).sum())})


def run_template_maps(maps: Mapping, xfm: Mapping, out, *, screen_voxel_mm: float,
                      extent=SCREEN_EXTENT, subject=None, session=None, log_file=None,
                      threads: int = 1) -> None:
    """Rule template_maps: the session's network inputs in MNI152, for the voxel screen."""
    from .io import save_nifti
    from .jobs import step

    with step("template_maps", inputs={**dict(maps), **dict(xfm)},
              params={"screen_voxel_mm": float(screen_voxel_mm), "extent": str(extent)}, outputs=[out],
              log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        data, affine = session_template_maps(maps, xfm, float(screen_voxel_mm), extent)
        save_nifti(data, affine, out)
        s.sidecar(out, {"Volumes": list(CONTRASTS), "VoxelSize": float(screen_voxel_mm)})


def run_fit_baselines(region_paths: Sequence, participants, split_path, out, *,
                      template_maps: Sequence = (), seed: int = 0, log_file=None,
                      threads: int = 1) -> None:
    """Rule fit_baselines: the baselines' per-fold predictions (the voxel screen's when
    ``template_maps`` are given)."""
    from .inputs import load_participants
    from .io import atomic_write_text
    from .jobs import step
    from .layout import session_of

    kinds = available_baselines(bool(template_maps))
    with step("fit_baselines", inputs={"means": list(region_paths),
                                       "template_maps": list(template_maps),
                                       "participants": participants, "split": split_path},
              params={"seed": seed, "baselines": kinds}, outputs=[out],
              log_file=log_file, threads=threads) as s:
        tables = {session_of(p): read_region_means(p) for p in region_paths}
        voxels = {session_of(p): read_template_maps(p) for p in template_maps} or None
        split = pd.read_csv(split_path, sep="\t", dtype={"subject": str, "session": str})
        pred = baseline_predictions(tables, load_participants(participants), split,
                                    kinds=kinds, seed=seed, screen_voxels=voxels)
        atomic_write_text(out, pred.to_csv(sep="\t", index=False))
        s.sidecar(out, {"baselines": kinds})
