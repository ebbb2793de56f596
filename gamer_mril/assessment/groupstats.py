"""Group statistics in MNI152 (docs/method.md#77-group-statistics-in-mni152): severe
against mild, voxel by voxel, on the warped relevance maps and on the warped input maps.

* :func:`normalise_relevance`: a map's positive part inside the session's cerebrum,
  divided by its sum there (sum 1; a map with no positive voxel stays zero);
* :func:`permutation_test`: the GLM ``y = b0 + b1 group + b2 age + e`` at every voxel, the
  t of ``b1`` (severe minus mild), Freedman-Lane permutations of the reduced model's
  residuals (intercept and age), two-sided; family-wise error by the maximum |t| over
  the voxels, the identity permutation counted; the uncorrected p as well;
* :func:`cluster_table`: the clusters (26-connectivity) of voxels with FWE p < alpha, one
  sign at a time, with size, peak and its AAL3 label;
* :func:`template_cerebrum`, :func:`one_session_per_subject`: the voxels and subjects the
  tests use.

The engine in brief. With ``Q`` an orthonormal basis of the reduced design ``Z = [1,
age]``, ``R = (I - QQ') Y`` its residuals (each voxel scaled to unit norm) and ``g`` the
group column made orthogonal to ``Z`` and to unit norm, a permutation ``pi`` of the
residuals (``Y* = QQ'Y + R[pi]``) gives, by Frisch-Waugh-Lovell, ``a = g'R[pi]``,
``c = Q'R[pi]`` and ``t^2 = df a^2 / (1 - |c|^2 - a^2)``, ``df = n - 3``: a few weighted
sums of residuals per permutation, i.e. one float32 matrix product per batch of
permutations. ``t^2`` grows with ``u = a^2 / (1 - |c|^2)``, so the permutations compare
``u`` and only the observed maps need ``t`` itself (in float64). Residuals of a model
with an intercept sum to zero, so the constant column of ``Q`` contributes nothing and is
dropped.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from itertools import permutations as all_orders

import numpy as np
import pandas as pd

#: Relative tolerance of the comparisons ``u_perm >= u_obs``: float32 rounding must not
#: turn a tie (a permutation that gives the observed statistic) into a smaller value.
TIE_RTOL = 1e-5
#: Permutations per matrix product, and voxels per block: a block's products (2 x 256 x
#: 2048 float32, 4 MB) stay in the cache for the element-wise steps that follow.
BATCH = 256
CHUNK = 2048
#: The two signs of the cluster table, by their contrast.
DIRECTIONS = (("severe > mild", 1.0), ("mild > severe", -1.0))
CLUSTER_COLUMNS = ["direction", "cluster", "voxels", "volume_mm3", "peak_t", "mean_t",
                   "x", "y", "z", "i", "j", "k", "aal3"]
#: How the permutations treat the sessions, for the sidecars.
EXCHANGEABILITY = ("one session per subject (each subject's first session in the analysed "
                   "table's order, its baseline); subjects exchangeable")


# ---------------------------------------------------------------------------- inputs
def normalise_relevance(volumes, cerebrum) -> tuple:
    """``(normalised, sums)``: each volume (V, D, H, W) of one session's map, its positive
    part inside ``cerebrum`` (bool (D, H, W)) divided by its sum there (so it sums to 1
    over the cerebrum); negative values and voxels outside the cerebrum count for nothing
    and are 0. A volume with no positive voxel in the cerebrum stays all zero; ``sums``
    (V,) are the positive sums before dividing (0 for such a volume)."""
    volumes = np.asarray(volumes, dtype=np.float32)       # float32 (sums in float64)
    cerebrum = np.asarray(cerebrum, dtype=bool)
    if volumes.ndim != 4 or volumes.shape[1:] != cerebrum.shape:
        raise ValueError(f"volumes (V, D, H, W) of shape {volumes.shape} do not fit a "
                         f"cerebrum mask of shape {cerebrum.shape}")
    positive = np.where(cerebrum[None], np.clip(volumes, 0.0, None), np.float32(0))
    sums = positive.reshape(len(positive), -1).sum(axis=1, dtype=np.float64)
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    positive *= scale.astype(np.float32)[:, None, None, None]
    return positive, sums


def template_cerebrum(brain_mask, cerebellum, shape, affine) -> np.ndarray:
    """The template's cerebrum on the grid ``shape``, ``affine``: the MNI152 brain mask
    (nibabel image) without the workflow's cerebellum mask (image), each resampled by
    nearest neighbour."""
    from ..templates import resample_labels_to

    brain = resample_labels_to(brain_mask, shape, affine) > 0
    return brain & ~(resample_labels_to(cerebellum, shape, affine) > 0)


def one_session_per_subject(table: pd.DataFrame, labels) -> pd.DataFrame:
    """Each subject's first session in the order of ``table`` (the analysed sessions:
    subject, session, age), with its ``label`` from ``labels`` ({(subject, session):
    0/1}); a session without a label is an error naming it."""
    first = table.drop_duplicates("subject", keep="first").reset_index(drop=True)
    missing = [f"sub-{s} ses-{t}" for s, t in zip(first["subject"], first["session"])
               if (s, t) not in labels]
    if missing:
        raise ValueError(f"no label in the predictions for {', '.join(missing)}")
    out = first[["subject", "session", "age"]].copy()
    out["age"] = out["age"].astype(float)
    out["label"] = [int(labels[(s, t)]) for s, t in zip(first["subject"], first["session"])]
    return out


def map_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed of one map's permutations: ``seed`` with the map's name (reproducible,
    different for every map)."""
    return np.random.SeedSequence([int(seed), zlib.crc32(str(name).encode())])


# ---------------------------------------------------------------------------- engine
def _designs(group, covariates, n: int):
    group = np.asarray(group, dtype=np.float64).reshape(-1)
    if group.shape != (n,):
        raise ValueError(f"{group.size} group labels for {n} subjects")
    if len(np.unique(group)) != 2:
        raise ValueError(f"the group column must hold two values, got {np.unique(group)}")
    cov = (np.zeros((n, 0)) if covariates is None
           else np.asarray(covariates, dtype=np.float64).reshape(n, -1))
    z = np.column_stack([np.ones(n), cov])
    x = np.column_stack([z, group])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise ValueError("the design (intercept, covariates, group) is rank deficient")
    df = n - x.shape[1]
    if df < 1:
        raise ValueError(f"{n} subjects leave no degree of freedom for {x.shape[1]} columns")
    q = np.linalg.qr(z)[0]
    g = group - q @ (q.T @ group)
    return q, g / np.linalg.norm(g), df


def glm_t(y, group, covariates=None) -> np.ndarray:
    """The t of the group coefficient of the GLM ``y = b0 + b1 group + covariates`` at
    every voxel (``y``: (n, v)), float64; 0 where the voxel's residuals of the reduced
    model are 0 (a constant voxel)."""
    y = np.asarray(y, dtype=np.float64)
    q, g, df = _designs(group, covariates, y.shape[0])
    r = y - q @ (q.T @ y)
    rr = (r * r).sum(axis=0)
    a = g @ r
    sse = np.clip(rr - a * a, 0.0, None)
    valid = rr > 1e-12 * (y * y).sum(axis=0)
    t = np.zeros(y.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t[valid] = a[valid] / np.sqrt(sse[valid] / df)
    return t


@dataclass
class PermutationResult:
    """``t``, ``p_fwe``, ``p_uncorrected``: per voxel; ``max_t``: the maximum |t| over the
    voxels of every permutation, the identity first; ``n_permutations``: how many (the
    identity included); ``exhaustive``: every ordering of the subjects was used."""
    t: np.ndarray
    p_fwe: np.ndarray
    p_uncorrected: np.ndarray
    max_t: np.ndarray
    n_permutations: int
    exhaustive: bool
    df: int

    def critical_t(self, alpha: float = 0.05) -> float:
        """The smallest |t| whose FWE p is below ``alpha``."""
        s = np.sort(self.max_t)
        k = int(math.floor(alpha * len(s)))          # permutations allowed at or above
        return float(s[len(s) - k]) if k >= 1 else float("inf")


def _orders(n: int, n_permutations: int, seed) -> tuple:
    """``(batches of permutations (B, n), total, exhaustive)``: every ordering when there
    are at most ``n_permutations + 1`` of them (identity first), else the identity and
    ``n_permutations`` drawn with the generator ``seed``."""
    if math.factorial(n) <= n_permutations + 1:
        every = np.array(list(all_orders(range(n))), dtype=np.intp)
        return [every[i:i + BATCH] for i in range(0, len(every), BATCH)], len(every), True
    rng = np.random.default_rng(seed)
    batches = [np.arange(n)[None]]
    for start in range(0, n_permutations, BATCH):
        b = min(BATCH, n_permutations - start)
        batches.append(rng.permuted(np.tile(np.arange(n), (b, 1)), axis=1))
    return batches, n_permutations + 1, False


def _chunk(weights, columns: int, r, threshold) -> tuple:
    """One block of voxels through every batch of permutations: ``(max u per
    permutation, permutations with u >= threshold per voxel)``. ``weights``: per batch of
    B permutations the ``columns`` x B rows (group, then each covariate) that weight the
    block's unit residuals ``r`` (n, voxels)."""
    exceed = np.zeros(r.shape[1], dtype=np.int64)
    maxima = []
    for w in weights:
        b = w.shape[0] // columns
        m = w @ r                                       # (columns B, voxels)
        u = m[:b]
        np.square(u, out=u)
        if columns > 1:
            c = m[b:].reshape(columns - 1, b, -1)
            np.square(c, out=c)
            np.divide(u, 1.0 - c.sum(axis=0), out=u)
        maxima.append(u.max(axis=1))
        exceed += (u >= threshold).sum(axis=0)
    return np.concatenate(maxima), exceed


def permutation_test(y, group, covariates=None, n_permutations: int = 5000,
                     seed=0, dtype=np.float32) -> PermutationResult:
    """Two-sided Freedman-Lane permutation test of the group coefficient at every voxel
    (``y``: (n subjects, v voxels); ``group``: (n,) 0/1, 1 severe; ``covariates``: (n,
    k) or None), the intercept always in the model. FWE p by the maximum |t| over the
    voxels; p = (permutations at least as extreme, identity included) / permutations.
    ``seed``: an int or :func:`map_seed`. With at most ``n_permutations + 1`` orderings of
    the subjects, all of them are used (exact p). Blocks of :data:`CHUNK` voxels go
    through the permutations one after the other; the products use the BLAS library's
    threads (Snakemake sets them to the rule's threads)."""
    y = np.asarray(y, dtype=np.float64)
    n, v = y.shape
    q, g, df = _designs(group, covariates, n)
    r = y - q @ (q.T @ y)
    rr = (r * r).sum(axis=0)
    valid = rr > 1e-12 * (y * y).sum(axis=0)
    r = r[:, valid] / np.sqrt(rr[valid])              # unit residuals per voxel
    a0 = g @ r
    u_obs = a0 * a0                                   # identity: Q'R = 0
    t = np.zeros(v)
    t[valid] = a0 / np.sqrt(np.clip(1.0 - u_obs, 1e-300, None) / df)
    # the constant column of Q gives 0 on residuals of a model with an intercept
    basis = np.column_stack([g, q[:, 1:]])            # (n, columns)
    batches, total, exhaustive = _orders(n, int(n_permutations), seed)
    # row pi of R[pi] weighted by w equals R weighted by w[argsort(pi)]
    weights = []
    for orders in batches:
        inverse = np.argsort(orders, axis=1)
        weights.append(np.concatenate([basis[inverse, j] for j in range(basis.shape[1])])
                       .astype(dtype))
    rf = np.asarray(r, dtype=dtype)
    threshold = (u_obs * (1 - TIE_RTOL)).astype(dtype)
    blocks = [slice(i, min(i + CHUNK, rf.shape[1])) for i in range(0, rf.shape[1], CHUNK)]

    done = [_chunk(weights, basis.shape[1], np.ascontiguousarray(rf[:, sl]), threshold[sl])
            for sl in blocks]
    max_u = (np.max([m for m, _ in done], axis=0).astype(np.float64) if done
             else np.zeros(total))
    if not exhaustive:
        max_u[0] = u_obs.max() if u_obs.size else 0.0   # the identity, in float64
    p_unc = np.ones(v)
    p_unc[valid] = (np.concatenate([e for _, e in done]) / total) if done else 1.0
    ranked = np.sort(max_u)
    p_fwe = np.ones(v)
    p_fwe[valid] = (total - np.searchsorted(ranked, u_obs * (1 - TIE_RTOL), side="left")) / total
    max_t = np.sqrt(df * np.clip(max_u, 0, None) / np.clip(1.0 - max_u, 1e-300, None))
    return PermutationResult(t=t, p_fwe=p_fwe, p_uncorrected=p_unc, max_t=max_t,
                             n_permutations=total, exhaustive=exhaustive, df=df)


# ---------------------------------------------------------------------------- clusters
def cluster_table(t, p_fwe, affine, alpha: float = 0.05) -> pd.DataFrame:
    """Clusters (26-connectivity) of the voxels with ``p_fwe < alpha``, severe > mild
    (t > 0) and mild > severe (t < 0) apart, largest first: size in voxels and mm3, the
    peak (largest |t|; ties: first in C order) with its t, MNI x, y, z (mm, through
    ``affine``), voxel i, j, k and AAL3 label, and the mean t. Columns
    :data:`CLUSTER_COLUMNS`; no row when nothing is significant."""
    from scipy import ndimage

    from .heatmaps import aal3_regions

    t = np.asarray(t, dtype=np.float64)
    p_fwe = np.asarray(p_fwe, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if t.shape != p_fwe.shape or t.ndim != 3:
        raise ValueError(f"t {t.shape} and p {p_fwe.shape} must be one 3D grid")
    voxel_mm3 = float(f"{abs(np.linalg.det(affine[:3, :3])):.9g}")   # 4 mm: 64, not 63.99...
    rows = []
    for direction, sign in DIRECTIONS:
        labels, n = ndimage.label((p_fwe < alpha) & (sign * t > 0),
                                  structure=np.ones((3, 3, 3)))
        found = []
        for c in range(1, n + 1):
            ijk = np.argwhere(labels == c)                # C order
            values = t[tuple(ijk.T)]
            peak = ijk[int(np.argmax(np.abs(values)))]
            found.append((len(ijk), peak, float(t[tuple(peak)]), float(values.mean())))
        found.sort(key=lambda f: (-f[0], tuple(f[1])))
        for k, (size, peak, peak_t, mean_t) in enumerate(found, start=1):
            xyz = (affine @ np.array([*peak, 1.0]))[:3]
            rows.append(dict(direction=direction, cluster=k, voxels=size,
                             volume_mm3=size * voxel_mm3, peak_t=peak_t, mean_t=mean_t,
                             x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]),
                             i=int(peak[0]), j=int(peak[1]), k=int(peak[2])))
    out = pd.DataFrame(rows, columns=CLUSTER_COLUMNS)
    if len(out):
        out["aal3"] = aal3_regions(out[["x", "y", "z"]].to_numpy())
    return out
