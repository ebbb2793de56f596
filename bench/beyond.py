#!/usr/bin/env python
"""Cost of the scenarios beyond the paper (13-20) against the paper's twelve, at the quick
demo's grid (docs/method.md#68-beyond-the-paper-scenarios-13-to-20).

A randomly initialised network of the workflow's architecture (``build_model`` at
config.quick.yaml's ``crop_shape``, random BN statistics as ``bench/lrp.py`` sets them)
is saved as a fold model; a synthetic session (an ellipsoid "brain" of random values, 0
outside, 5.4 mm voxels as the quick cohort's) is written as the three network inputs and
a crop box. With the relevance settings of config.yaml + config.quick.yaml, for each
torch thread count it times, for the twelve scenarios and for all twenty:

* ``maps``: :func:`gamer_mril.lrp.scenario_maps` alone (channels-last, as the job runs it),
  and the new groups apart (SmoothGrad, the two gamma composites, IG from the smoothed
  reference);
* ``in-process``: :func:`gamer_mril.explain.explain_session` (load the model and the
  maps, compute, write both scenario stacks);
* ``job``: :func:`gamer_mril.explain.run_explain_session` in a fresh Python process, as
  the rule runs it (start-up, imports, sidecars included).

Times are medians of ``--repeats`` runs (one warm-up run first, in-process rows only).

Usage::

    python bench/beyond.py                      # threads 1 and 2, 3 repeats
    python bench/beyond.py --threads 1 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lrp import random_batchnorm  # bench/lrp.py

REPO = Path(__file__).resolve().parents[1]
VOXEL_MM = 5.4


def _settings():
    import yaml

    from gamer_mril.settings import RelevanceSettings

    def merged(base, over):
        out = dict(base)
        for k, v in over.items():
            out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out

    cfg = merged(yaml.safe_load((REPO / "config.yaml").read_text()),
                 yaml.safe_load((REPO / "config.quick.yaml").read_text()))
    return tuple(cfg["preprocessing"]["crop_shape"]), RelevanceSettings.from_config(cfg["relevance"])


def _session(root: Path, shape):
    """A fold model, three input maps and a crop box under ``root``."""
    import nibabel as nib
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from gamer_mril.network import build_model

    model = build_model(shape, seed=0)
    random_batchnorm(model, torch.Generator().manual_seed(1))
    fold = root / "models" / "fold-0"
    fold.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(fold / "model.safetensors"))
    (fold / "model.json").write_text(json.dumps(dict(config=model.config, epoch=1,
                                                     val_auc=0.5)))
    rng = np.random.default_rng(2)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid ** 2).sum(axis=0) < 0.8
    affine = np.diag([VOXEL_MM] * 3 + [1.0])
    maps = []
    for name in ("T1map", "MWFmap", "NDImap"):
        data = np.where(brain, rng.random(shape), 0.0).astype(np.float32)
        path = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        maps.append(path)
    full = tuple(n + 6 for n in shape)
    box = root / "box.json"
    box.write_text(json.dumps({"CropBox": {"start": [3, 3, 3], "shape": list(shape)},
                               "FullShape": list(full),
                               "FullAffine": np.diag([VOXEL_MM] * 3 + [1.0]).tolist()}))
    return model, maps, box, fold


def _median(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_JOB = """
import sys, json
from gamer_mril.explain import run_explain_session
a = json.loads(sys.argv[1])
run_explain_session(a["maps"], a["box"], {0: a["fold"]}, None, a["crop"], a["ndi"],
                    **a["kw"], age=45.0, subject="bench", session="1", threads=a["threads"])
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from gamer_mril import explain, lrp
    from gamer_mril.settings import ALL_SCENARIOS, PAPER_SCENARIOS

    shape, rel = _settings()
    kw = dict(ig_steps=rel.ig_steps, smoothgrad_samples=rel.smoothgrad_samples,
              smoothgrad_noise=rel.smoothgrad_noise, smoothgrad_seed=rel.smoothgrad_seed,
              gamma=rel.gamma, ig_reference_sigma_mm=rel.ig_reference_sigma_mm)
    print(f"grid {'x'.join(map(str, shape))} at {VOXEL_MM} mm; settings {kw}")
    sets = {"twelve": PAPER_SCENARIOS, "all": ALL_SCENARIOS}
    groups = {"SmoothGrad 13-14": (13, 14), "LRP gamma 15-16": (15, 16),
              "LRP gamma flat 17-18": (17, 18), "IG smoothed ref 19-20": (19, 20)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, maps, box, fold = _session(root, shape)
        for threads in args.threads:
            torch.set_num_threads(threads)
            net, images, affine, _ = explain.load_network_inputs(maps, fold, "cpu")
            x = torch.from_numpy(images).unsqueeze(0).contiguous(
                memory_format=torch.channels_last_3d)
            age = torch.tensor([45.0])
            sigma = explain.voxel_sigma(rel.ig_reference_sigma_mm, affine)
            opts = dict(ig_steps=rel.ig_steps, gamma=rel.gamma,
                        smoothgrad_samples=rel.smoothgrad_samples,
                        smoothgrad_noise=rel.smoothgrad_noise, smoothgrad_seed=1,
                        ig_reference_sigma=sigma)
            row = dict(threads=threads)
            for label, numbers in {**sets, **groups}.items():
                row[f"maps {label}"] = _median(
                    lambda n=numbers: lrp.scenario_maps(net, x, age, scenarios=n, **opts),
                    args.repeats)
            for label, numbers in sets.items():
                row[f"in-process {label}"] = _median(
                    lambda n=numbers: explain.explain_session(
                        maps, 45.0, fold, box, root / "c.nii.gz", root / "n.nii.gz", n,
                        **kw, subject="bench", session="1", device="cpu",
                        log=lambda *_: None), args.repeats)
            for label, numbers in sets.items():
                arg = json.dumps(dict(maps=[str(m) for m in maps], box=str(box),
                                      fold=str(fold), crop=str(root / "jc.nii.gz"),
                                      ndi=str(root / "jn.nii.gz"), threads=threads,
                                      kw=dict(kw, scenarios=list(numbers))))
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-c", _JOB, arg], check=True,
                                   capture_output=True, cwd=REPO,
                                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                        "OMP_NUM_THREADS": str(threads)})
                    times.append(time.perf_counter() - t0)
                row[f"job {label}"] = statistics.median(times)
            results.append(row)
            print(f"\ntorch threads {threads}")
            for key, value in row.items():
                if key != "threads":
                    print(f"  {key:32s} {value:7.3f} s")
            for what in ("maps", "in-process", "job"):
                print(f"  {what}: all / twelve = "
                      f"{row[f'{what} all'] / row[f'{what} twelve']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(dict(settings=kw, rows=results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
