"""Compare two finished workflow runs file by file: are their results the same?

    python bench/compare_runs.py RESULTS_A RESULTS_B [--list]

Walks both results folders (logs/ and benchmarks/ left out) and compares every file the
workflow wrote by what it holds:

* images (``.nii.gz``, ``.nii``): shape and affine equal, and the largest absolute
  difference of the voxel values (gzip headers carry a time stamp, so bytes are not
  compared);
* tables (``.tsv``, ``.csv``) and other text (``.svg``, ``.html``, ``.txt``, ``.yaml``):
  the same text; for tables that differ, the largest numeric difference cell by cell;
* sidecars (``x.json`` beside ``x.<ext>``): their ``Parameters`` and ``Facts`` blocks
  (the rest is provenance: dates, hashes, the commit);
* other JSON: the same content once the provenance keys are dropped;
* everything else (``.mat``, ``.h5``, ``.npy``, ``.png``, ``.safetensors``, ...): the same
  bytes; arrays (``.npy``) by value when the bytes differ.

Prints a line per kind of file (compared, identical, different), the largest image
difference, and each file that differs (``--list``: every file compared). Exits 1 when a
file differs or is missing on one side. Used to show that a refactor changed no result.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SKIP_DIRS = {"logs", "benchmarks", ".snakemake"}
PROVENANCE = {"GeneratedBy", "Created", "Inputs", "Output", "Software", "Provenance"}
TEXT = {".tsv", ".csv", ".svg", ".html", ".txt", ".yaml", ".md"}


def kind(path: Path) -> str:
    name = path.name
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        return "image"
    if path.suffix == ".json":
        stem = name[: -len(".json")]
        siblings = [p for p in path.parent.glob(stem + ".*") if p != path]
        return "sidecar" if siblings else "json"
    if path.suffix in {".tsv", ".csv"}:
        return "table"
    if path.suffix in TEXT:
        return "text"
    return path.suffix.lstrip(".") or "other"


def files(root: Path) -> set:
    out = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not (set(rel.parts[:-1]) & SKIP_DIRS) and not rel.parts[0] in SKIP_DIRS:
            out.add(rel)
    return out


def compare_image(a: Path, b: Path):
    ia, ib = nib.load(str(a)), nib.load(str(b))
    if ia.shape != ib.shape:
        return False, f"shape {ia.shape} vs {ib.shape}", None
    if not np.allclose(ia.affine, ib.affine, rtol=0, atol=0):
        return False, "affine differs", None
    da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
    if da.dtype != db.dtype:
        return False, f"dtype {da.dtype} vs {db.dtype}", None
    diff = float(np.max(np.abs(da.astype(np.float64) - db.astype(np.float64)))) if da.size else 0.0
    return diff == 0.0, (f"max |diff| {diff:.3g}" if diff else ""), diff


def compare_table(a: Path, b: Path):
    ta, tb = a.read_text(), b.read_text()
    if ta == tb:
        return True, ""
    try:
        sep = "\t" if a.suffix == ".tsv" else ","
        fa, fb = (pd.read_csv(io.StringIO(t), sep=sep) for t in (ta, tb))
    except Exception:                                            # noqa: BLE001
        return False, "text differs"
    if list(fa.columns) != list(fb.columns) or fa.shape != fb.shape:
        return False, f"columns or shape differ ({fa.shape} vs {fb.shape})"
    num = fa.select_dtypes("number").columns
    worst = 0.0
    for c in num:
        if c in fb and pd.api.types.is_numeric_dtype(fb[c]):
            d = np.nanmax(np.abs(fa[c].to_numpy(float) - fb[c].to_numpy(float)), initial=0.0)
            worst = max(worst, float(d))
    other = [c for c in fa.columns if c not in num and not fa[c].equals(fb[c])]
    return False, f"max numeric diff {worst:.3g}" + (f"; columns differ: {other}" if other else "")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in PROVENANCE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def compare_json(a: Path, b: Path, sidecar: bool):
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    if sidecar:
        ja = {k: ja.get(k) for k in ("Parameters", "Facts")}
        jb = {k: jb.get(k) for k in ("Parameters", "Facts")}
    else:
        ja, jb = _strip(ja), _strip(jb)
    if ja == jb:
        return True, ""
    keys = sorted(set(_flat(ja).items()) ^ set(_flat(jb).items()))
    return False, "differs at " + ", ".join(sorted({k for k, _ in keys})[:6])


def _flat(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(obj, sort_keys=True)}


def compare_bytes(a: Path, b: Path):
    if a.read_bytes() == b.read_bytes():
        return True, ""
    if a.suffix == ".npy":
        xa, xb = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
        if xa.shape == xb.shape and np.array_equal(xa, xb):
            return True, ""
        return False, "array differs"
    return False, "bytes differ"


def compare(root_a: Path, root_b: Path, listing: bool = False, out=sys.stdout) -> int:
    fa, fb = files(root_a), files(root_b)
    only_a, only_b = sorted(fa - fb), sorted(fb - fa)
    stats = defaultdict(lambda: [0, 0])
    worst_image, worst_path, differing = 0.0, None, []
    for rel in sorted(fa & fb):
        a, b = root_a / rel, root_b / rel
        k = kind(a)
        if k == "image":
            same, why, diff = compare_image(a, b)
            if diff is not None and diff > worst_image:
                worst_image, worst_path = diff, rel
        elif k == "table":
            same, why = compare_table(a, b)
        elif k in ("sidecar", "json"):
            same, why = compare_json(a, b, sidecar=k == "sidecar")
        elif k == "text":
            same, why = (a.read_text() == b.read_text()), "text differs"
        else:
            same, why = compare_bytes(a, b)
        stats[k][0] += 1
        stats[k][1] += int(same)
        if not same:
            differing.append((rel, why))
        if listing:
            print(f"{'same' if same else 'DIFF'}\t{rel}", file=out)
    print(f"{'kind':<10} {'compared':>9} {'identical':>10} {'different':>10}", file=out)
    for k in sorted(stats):
        n, same = stats[k]
        print(f"{k:<10} {n:>9} {same:>10} {n - same:>10}", file=out)
    total = sum(n for n, _ in stats.values())
    print(f"{total} files compared; only in {root_a}: {len(only_a)}; only in {root_b}: "
          f"{len(only_b)}", file=out)
    print(f"largest image difference: {worst_image:.3g}" + (f" ({worst_path})" if worst_path else ""),
          file=out)
    for rel in only_a[:20]:
        print(f"only in A: {rel}", file=out)
    for rel in only_b[:20]:
        print(f"only in B: {rel}", file=out)
    for rel, why in differing:
        print(f"different: {rel}: {why}", file=out)
    return int(bool(differing or only_a or only_b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--list", action="store_true", help="print every file compared")
    args = ap.parse_args(argv)
    return compare(args.a, args.b, args.list)


if __name__ == "__main__":
    sys.exit(main())
