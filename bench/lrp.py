#!/usr/bin/env python
"""Benchmark of the relevance engine: the twelve scenarios of Table I against the network.

For one input shape, batch size and device it reports

* ``fwd+bwd``: one forward and backward pass of the network in train mode (a training
  step minus the optimizer update, as ``bench/train.py`` measures it; BN momentum set
  to 0 so the statistics stay put; eval mode where train-mode BN cannot run, i.e. a
  batch of 1 with a 1 x 1 x 1 feature map); the reference;
* ``fwd``: the forward pass in eval mode without gradients, for orientation;
* for each scenario, :func:`gamer_mril.lrp.scenario_maps` asked for that scenario alone
  (so it pays its own canonization and forward pass): seconds per session and the ratio
  to ``fwd+bwd`` measured in the same run. The goal is a ratio of at most 1.5 for every
  LRP scenario (1-8) and about ``ig_steps`` for integrated gradients (10, 12); the
  ``/step`` column gives the IG ratio per path point;
* ``all``: the twelve scenarios in one call (shared forward pass and batched walks);
* ``peak MiB``: ``torch.cuda.max_memory_allocated`` on a GPU (per row); on the CPU the
  maximum resident set size of the process at the end (``resource.getrusage``).

Times are medians over ``--repeats`` runs after one warm-up run. The model has the
default initialisation with random BN statistics (timing does not depend on weights).

Usage::

    python bench/lrp.py                                   # 48 x 48 x 56, batch 1
    python bench/lrp.py --large --device cuda --batch 4   # 96 x 96 x 112
    python bench/lrp.py --shape 32 32 40 --scenarios 1 5 --json lrp.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

from timing import timeit  # bench/timing.py


def _resolve_device(name):
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    return torch.device(name)


def random_batchnorm(model, gen) -> None:
    """Non-trivial BatchNorm statistics drawn from ``gen``, 30% of the gammas negative
    (an untrained network's are 1 and 0, which no trained one has)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm3d):
                c = mod.num_features
                sign = torch.where(torch.rand(c, generator=gen) < 0.3, -1.0, 1.0)
                mod.weight.copy_(sign * (0.5 + torch.rand(c, generator=gen)))
                mod.bias.copy_(0.1 * torch.randn(c, generator=gen))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def run(shape, batch, repeats, device_name, ig_steps, scenarios, dtype_name, threads,
        ig_repeats, ig_reference_sigma=2.0):
    import torch
    from torch import nn

    from gamer_mril import lrp
    from gamer_mril.network import build_model

    if threads:
        torch.set_num_threads(threads)
    device = _resolve_device(device_name)
    dtype = getattr(torch, dtype_name)
    model = build_model(shape, seed=0).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    random_batchnorm(model, gen)
    x = torch.rand((batch, len(model.contrasts)) + tuple(shape), generator=gen)
    x = x.to(device=device, dtype=dtype)
    age = torch.full((batch,), 45.0, device=device, dtype=dtype)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x, age)

    for mod in model.modules():           # train-mode passes leave the statistics alone
        if isinstance(mod, nn.BatchNorm3d):
            mod.momentum = 0.0
    reference_mode = "train"

    def forward_backward():
        model.train(reference_mode == "train")
        model.zero_grad(set_to_none=True)
        model(x, age).sum().backward()
        model.eval()

    fwd = timeit(forward, device, repeats)
    try:
        fwd_bwd = timeit(forward_backward, device, repeats)
    except ValueError:       # train-mode BN needs > 1 value per channel (tiny input, batch 1)
        reference_mode = "eval"
        fwd_bwd = timeit(forward_backward, device, repeats)
    model.zero_grad(set_to_none=True)
    model.eval()

    rows = []

    def measure(label, name, numbers, reps, steps=None):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = timeit(lambda: lrp.scenario_maps(model, x, age, scenarios=numbers,
                                              ig_steps=ig_steps,
                                              ig_reference_sigma=ig_reference_sigma),
                   device, reps)
        row = dict(scenario=label, name=name, s_per_session=t / batch,
                   ratio=t / fwd_bwd, ratio_per_step=(t / fwd_bwd / steps) if steps else None)
        if device.type == "cuda":
            row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        rows.append(row)
        print(f"  scenario {label}: {t / batch:.4f} s/session", file=sys.stderr, flush=True)

    for n in scenarios:
        sc = lrp.SCENARIOS[n]
        is_ig = sc.method == "ig"
        slow = is_ig or sc.method == "smoothgrad"
        measure(str(n), sc.name, [n], ig_repeats if slow else repeats,
                steps=ig_steps if is_ig else None)
    if sorted(scenarios) == list(range(1, 13)):
        measure("all", "scenarios 1-12 in one call", list(range(1, 13)), ig_repeats)

    out = dict(device=str(device), shape="x".join(map(str, shape)), batch=batch,
               dtype=dtype_name, ig_steps=ig_steps,
               threads=torch.get_num_threads() if device.type == "cpu" else None,
               fwd_s_per_session=fwd / batch, fwd_bwd_s_per_session=fwd_bwd / batch,
               fwd_bwd_mode=reference_mode,
               rows=rows)
    if device.type == "cpu":
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", nargs=3, type=int, default=[48, 48, 56],
                    metavar=("D", "H", "W"), help="input matrix (default 48 48 56)")
    ap.add_argument("--large", action="store_true",
                    help="use the full 96 x 96 x 112 matrix (overrides --shape)")
    ap.add_argument("--batch", type=int, default=1, help="sessions per call (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (median)")
    ap.add_argument("--ig-repeats", type=int, default=1,
                    help="timed repetitions of the integrated-gradients rows (default 1)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients steps")
    ap.add_argument("--scenarios", nargs="+", type=int, default=list(range(1, 13)),
                    help="scenario numbers (default 1..12; 13-20 beyond the paper: "
                         "bench/beyond.py compares them with the twelve)")
    ap.add_argument("--ig-reference-sigma", type=float, default=2.0,
                    help="voxels, the smoothed reference of scenarios 19, 20 (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)

    shape = (96, 96, 112) if args.large else tuple(args.shape)
    res = run(shape, args.batch, args.repeats, args.device, args.ig_steps, args.scenarios,
              args.dtype, args.threads, args.ig_repeats, args.ig_reference_sigma)

    print(f"device {res['device']}, shape {res['shape']}, batch {res['batch']}, "
          f"{res['dtype']}, threads {res['threads'] or '-'}, IG steps {res['ig_steps']}")
    print(f"fwd (eval, no grad) {res['fwd_s_per_session']:.4f} s/session; "
          f"fwd+bwd ({res['fwd_bwd_mode']} mode) {res['fwd_bwd_s_per_session']:.4f} "
          f"s/session (reference)")
    header = ["scenario", "name", "s/session", "x fwd+bwd", "/step"]
    if any("peak_mib" in r for r in res["rows"]):
        header.append("peak MiB")
    table = []
    for r in res["rows"]:
        line = [r["scenario"], r["name"], f"{r['s_per_session']:.4f}", f"{r['ratio']:.2f}",
                f"{r['ratio_per_step']:.2f}" if r["ratio_per_step"] is not None else "-"]
        if "peak_mib" in r:
            line.append(f"{r['peak_mib']:.0f}")
        table.append(line)
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) if i == 1 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths))))
    for t in table:
        print("  ".join(v.ljust(w) if i == 1 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(t, widths))))
    if "peak_mib" in res:
        print(f"peak RSS {res['peak_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
