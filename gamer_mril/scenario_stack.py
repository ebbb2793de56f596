"""Every scenario of a session in one image: the file format of the relevance maps, the
quantile masks and the warped top-N masks (docs/method.md#8-decisions-the-paper-leaves-open).

One scenario's map or mask is a 3D image (a combined map) or one volume per contrast (an
individual map). A *scenario stack* puts the volumes of every requested scenario, in
ascending scenario order, one after the other along the fourth axis of one NIfTI image,
and says which volume is which in a *volume table*: a list of ``{"scenario": n,
"volume": name}`` (``name`` a contrast, or ``"combined"``), stored in the image itself as
a NIfTI-1 header extension (code 6, "comment": JSON text), so the file is read correctly
without its sidecar; the sidecar repeats the table for readers.

One file per session and kind instead of one per scenario keeps a session's files few
(planning time and inode quotas grow with them); a viewer shows scenario ``n`` as the
volumes the table names (FSLeyes and nilearn's ``index_img`` pick a volume).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from . import CONTRASTS

#: NIfTI-1 extension code of the volume table ("comment").
EXTENSION_CODE = 6
#: Key of the volume table in the extension's JSON text.
TABLE_KEY = "gamer_mril_volumes"


def volume_names(array, contrasts: Sequence[str] = CONTRASTS) -> list:
    """Names of one scenario's volumes: ``["combined"]`` for a 3D array, the first ``L``
    contrasts for a ``(D, H, W, L)`` array."""
    array = np.asarray(array)
    if array.ndim == 3:
        return ["combined"]
    if array.ndim == 4 and array.shape[3] <= len(contrasts):
        return list(contrasts[: array.shape[3]])
    raise ValueError(f"a scenario's map must be (D, H, W) or (D, H, W, L <= "
                     f"{len(contrasts)}), not {array.shape}")


def stack(arrays: Mapping, contrasts: Sequence[str] = CONTRASTS) -> tuple:
    """``(data (D, H, W, V), table)``: the scenarios' arrays of ``arrays`` ({scenario:
    (D, H, W) or (D, H, W, L)}) one after the other, ascending scenario numbers; the
    volumes of an individual map are named after ``contrasts`` (the model's)."""
    if not arrays:
        raise ValueError("no scenario to stack")
    volumes, table, shape = [], [], None
    for n in sorted(int(k) for k in arrays):
        a = np.asarray(arrays[n])
        names = volume_names(a, contrasts)
        if shape is None:
            shape = a.shape[:3]
        elif a.shape[:3] != shape:
            raise ValueError(f"scenario {n}: grid {a.shape[:3]} differs from {shape}")
        volumes.extend([a] if a.ndim == 3 else [a[..., v] for v in range(a.shape[3])])
        table.extend({"scenario": n, "volume": name} for name in names)
    return np.stack(volumes, axis=-1), table


def unstack(data, table: Sequence) -> dict:
    """Inverse of :func:`stack`: {scenario: (D, H, W) or (D, H, W, L)}."""
    data = np.asarray(data)
    if data.ndim != 4 or data.shape[3] != len(table):
        raise ValueError(f"{len(table)} volumes in the table but data of shape {data.shape}")
    out: dict = {}
    for n in dict.fromkeys(int(row["scenario"]) for row in table):
        idx = [i for i, row in enumerate(table) if int(row["scenario"]) == n]
        combined = [table[i]["volume"] for i in idx] == ["combined"]
        out[n] = data[..., idx[0]] if combined else data[..., idx]
    return out


def save_stack(arrays: Mapping, affine, path, contrasts: Sequence[str] = CONTRASTS) -> list:
    """Write the scenario stack of ``arrays`` atomically; returns its volume table
    (individual maps' volumes named after ``contrasts``).
    Boolean data is written as uint8, float64 as float32 (:func:`gamer_mril.io.save_nifti`)."""
    import nibabel as nib

    from .io import save_nifti

    data, table = stack(arrays, contrasts)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.extensions.append(nib.nifti1.Nifti1Extension(
        EXTENSION_CODE, json.dumps({TABLE_KEY: table}).encode()))
    save_nifti(data, affine, path, header=header)
    return table


def read_table(img, path=None) -> list:
    """The volume table of a loaded scenario stack (nibabel image); an image without one
    is an error naming ``path``."""
    for ext in img.header.extensions:
        if ext.get_code() != EXTENSION_CODE:
            continue
        try:
            doc = json.loads(ext.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and TABLE_KEY in doc:
            return [dict(scenario=int(r["scenario"]), volume=str(r["volume"]))
                    for r in doc[TABLE_KEY]]
    raise ValueError(f"{path or 'the image'}: not a scenario stack (no volume table in its "
                     f"header; files from before the stacked layout must be made again)")


def load_stack(path, dtype=None) -> tuple:
    """``({scenario: array}, affine, table)`` of the scenario stack at ``path``."""
    import nibabel as nib

    img = nib.load(str(path))
    table = read_table(img, path)
    data = np.asarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    try:
        return unstack(data, table), img.affine, table
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def scenario_volumes(path, scenario: int, dtype=None) -> tuple:
    """``(array, affine)``: one scenario of the stack at ``path`` ((D, H, W) combined or
    (D, H, W, L) individual); a scenario not in it is an error."""
    arrays, affine, table = load_stack(path, dtype)
    if int(scenario) not in arrays:
        raise ValueError(f"{path}: no scenario {int(scenario)} (it holds "
                         f"{sorted(arrays)})")
    return arrays[int(scenario)], affine
