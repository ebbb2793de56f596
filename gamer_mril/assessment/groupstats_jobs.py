"""The jobs of the group statistics in MNI152 (docs/method.md#77-group-statistics-in-mni152):
rule warp_relevance (per session: every scenario's relevance normalised and warped to the
voxel screen's MNI152 grid), group_relevance_stats and group_input_stats (severe against
mild at every voxel of the template cerebrum, :mod:`.groupstats`), and their figures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import CONTRASTS, templates
from ..baselines import warp_to_screen_grid
from ..figures import new_figure, save_png
from ..io import atomic_path, read_session_table, save_nifti
from ..jobs import step
from ..layout import GROUP_STATS, session_of
from ..scenario_stack import load_stack, save_stack, volume_names
from .groupstats import (EXCHANGEABILITY, PermutationResult, cluster_table, map_seed, normalise_relevance,
                         one_session_per_subject, permutation_test,
                         template_cerebrum)

log = logging.getLogger("gamer_mril.assessment")

#: The images of every map (the keys of the rules' outputs).
STATS = GROUP_STATS
#: Significance level of the cluster tables and the figures.
ALPHA = 0.05
MODEL = "y = b0 + b1 severe + b2 age + e; t of b1; Freedman-Lane, two-sided, max |t| FWE"


def run_warp_relevance(relmaps, cerebrum, xfm: Mapping, out, *, screen_voxel_mm: float,
                       subject, session, log_file=None, threads: int = 1) -> None:
    """Rule warp_relevance: every scenario's relevance map of one session (``relmaps``,
    the cropped grid's scenario stack), its positive part over the cerebrum (``cerebrum``,
    the mask's file) divided by its sum there, carried to the voxel screen's MNI152 grid
    (``screen_voxel_mm``) through the session's template transforms ``xfm`` (linear);
    ``out``: one scenario stack."""
    with step("warp_relevance", inputs={"relmaps": relmaps, "cerebrum": cerebrum, **dict(xfm)},
              params={"screen_voxel_mm": float(screen_voxel_mm)}, outputs=[out],
              log_file=log_file, threads=threads, subject=subject, session=session) as s:
        arrays, affine, table = load_stack(relmaps, dtype=np.float32)
        mask = np.asarray(nib.load(str(cerebrum)).dataobj) > 0
        scenarios = sorted(arrays)
        volumes = [np.moveaxis(arrays[n], -1, 0) if arrays[n].ndim == 4 else arrays[n][None]
                   for n in scenarios]
        stacked = np.concatenate(volumes)
        if stacked.shape[1:] != mask.shape:
            raise ValueError(f"{s.session}: the relevance maps {relmaps} have the grid "
                             f"{stacked.shape[1:]}, the cerebrum mask {cerebrum} {mask.shape}")
        normed, sums = normalise_relevance(stacked, mask)
        warped, grid = warp_to_screen_grid(normed, affine, xfm, float(screen_voxel_mm))
        first, out_arrays, facts = 0, {}, {}
        for n, vol in zip(scenarios, volumes):
            w = warped[first:first + len(vol)]
            names = volume_names(arrays[n])
            out_arrays[n] = np.moveaxis(w, 0, -1) if arrays[n].ndim == 4 else w[0]
            facts[n] = {name: dict(positive_sum=float(sums[first + i]),
                                   all_zero=bool(sums[first + i] == 0),
                                   template_sum=float(w[i].sum(dtype=np.float64)))
                        for i, name in enumerate(names)}
            for name, f in facts[n].items():
                if f["all_zero"]:
                    log.warning("scenario %d, %s: no positive relevance in the cerebrum; "
                                "the normalised map is all zero", n, name)
            first += len(vol)
        table = save_stack(out_arrays, grid, out)
        s.sidecar(out, dict(volumes=table, scenarios=facts, interpolation="linear",
                            VoxelSize=float(screen_voxel_mm),
                            value="the session's positive relevance over its cerebrum "
                                  "divided by its sum there (sum 1 in the session's grid), "
                                  "warped linearly"))


# ------------------------------------------------------------------ the cohort's tests
def _subjects(participants, predictions) -> pd.DataFrame:
    pred = read_session_table(predictions)
    labels = dict(zip(zip(pred["subject"], pred["session"]), pred["label"].astype(int)))
    return one_session_per_subject(read_session_table(participants), labels)


def _cerebrum(brain_mask, cerebellum, shape, affine) -> np.ndarray:
    return template_cerebrum(nib.load(str(brain_mask)), nib.load(str(cerebellum)), shape,
                             affine)


def _by_session(paths: Sequence, subjects: pd.DataFrame, what: str) -> list:
    """The file of each subject's session among ``paths``, in ``subjects``' order."""
    found = {session_of(p): str(p) for p in paths}
    missing = [f"sub-{k[0]} ses-{k[1]}" for k in zip(subjects["subject"], subjects["session"])
               if k not in found]
    if missing:
        raise ValueError(f"no {what} among the inputs for {', '.join(missing)}")
    return [found[k] for k in zip(subjects["subject"], subjects["session"])]


def _check_grid(path, data, affine, shape, grid):
    if data.shape[:3] != tuple(shape) or not np.allclose(affine, grid, atol=1e-4):
        raise ValueError(f"{path}: grid {data.shape[:3]} is not the grid {tuple(shape)} of "
                         f"the other sessions")


def _mean(y) -> np.ndarray:
    """The mean over the subjects (rows); 0 without any."""
    return y.mean(axis=0) if len(y) else np.zeros(y.shape[1], dtype=y.dtype)


def _test_maps(maps: Mapping, subjects: pd.DataFrame, *, group_permutations, seed) -> dict:
    """{(map, volume): (result, means, zero sessions)} of ``maps`` ({(map, volume): (n, v)
    values in the cerebrum, subjects in ``subjects``' order})."""
    severe = subjects["label"].to_numpy() == 1
    age = subjects["age"].to_numpy(float)[:, None]
    testable = severe.any() and (~severe).any() and len(severe) >= 4
    if not testable:
        log.warning("%d severe and %d mild subjects: no test (t 0, p 1 everywhere); it "
                    "needs both groups and at least 4 subjects", severe.sum(), (~severe).sum())
    out = {}
    for key, y in maps.items():
        name = f"{key[0]}_{key[1]}"
        if testable:
            res = permutation_test(y, severe.astype(float), age, int(group_permutations),
                                   seed=map_seed(seed, name))
        else:
            v = y.shape[1]
            res = PermutationResult(t=np.zeros(v), p_fwe=np.ones(v), p_uncorrected=np.ones(v),
                                    max_t=np.zeros(0), n_permutations=0, exhaustive=False,
                                    df=max(len(severe) - 3, 0))
        means = {"mean-severe": _mean(y[severe]), "mean-mild": _mean(y[~severe]),
                 "mean-all": _mean(y)}
        zero = int((~np.any(y != 0, axis=1)).sum())
        log.info("%s: max |t| %.2f, FWE 0.05 at |t| >= %.2f, %d voxels significant", name,
                 float(np.abs(res.t).max(initial=0)), res.critical_t(ALPHA),
                 int((res.p_fwe < ALPHA).sum()))
        out[key] = (res, means, zero)
    return out


def _write(s, results: Mapping, outputs: Mapping, cerebrum, affine, subjects, inputs,
           volumes_of: Mapping) -> pd.DataFrame:
    """The images of every map (``outputs``: {(map, stat): path}) with their sidecars, and
    the cluster table of every volume."""
    grid = cerebrum.shape
    n_sev = int((subjects["label"] == 1).sum())
    base = dict(model=MODEL, exchangeability=EXCHANGEABILITY, covariates=["age"],
                groups={"severe": n_sev, "mild": int(len(subjects) - n_sev)},
                subjects=[f"sub-{a} ses-{b}" for a, b in zip(subjects["subject"],
                                                            subjects["session"])],
                cerebrum_voxels=int(cerebrum.sum()), alpha=ALPHA)
    clusters = []
    for m, names in volumes_of.items():
        per_stat = {k: [] for k in STATS}
        facts = {}
        for name in names:
            res, means, zero = results[(m, name)]
            values = dict(means, t=res.t, pfwe=res.p_fwe, p=res.p_uncorrected)
            for k in STATS:
                img = np.full(grid, 1.0 if k in ("pfwe", "p") else 0.0, dtype=np.float32)
                img[cerebrum] = values[k]
                per_stat[k].append(img)
            facts[name] = dict(n_permutations=res.n_permutations, exhaustive=res.exhaustive,
                               df=res.df, max_abs_t=float(np.abs(res.t).max(initial=0)),
                               critical_t_fwe=res.critical_t(ALPHA),
                               significant_voxels=int((res.p_fwe < ALPHA).sum()),
                               sessions_all_zero=zero, tested=res.n_permutations > 0)
            df = cluster_table(per_stat["t"][-1], per_stat["pfwe"][-1], affine, ALPHA)
            df.insert(0, "volume", name)
            df.insert(0, "map", m)
            clusters.append(df)
        for k in STATS:
            # one volume (a combined map, an input map): 3D; else one volume per contrast
            data = per_stat[k][0] if len(names) == 1 else np.stack(per_stat[k], -1)
            save_nifti(data, affine, outputs[(m, k)])
            s.sidecar(outputs[(m, k)], dict(base, map=m, statistic=k, volumes=list(names),
                                            per_volume=facts), inputs=inputs)
    return pd.concat(clusters, ignore_index=True)


def plot_t_maps(rows: Sequence, template_img, path, title: str) -> None:
    """Rows of ``(title, t image thresholded: 0 where not significant)`` over the template,
    one orthogonal view each, one symmetric colour scale (``nilearn.plotting.plot_stat_map``)."""
    from nilearn import plotting

    rows = [list(r) for r in rows]
    ncol = max(len(r) for r in rows)
    vmax = max([float(np.abs(np.asarray(img.dataobj)).max()) for r in rows
                for _, img in r] + [0.0]) or 1.0
    fig = new_figure(6.0 * ncol, 2.6 * len(rows) + 0.4)
    for r, row in enumerate(rows):
        for c, (panel_title, img) in enumerate(row):
            ax = fig.add_subplot(len(rows), ncol, r * ncol + c + 1)
            plotting.plot_stat_map(img, bg_img=template_img, axes=ax, figure=fig,
                                   title=panel_title, threshold=1e-6, display_mode="ortho",
                                   cut_coords=(0.0, -18.0, 18.0), cmap="cold_hot",
                                   vmax=vmax, symmetric_cbar=True, colorbar=True,
                                   black_bg=True, draw_cross=False, annotate=False)
    fig.suptitle(title)
    save_png(fig, path)


def _figure(results, rows: Sequence, cerebrum, affine, template, path, title):
    """``rows``: lists of ``(panel label, (map, volume))``; each map's t where its FWE p
    is below :data:`ALPHA`."""
    panels = []
    for row in rows:
        panels.append([])
        for label, key in row:
            res = results[key][0]
            img = np.zeros(cerebrum.shape, dtype=np.float32)
            img[cerebrum] = np.where(res.p_fwe < ALPHA, res.t, 0.0)
            panels[-1].append((f"{label}: {int((res.p_fwe < ALPHA).sum())} voxels",
                               nib.Nifti1Image(img, affine)))
    plot_t_maps(panels, templates.template_t1w(template), path, title)


def _save_clusters(table: pd.DataFrame, out, first: str) -> None:
    """The cluster table with the map's column named ``first`` (scenario, or contrast for
    the input maps, whose volume is the contrast)."""
    table = table.rename(columns={"map": first})
    if first == "scenario":
        table[first] = table[first].astype(int)
    else:
        table = table.drop(columns="volume")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


def run_group_relevance_stats(stacks: Sequence, predictions, participants, brain_mask,
                              cerebellum, template, chosen_path, outputs: Mapping, *,
                              clusters_out, figure_out, fig_scenarios: Sequence,
                              group_permutations: int, seed: int, log_file=None,
                              threads: int = 1) -> None:
    """Rule group_relevance_stats: severe against mild on every scenario's warped,
    normalised relevance (``stacks``: every analysed session's warp_relevance stack), one
    session per subject, age as covariate, over the template cerebrum (``brain_mask``
    without ``cerebellum``). ``outputs``: {(scenario, stat of :data:`STATS`): path}; the
    cluster table of every scenario and volume; the figure of the chosen scenario and of
    ``fig_scenarios`` over ``template`` (the MNI152 T1w file)."""
    scenarios = sorted({int(n) for n, _ in outputs})
    inputs = {"relnorm": list(stacks), "predictions": predictions,
              "participants": participants, "brain_mask": brain_mask,
              "cerebellum": cerebellum, "template": template, "chosen": chosen_path}
    with step("group_relevance_stats", inputs=inputs,
              params={"group_permutations": int(group_permutations), "seed": int(seed),
                      "scenarios": scenarios},
              outputs=[*outputs.values(), clusters_out, figure_out], log_file=log_file,
              threads=threads) as s:
        subjects = _subjects(participants, predictions)
        paths = _by_session(stacks, subjects, "warped relevance")
        cerebrum = grid = shape = None
        maps, volumes_of = {}, {}
        for i, path in enumerate(paths):
            arrays, affine, _ = load_stack(path, dtype=np.float32)
            first = arrays[min(arrays)]
            if cerebrum is None:
                shape, grid = first.shape[:3], affine
                cerebrum = _cerebrum(brain_mask, cerebellum, shape, grid)
            _check_grid(path, first, affine, shape, grid)
            for n in scenarios:
                if n not in arrays:
                    raise ValueError(f"{path}: no scenario {n} (it holds {sorted(arrays)})")
                names = volumes_of.setdefault(n, volume_names(arrays[n]))
                for v, name in enumerate(names):
                    vol = arrays[n][..., v] if arrays[n].ndim == 4 else arrays[n]
                    maps.setdefault((n, name), np.zeros((len(paths), int(cerebrum.sum())),
                                                        np.float32))[i] = vol[cerebrum]
        results = _test_maps(maps, subjects, group_permutations=group_permutations,
                             seed=seed)
        clusters = _write(s, results, outputs, cerebrum, grid, subjects, inputs, volumes_of)
        _save_clusters(clusters, clusters_out, "scenario")
        chosen = int(json.loads(Path(chosen_path).read_text())["scenario"])
        shown = [n for n in dict.fromkeys([chosen, *map(int, fig_scenarios)]) if n in scenarios]
        _figure(results, [[(f"scenario {n}{' (chosen)' if n == chosen else ''}, {name}",
                            (n, name)) for name in volumes_of[n]] for n in shown],
                cerebrum, grid, template, figure_out,
                f"Relevance, severe vs mild (t, FWE p < {ALPHA}; "
                f"{len(subjects)} subjects, age as covariate)")


def run_group_input_stats(maps: Sequence, predictions, participants, brain_mask, cerebellum,
                          template, outputs: Mapping, *, clusters_out, figure_out,
                          group_permutations: int, seed: int, log_file=None,
                          threads: int = 1) -> None:
    """Rule group_input_stats: severe against mild on the three network inputs carried
    to the voxel screen's MNI152 grid (``maps``: every analysed session's template_maps
    file), as :func:`run_group_relevance_stats` does on the relevance. ``outputs``:
    {(contrast, stat): path}."""
    inputs = {"maps": list(maps), "predictions": predictions, "participants": participants,
              "brain_mask": brain_mask, "cerebellum": cerebellum, "template": template}
    with step("group_input_stats", inputs=inputs,
              params={"group_permutations": int(group_permutations), "seed": int(seed)},
              outputs=[*outputs.values(), clusters_out, figure_out], log_file=log_file,
              threads=threads) as s:
        subjects = _subjects(participants, predictions)
        paths = _by_session(maps, subjects, "template maps")
        values, cerebrum, grid, shape = {}, None, None, None
        for i, path in enumerate(paths):
            img = nib.load(path)
            data = np.asarray(img.dataobj, dtype=np.float32)
            if cerebrum is None:
                shape, grid = data.shape[:3], img.affine
                cerebrum = _cerebrum(brain_mask, cerebellum, shape, grid)
            _check_grid(path, data, img.affine, shape, grid)
            if data.ndim != 4 or data.shape[3] != len(CONTRASTS):
                raise ValueError(f"{path}: expected one volume per contrast {CONTRASTS}, "
                                 f"got shape {data.shape}")
            for c, name in enumerate(CONTRASTS):
                values.setdefault((name, name), np.zeros((len(paths), int(cerebrum.sum())),
                                                         np.float32))[i] = data[..., c][cerebrum]
        results = _test_maps(values, subjects, group_permutations=group_permutations,
                             seed=seed)
        clusters = _write(s, results, outputs, cerebrum, grid, subjects, inputs,
                          {c: [c] for c in CONTRASTS})
        _save_clusters(clusters, clusters_out, "contrast")
        _figure(results, [[(c, (c, c)) for c in CONTRASTS]], cerebrum, grid, template,
                figure_out, f"Input maps, severe vs mild (t, FWE p < {ALPHA}; "
                f"{len(subjects)} subjects, age as covariate)")
