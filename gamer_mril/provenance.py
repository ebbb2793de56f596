"""Provenance of the output dataset: dataset_description.json and the resolved config.

Per-file sidecars are written by :func:`gamer_mril.io.write_sidecar`.
"""

from __future__ import annotations

import json

from . import __version__
from .io import atomic_write_json, atomic_write_text, code_version, package_versions

CODE_URL = "https://github.com/gamer-mril/gamer-mril"


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
