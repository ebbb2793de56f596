#!/usr/bin/env python
"""How long do the voxelwise group tests in MNI152 take (docs/method.md#77-group-statistics-in-mni152)?

Builds the template cerebrum on the voxel screen's grid (``--voxel-mm``, 4 mm: the MNI152
brain mask without the cerebellum; the workflow's own cerebellum mask when ``--results``
names a run that made it, else the package's at 2 mm), draws random data of
``--subjects`` x that many voxels with a random group (40% severe) and age, and times
:func:`gamer_mril.assessment.groupstats.permutation_test` with ``--permutations`` on
``--threads`` BLAS threads (set before numpy loads, as Snakemake sets them for a rule's
threads): seconds per map (the median of ``--repeats``) and for
``--maps`` maps (the demo's 20 scenarios, 16 of them with one map per contrast, are 52,
and the three input maps: 55). With ``--tfce N`` it also times N permutations of
nilearn's ``permuted_ols(tfce=True)`` on the same data (one map), the per-permutation
cost that rules TFCE out as the default.

    python bench/groupstats.py [--subjects 72] [--permutations 5000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _threads(argv) -> str:
    """``--threads`` of the command line, read before numpy loads its BLAS library."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "2"


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads(sys.argv)

import numpy as np  # noqa: E402

from gamer_mril import templates  # noqa: E402
from gamer_mril.assessment.groupstats import map_seed, permutation_test, template_cerebrum  # noqa: E402
from gamer_mril.baselines import screen_grid  # noqa: E402


def cerebrum(voxel_mm: float, results: Path | None):
    import nibabel as nib

    shape, affine = screen_grid(voxel_mm)
    found = sorted((results / "templates").glob("tpl-*_desc-cerebellum_mask.nii.gz")) \
        if results else []
    cereb = nib.load(str(found[0])) if found else templates.cerebellum_mask(2)
    return template_cerebrum(templates.template_brain_mask(2), cereb, shape, affine), \
        affine, ("the run's" if found else "the package's 2 mm")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=72)
    ap.add_argument("--permutations", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--voxel-mm", type=float, default=4.0)
    ap.add_argument("--maps", type=int, default=55)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tfce", type=int, default=0, help="permutations of nilearn's TFCE")
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args(argv)

    mask, affine, source = cerebrum(args.voxel_mm, args.results)
    v, n = int(mask.sum()), args.subjects
    rng = np.random.default_rng(0)
    group = (rng.random(n) < 0.4).astype(float)
    age = rng.normal(45, 10, n)[:, None]
    y = rng.normal(size=(n, v)).astype(np.float32)
    print(f"template cerebrum on the {args.voxel_mm:g} mm grid {mask.shape}: {v} voxels "
          f"(cerebellum: {source}); {n} subjects, {int(group.sum())} severe")
    times = []
    for r in range(args.repeats):
        start = time.perf_counter()
        permutation_test(y, group, age, args.permutations, seed=map_seed(0, f"bench{r}"))
        times.append(time.perf_counter() - start)
    per_map = float(np.median(times))
    print(f"{args.permutations} permutations, {args.threads} threads: {per_map:.2f} s per "
          f"map (runs: {', '.join(f'{t:.2f}' for t in times)}); {args.maps} maps: "
          f"{per_map * args.maps:.0f} s")
    if args.tfce:
        import nibabel as nib
        from nilearn.maskers import NiftiMasker
        from nilearn.mass_univariate import permuted_ols

        masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.uint8), affine)).fit()
        start = time.perf_counter()
        permuted_ols(group[:, None], y.astype(np.float64), confounding_vars=age,
                     model_intercept=True, n_perm=args.tfce, two_sided_test=True,
                     tfce=True, masker=masker, n_jobs=args.threads, verbose=0,
                     random_state=0)
        took = time.perf_counter() - start
        print(f"nilearn permuted_ols with TFCE, {args.tfce} permutations: {took:.1f} s, "
              f"{took / args.tfce:.2f} s per permutation; {args.permutations} permutations "
              f"of {args.maps} maps: {took / args.tfce * args.permutations * args.maps / 3600:.1f} h")


if __name__ == "__main__":
    main()
