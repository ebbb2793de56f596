"""Provenance of the output dataset: dataset_description.json and the QC table.

Per-file sidecars are written by :func:`gamer_mril.io.write_sidecar`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .io import atomic_write_json, atomic_write_text, code_version, package_versions

CODE_URL = "https://github.com/gamer-mril/gamer-mril"

#: Facts gathered into the QC table: (rule, fact) -> column (``{suffix}`` per map).
QC_FACTS = {
    ("make_brain_mask", "BrainVolume_ml"): "brain_ml",
    ("scale_map", "NonFiniteVoxels"): "nonfinite_{suffix}",
    ("scale_map", "ClippedAbove"): "clipped_{suffix}",
    ("remove_cerebellum", "CerebellumVolume_ml"): "cerebellum_ml",
    ("warp_brain_mask_to_template", "DiceWithTemplateBrainMask"): "dice_template_brain",
}


def write_dataset_description(path, config: dict) -> None:
    """BIDS-derivative description of the outputs, with the resolved configuration."""
    atomic_write_json(path, {
        "Name": "gamer-mril derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "gamer-mril",
            "Version": __version__,
            "CodeURL": CODE_URL,
            "CodeVersion": code_version(),
        }],
        "Software": package_versions(),
        "Configuration": config,
    })


_NAME = re.compile(r"sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)_.*?(?P<suffix>[A-Za-z0-9]+)\.json$")


def qc_table(sidecars, out_tsv) -> pd.DataFrame:
    """One row per session with the QC facts found in the given sidecars."""
    rows: dict = {}
    for path in sidecars:
        m = _NAME.search(Path(path).name)
        if not m:
            continue
        doc = json.loads(Path(path).read_text())
        rule = doc.get("GeneratedBy", {}).get("Rule")
        facts = doc.get("Facts", {})
        row = rows.setdefault((m["subject"], m["session"]),
                              {"subject": m["subject"], "session": m["session"]})
        for (r, fact), column in QC_FACTS.items():
            if r == rule and fact in facts:
                row[column.format(suffix=m["suffix"])] = facts[fact]
    table = pd.DataFrame(sorted(rows.values(), key=lambda r: (r["subject"], r["session"])))
    table = qc_flags(table)
    atomic_write_text(out_tsv, table.to_csv(sep="\t", index=False))
    return table


#: A session whose warped brain mask overlaps the template's less than this (Dice) is
#: flagged: its registration to MNI152 (or its brain mask) is suspect.
MIN_DICE = 0.9
#: Volumes (columns) flagged when outside the cohort median +- MAD_LIMIT robust standard
#: deviations (the median absolute deviation scaled by 1.4826, the sd of a normal).
VOLUME_COLUMNS = ("brain_ml", "cerebellum_ml")
MAD_LIMIT = 3.0


def qc_flags(table: pd.DataFrame, min_dice: float = MIN_DICE,
             mad_limit: float = MAD_LIMIT) -> pd.DataFrame:
    """The QC table with ``qc_flag`` (bool) and ``qc_reasons`` (why, ``;``-separated).

    A session is flagged when its Dice with the template brain mask is below
    ``min_dice``, or a volume lies outside the cohort's median +- ``mad_limit`` robust
    standard deviations (needs at least 5 sessions with that volume; a cohort with no
    spread flags nothing).
    """
    from scipy.stats import median_abs_deviation

    reasons = [[] for _ in range(len(table))]
    if "dice_template_brain" in table:
        for i, d in enumerate(table["dice_template_brain"].to_numpy(float)):
            if d < min_dice:
                reasons[i].append(f"Dice with the template brain mask {d:.3f} < {min_dice}")
    for column in VOLUME_COLUMNS:
        if column not in table:
            continue
        values = table[column].to_numpy(float)
        finite = values[np.isfinite(values)]
        if finite.size < 5:
            continue
        median = float(np.median(finite))
        spread = float(median_abs_deviation(finite, scale="normal"))
        if spread <= 0:
            continue
        for i, v in enumerate(values):
            if np.isfinite(v) and abs(v - median) > mad_limit * spread:
                reasons[i].append(f"{column} {v:.1f} outside the cohort's {median:.1f} +- "
                                  f"{mad_limit:g} x {spread:.1f}")
    out = table.copy()
    out["qc_flag"] = [bool(r) for r in reasons]
    out["qc_reasons"] = ["; ".join(r) for r in reasons]
    return out


# ------------------------------------------------------------------ the rules' jobs
def write_resolved_config(path, config: dict) -> None:
    """The configuration the run used, defaults filled in, as YAML for people to read
    (the report shows it; dataset_description.json carries the same as JSON)."""
    import yaml

    header = ("# The configuration this run used: the config file(s), --config values and "
              "the schema's defaults.\n")
    atomic_write_text(path, header + yaml.safe_dump(json.loads(json.dumps(config)),
                                                    sort_keys=False))


def run_dataset_description(out, config: dict, *, config_out=None, log_file=None,
                            threads: int = 1) -> None:
    """Rule dataset_description: dataset_description.json and the resolved config."""
    from .jobs import step

    outputs = [out] + ([config_out] if config_out else [])
    with step("dataset_description", inputs={}, outputs=outputs, log_file=log_file,
              threads=threads):
        write_dataset_description(out, config)
        if config_out:
            write_resolved_config(config_out, config)


def run_preprocessing_qc(images, out_tsv, *, log_file=None, threads: int = 1) -> None:
    """Rule preprocessing_qc: the QC table from the sidecars of the given per-session
    outputs (scaled maps, cerebellum masks, brain masks in MNI152)."""
    from .io import sidecar_path
    from .jobs import step

    with step("preprocessing_qc", inputs={}, outputs=[out_tsv], log_file=log_file,
              threads=threads):
        qc_table([sidecar_path(p) for p in images], out_tsv)
