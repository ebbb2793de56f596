"""Job scaffolding: what a killed attempt leaves behind is swept by the next attempt."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gamer_mril.io import atomic_path
from gamer_mril.jobs import sweep_litter


def test_sweep_removes_a_dead_attempts_scratch_and_temp_files(tmp_path):
    out = tmp_path / "sub-001_ses-1_desc-scaled_T1map.nii.gz"
    side = tmp_path / "sub-001_ses-1_desc-scaled_T1map.json"
    # what a SIGKILLed attempt leaves: its scratch folder and a half-written temp file
    scratch = tmp_path / ".work-scale_map-sub-001_ses-1_desc-scaled_T1map-4242"
    (scratch / "nested").mkdir(parents=True)
    (scratch / "nested" / "xfm.mat").write_bytes(b"x" * 10)
    temp = tmp_path / f".{out.name}.k2j3h4.nii.gz"
    temp.write_bytes(b"half")
    # things that are not this job's: another job's scratch and temp, and finished files
    other_scratch = tmp_path / ".work-scale_map-sub-001_ses-1_desc-scaled_MWFmap-4242"
    other_scratch.mkdir()
    other_temp = tmp_path / ".sub-002_ses-1_desc-scaled_T1map.nii.gz.abc.nii.gz"
    other_temp.write_bytes(b"other")
    kept = tmp_path / "sub-001_ses-1_desc-scaled_MWFmap.nii.gz"
    kept.write_bytes(b"done")
    out.write_bytes(b"old finished output")     # an existing output is not litter

    removed = sweep_litter("scale_map", [out, side])

    assert sorted(p.name for p in removed) == sorted([scratch.name, temp.name])
    assert not scratch.exists() and not temp.exists()
    assert other_scratch.is_dir() and other_temp.exists() and kept.exists() and out.exists()
    assert sweep_litter("scale_map", [out, side]) == []        # nothing left the second time


def test_atomic_path_leaves_nothing_on_failure_and_sweep_agrees(tmp_path):
    out = tmp_path / "a.nii.gz"
    try:
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"partial")
            assert tmp.name.startswith(f".{out.name}.") and tmp.parent == tmp_path
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert os.listdir(tmp_path) == []
    assert sweep_litter("r", [out]) == []


def test_job_stats_reads_the_last_table_and_leaves_out_total():
    from gamer_mril.jobs import job_stats

    text = """Job stats:
job          count
---------  -------
scale_map        9
total            9

Building DAG of jobs...
Job stats:
job                 count
----------------  -------
crop_to_brain           1
resample_to_ndi         2
total                   3

Reasons:
    (check individual jobs above for details)
"""
    assert job_stats(text) == {"crop_to_brain": 1, "resample_to_ndi": 2}
    assert job_stats("Nothing to be done (all requested files are present and up to date).") == {}


def test_a_failing_step_leaves_no_output_or_sidecar_and_names_rule_and_session(tmp_path):
    import json

    import pytest

    from gamer_mril.jobs import step

    src = tmp_path / "in.txt"
    src.write_text("raw")
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    log = tmp_path / "logs" / "x.log"
    with pytest.raises(RuntimeError) as err:
        with step("scale_map", inputs={"image": str(src)}, params={"unit": "ms"},
                  outputs=[a, b], log_file=log, subject="01", session="2") as s:
            a.write_bytes(b"done")
            s.sidecar(a, {"Fact": 1})
            assert json.loads((tmp_path / "a.json").read_text())["GeneratedBy"]["Rule"] == "scale_map"
            raise RuntimeError("b is broken")
    assert "(rule scale_map, sub-01 ses-2)" in "\n".join(err.value.__notes__)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "logs"]
    assert "b is broken" in log.read_text()


def test_session_label():
    """The one label of a session, in messages and in every job (inputs imports it)."""
    from gamer_mril import inputs
    from gamer_mril.jobs import session_label

    assert session_label("01", "02") == "sub-01 ses-02"
    assert session_label("sub-01", "ses-02") == "sub-01 ses-02"      # prefixes not doubled
    assert session_label() == "cohort"                              # a cohort-level job
    assert inputs.session_label is session_label


def test_a_step_removes_stale_sidecars_of_its_missing_outputs(tmp_path):
    from gamer_mril.jobs import step

    out = tmp_path / "sub-01_ses-1_mask.nii.gz"
    stale = tmp_path / "sub-01_ses-1_mask.json"    # left by a killed attempt
    stale.write_text("{}")
    other = tmp_path / "sub-01_ses-1_other.json"   # not this job's
    other.write_text("{}")
    with step("make_brain_mask", inputs={}, outputs=[out]) as s:
        assert not stale.exists() and other.exists()
        assert s.workdir.is_dir() and s.workdir.parent == tmp_path
        workdir = s.workdir
    assert not workdir.exists()


def test_the_package_never_imports_or_reads_snakemake():
    """The package is plain: no import of snakemake, no snakemake object's attributes."""
    import re
    from pathlib import Path

    import gamer_mril

    pattern = re.compile(r"^\s*(import|from)\s+snakemake\b|\bsmk\.|snakemake\.(input|output|"
                         r"params|wildcards|log)\b", re.MULTILINE)
    hits = [str(p) for p in Path(gamer_mril.__file__).parent.rglob("*.py")
            if pattern.search(p.read_text())]
    assert hits == []


def test_every_script_is_an_adapter_to_one_package_function():
    """scripts/<rule>.py calls one gamer_mril function, run_<rule>, and holds no logic."""
    import ast
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for path in sorted(scripts.glob("*.py")):
        tree = ast.parse(path.read_text())
        calls = [n.value.func.id for n in tree.body
                 if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                 and isinstance(n.value.func, ast.Name)]
        assert calls == [f"run_{path.stem}"], (path.name, calls)
        kinds = {type(n).__name__ for n in tree.body}
        assert kinds <= {"Expr", "ImportFrom", "Assign"}, (path.name, kinds)
        for n in tree.body:
            if isinstance(n, ast.ImportFrom):
                assert n.module.startswith("gamer_mril"), (path.name, n.module)


FAULTS = r"""
import resource, torch
torch.set_num_threads(1)
from gamer_mril.network import build_model
m = build_model(input_shape=(24, 24, 28), seed=0).eval()
x, age = torch.rand(4, 3, 24, 24, 28), torch.full((4,), 40.0)
with torch.no_grad():
    m(x, age)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):          # what voxel inverting does: the same passes again and again
        m(x, age)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables")
def test_malloc_tunables_let_jobs_reuse_large_blocks():
    """With the workflow's GLIBC_TUNABLES, repeated forward passes of the network reuse
    their memory; without, glibc maps fresh pages for them each time (a malformed
    tunable string would be ignored silently, and this would fail)."""
    import subprocess

    from gamer_mril.jobs import MALLOC_TUNABLES

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}

    def faults(extra):
        out = subprocess.run([sys.executable, "-c", FAULTS], env={**env, **extra},
                             capture_output=True, text=True, check=True)
        return int(out.stdout)

    default, tuned = faults({}), faults({"GLIBC_TUNABLES": MALLOC_TUNABLES})
    assert default > 20 * 1000           # pages faulted in again on every pass
    assert tuned < default / 20, (default, tuned)
    snakefile = (Path(__file__).parents[1] / "Snakefile").read_text()
    assert 'os.environ.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)' in snakefile


def test_sha256_is_remembered_per_file_version_not_per_path(tmp_path):
    """A job hashes the same inputs for every sidecar it writes; the remembered hash is
    that of the file's current version (a rewritten file is hashed again)."""
    import hashlib

    from gamer_mril.io import sha256

    f = tmp_path / "x.bin"
    f.write_bytes(b"first")
    assert sha256(f) == sha256(str(f)) == hashlib.sha256(b"first").hexdigest()
    f.write_bytes(b"second, longer")
    assert sha256(f) == hashlib.sha256(b"second, longer").hexdigest()
    tmp = tmp_path / "y.bin"              # the same size, put in place as the jobs write
    tmp.write_bytes(b"SECOND, LONGER")    # (a new file renamed over the old one)
    tmp.replace(f)
    assert sha256(f) == hashlib.sha256(b"SECOND, LONGER").hexdigest()
