#!/usr/bin/env python
"""Benchmark of the training pieces: network speed, augmentation, cache loader, memory.

For each input shape and device it reports

* ``fwd s/sample``: forward pass in eval mode without gradients (prediction);
* ``fwd+bwd s/sample``: forward and backward in train mode (a training step minus the
  optimizer update);
* ``train <precision> /s``: training samples per second, a whole step (forward and loss
  under the precision's autocast, backward, AdamW update), for each ``--precisions``
  (fp32, and bf16 = bfloat16 autocast, the ``training.precision`` setting);
* ``aug s/sample``: :func:`gamer_mril.training.augment` with the default settings;
* ``loader samples/s``: :meth:`SessionCache.batch` of random training batches from a
  float16 cache on disk, up to float32 tensors on the device (first pass right after the
  cache was written, so from the page cache, not from a cold disk; the second pass is
  the steady state of later epochs); ``read f16 /s`` is the host-side read alone
  (float16 rows, no conversion), the part a GPU run pays on the CPU;
* ``peak MiB``: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the maximum
  resident set size of the process (``resource.getrusage``), which includes Python, torch
  and the cache pages touched. Each (device, shape) runs in its own child process so the
  CPU figure belongs to that case alone.

Usage::

    python bench/train.py                                  # (48,48,56) and (96,96,112)
    python bench/train.py --shapes 96,96,112 --devices cuda --batch 16 --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from timing import sync, timeit  # bench/timing.py


def _write_cache(path: Path, n: int, shape, seed=0):
    """A synthetic cache of the layout build_cache writes (random float16 in [0, 1])."""
    import pandas as pd
    from numpy.lib.format import open_memmap

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = open_memmap(path / "images.npy", mode="w+", dtype=np.float16,
                         shape=(n, 3) + tuple(shape))
    for i in range(n):
        images[i] = rng.random((3,) + tuple(shape), dtype=np.float32).astype(np.float16)
    images.flush()
    del images
    edss = rng.choice(np.arange(0, 10.5, 0.5), n)
    pd.DataFrame({"row": np.arange(n), "subject": [f"sub-{i:03d}" for i in range(n)],
                  "session": "ses-01", "age": rng.uniform(20, 70, n), "edss": edss,
                  "label": (edss >= 5).astype(int)}).to_csv(path / "index.tsv", sep="\t",
                                                            index=False)


def run_case(device_name: str, shape, batch: int, repeats: int, cache_samples: int,
             loader_batch: int, threads: int | None, precisions=("fp32",)) -> dict:
    import torch

    from gamer_mril.network import build_model, count_parameters
    from gamer_mril.training import autocast, augment, open_cache, resolve_device

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    model = build_model(shape, seed=0).to(device)
    x = torch.rand((batch, 3) + tuple(shape), device=device)
    age = torch.full((batch,), 45.0, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x, age)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        model(x, age).sum().backward()

    gen = torch.Generator(device=device).manual_seed(0)
    out = dict(device=str(device), shape="x".join(map(str, shape)), batch=batch,
               parameters=count_parameters(model),
               threads=torch.get_num_threads() if device.type == "cpu" else None)
    out["fwd_s_per_sample"] = timeit(forward, device, repeats) / batch
    out["fwd_bwd_s_per_sample"] = timeit(forward_backward, device, repeats) / batch
    for precision in precisions:
        trained = build_model(shape, seed=0).to(device).train()
        opt = torch.optim.AdamW(trained.parameters(), lr=1e-4)
        target = torch.zeros(batch, device=device)

        def step(trained=trained, opt=opt, precision=precision):
            with autocast(device, precision):
                logit = trained(x, age)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()                                               # warm-up (optimizer state)
        out[f"train_{precision}_samples_per_s"] = batch / timeit(step, device, repeats)
        del trained, opt
    out["aug_s_per_sample"] = timeit(lambda: augment(x, gen), device, repeats) / batch
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    del x

    with tempfile.TemporaryDirectory(prefix="gamer-bench-") as tmp:
        _write_cache(Path(tmp), cache_samples, shape)
        cache = open_cache(tmp)
        rng = np.random.default_rng(1)
        for pass_name in ("loader_first_pass", "loader_second_pass"):
            order = rng.permutation(cache_samples)
            sync(device)
            t0 = time.perf_counter()
            for i in range(0, cache_samples, loader_batch):
                xb, *_ = cache.batch(order[i:i + loader_batch], device)
            sync(device)
            out[f"{pass_name}_samples_per_s"] = cache_samples / (time.perf_counter() - t0)
        order = rng.permutation(cache_samples)       # the host read alone (float16)
        t0 = time.perf_counter()
        for i in range(0, cache_samples, loader_batch):
            cache.read(order[i:i + loader_batch])
        out["read_samples_per_s"] = cache_samples / (time.perf_counter() - t0)
        del cache, xb
    if device.type == "cpu":
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["48,48,56", "96,96,112"],
                    help="input matrices D,H,W (default: 48,48,56 96,96,112)")
    ap.add_argument("--devices", nargs="+", default=None,
                    help="cpu and/or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size of the network timings (default 4 on cpu, 16 on cuda)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions (median)")
    ap.add_argument("--cache-samples", type=int, default=140,
                    help="sessions in the synthetic cache of the loader test")
    ap.add_argument("--loader-batch", type=int, default=70, help="loader batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="precisions of the training-step timing (default fp32)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._case:                       # child process: one (device, shape) case
        device, shape = args._case.split(":")
        shape = tuple(int(v) for v in shape.split(","))
        batch = args.batch or (16 if device.startswith("cuda") else 4)
        print(json.dumps(run_case(device, shape, batch, args.repeats, args.cache_samples,
                                  args.loader_batch, args.threads, args.precisions)))
        return 0

    devices = args.devices
    if devices is None:
        import torch
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for shape in args.shapes:
            cmd = [sys.executable, __file__, "--_case", f"{device}:{shape}",
                   "--repeats", str(args.repeats), "--cache-samples", str(args.cache_samples),
                   "--loader-batch", str(args.loader_batch), "--precisions", *args.precisions]
            if args.batch:
                cmd += ["--batch", str(args.batch)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if res.returncode != 0:
                print(f"{device} {shape}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))

    header = ["device", "shape", "batch", "threads", "fwd s/sample", "fwd+bwd s/sample",
              *(f"train {p} /s" for p in args.precisions),
              "aug s/sample", "loader 1st /s", "loader 2nd /s", "read f16 /s", "peak MiB"]
    table = [[r["device"], r["shape"], str(r["batch"]), str(r["threads"] or "-"),
              f"{r['fwd_s_per_sample']:.4f}", f"{r['fwd_bwd_s_per_sample']:.4f}",
              *(f"{r[f'train_{p}_samples_per_s']:.1f}" for p in args.precisions),
              f"{r['aug_s_per_sample']:.4f}", f"{r['loader_first_pass_samples_per_s']:.0f}",
              f"{r['loader_second_pass_samples_per_s']:.0f}",
              f"{r['read_samples_per_s']:.0f}", f"{r['peak_mib']:.0f}"]
             for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for t in table:
        print("  ".join(v.rjust(w) for v, w in zip(t, widths)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if len(rows) == len(devices) * len(args.shapes) else 1


if __name__ == "__main__":
    sys.exit(main())
