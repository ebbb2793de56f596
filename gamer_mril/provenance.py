"""Provenance of the output dataset: dataset_description.json and the QC table.

Per-file sidecars are written by :func:`gamer_mril.io.write_sidecar`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from . import __version__
from .io import atomic_write_json, atomic_write_text, code_version, package_versions

CODE_URL = "https://github.com/gamer-mril/gamer-mril"

#: Facts gathered into the QC table: (rule, fact) -> column (``{suffix}`` per map).
QC_FACTS = {
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
    atomic_write_text(out_tsv, table.to_csv(sep="\t", index=False))
    return table


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
