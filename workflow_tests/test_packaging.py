"""The workflow used from elsewhere: imported by another workflow with Snakemake's
``module:`` directive, run from another working directory, its scripts finding the
installed package (there is no copy or link of it beside them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, make_config

pytestmark = pytest.mark.slow

HOST = f"""\
configfile: "config.yaml"


module gamer_mril:
    snakefile:
        "{REPO / 'Snakefile'}"
    config:
        config


use rule * from gamer_mril as gamer_mril_*
"""


def _snakemake(cwd: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("GAMER_MRIL_ROOT", None)
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def test_imported_as_a_module(tiny_cohort, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "Snakefile").write_text(HOST)
    config = make_config(tiny_cohort / "rawdata")
    config["inputs"]["participant_label"] = ["002"]
    (host / "config.yaml").write_text(yaml.safe_dump(config))

    proc = _snakemake(host, "-n", "gamer_mril_all")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    for rule in ("gamer_mril_select_participants", "gamer_mril_scale_map",
                 "gamer_mril_train_fold", "gamer_mril_group_heatmaps"):
        assert rule in text, rule

    # a real job: the host's results/, the module's script and the installed package
    scaled = "results/sub-002/ses-1/anat/sub-002_ses-1_desc-scaled_T1map.nii.gz"
    proc = _snakemake(host, scaled)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (host / scaled).is_file()
    sidecar = json.loads((host / scaled.replace(".nii.gz", ".json")).read_text())
    assert sidecar["GeneratedBy"]["Rule"] == "scale_map"
