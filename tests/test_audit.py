"""The provenance audit (gamer_mril.audit) on hand-made chains of files and sidecars.

The chain is written the way the workflow writes it (gamer_mril.io.write_sidecar, paths
relative to the working directory):

    rawdata/sub-01_T1map.nii.gz  (raw, no sidecar)
      -> results/sub-01_desc-scaled_T1map.nii.gz  (+ .json)       intermediate
        -> results/sub-01_desc-preproc_T1map.nii.gz  (+ .json)    output
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gamer_mril import audit as A
from gamer_mril.io import atomic_write_json, provenance, sidecar_path, write_sidecar

RAW = "rawdata/sub-01_T1map.nii.gz"
MASK = "rawdata/sub-01_mask.nii.gz"
MID = "results/sub-01_desc-scaled_T1map.nii.gz"
OUT = "results/sub-01_desc-preproc_T1map.nii.gz"


def _write(root: Path, rel: str, data: bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


@pytest.fixture()
def chain(tmp_path, monkeypatch) -> Path:
    """raw (+ a raw mask) -> intermediate -> output, written from the working directory."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, RAW, b"raw T1 map")
    _write(tmp_path, MASK, b"raw mask")
    _write(tmp_path, MID, b"scaled T1 map")
    write_sidecar(MID, rule="scale_map", inputs={"image": RAW}, params={"unit": "ms"})
    _write(tmp_path, OUT, b"preprocessed T1 map")
    write_sidecar(OUT, rule="remove_cerebellum", inputs={"t1map": MID, "mask": [MASK]})
    return tmp_path


def _tamper(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b" changed")


def test_intact_chain_is_ok(chain):
    report = A.audit(OUT)
    assert report.ok and report.status == A.OK, report.format()
    top = report.tree
    assert top.path == OUT and top.rule == "remove_cerebellum" and top.kind == "output"
    assert [(c.role, c.path) for c in top.children] == [("t1map", MID), ("mask", MASK)]
    mid = top.children[0]
    assert mid.rule == "scale_map" and mid.kind == "intermediate"
    assert [(c.role, c.path, c.kind) for c in mid.children] == [("image", RAW, "raw input")]
    assert report.files == 4
    assert A.main([OUT]) == 0


def test_tampered_raw_input_is_stale(chain, capsys):
    _tamper(chain / RAW)
    report = A.audit(OUT)
    assert not report.ok and report.status == A.STALE
    [p] = report.problems
    assert p.status == A.STALE and p.path == RAW
    assert p.recorded_by == str(sidecar_path(MID))
    assert RAW in str(p) and str(sidecar_path(MID)) in str(p)
    # the chain shows where: the output and the intermediate are fine themselves
    assert report.tree.status == A.OK and report.tree.upstream == A.STALE
    assert A.main([OUT]) == 1
    text = capsys.readouterr().out
    assert f"STALE   image: {RAW}" in text
    assert f"OK      {OUT} [remove_cerebellum]  (upstream: STALE)" in text
    assert text.strip().splitlines()[-1].strip().startswith(f"STALE {RAW}")


def test_tampered_intermediate_is_stale(chain):
    _tamper(chain / MID)
    report = A.audit(OUT)
    assert report.status == A.STALE
    assert {p.path for p in report.problems} == {MID}
    by = {p.recorded_by for p in report.problems}
    # the output recorded the old hash, and so did the intermediate's own sidecar
    assert by == {str(sidecar_path(OUT)), str(sidecar_path(MID))}
    assert all(p.status == A.STALE for p in report.problems)
    assert report.tree.children[0].status == A.STALE
    assert report.tree.children[0].children[0].status == A.OK  # raw still as recorded


def test_tampered_output_itself_is_stale(chain):
    _tamper(chain / OUT)
    report = A.audit(OUT)
    [p] = report.problems
    assert p.status == A.STALE and p.path == OUT and "since its rule wrote it" in p.message


@pytest.mark.parametrize("victim", [RAW, MID])
def test_deleted_file_is_missing(chain, victim):
    (chain / victim).unlink()
    report = A.audit(OUT)
    assert report.status == A.MISSING
    assert [p.path for p in report.missing()] == [victim]
    assert A.main([OUT, "--problems-only"]) == 1


def test_missing_target_and_target_without_record(chain):
    assert A.audit("results/nothing.nii.gz").status == A.MISSING
    report = A.audit(RAW)
    [p] = report.problems
    assert p.status == A.MISSING and "no provenance record" in p.message


def test_root_found_from_the_sidecar_or_given(chain, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    report = A.audit(chain / OUT)  # absolute path, other working directory, no root
    assert report.ok and report.root == chain.resolve(), report.format()
    assert A.audit(chain / OUT, root=chain).ok
    # a wrong root: the recorded relative inputs are not found there
    assert A.audit(chain / OUT, root=elsewhere).status == A.MISSING
    assert A.main([str(chain / OUT), "--root", str(chain)]) == 0


def test_shared_input_expanded_and_hashed_once(chain, monkeypatch):
    """A diamond: the raw map feeds two intermediates that both feed the output."""
    other = "results/sub-01_desc-other_T1map.nii.gz"
    _write(chain, other, b"another intermediate")
    write_sidecar(other, rule="other", inputs={"image": RAW})
    write_sidecar(OUT, rule="remove_cerebellum", inputs={"a": MID, "b": other})
    calls = []
    real = A.sha256
    monkeypatch.setattr(A, "sha256", lambda p: calls.append(Path(p)) or real(p))
    report = A.audit(OUT)
    assert report.ok
    assert len(calls) == len(set(calls)) == 4  # output, two intermediates, raw
    raws = [c.children[0] for c in report.tree.children]
    assert [r.repeated for r in raws] == [False, True]
    assert "shown above" in report.format()
    # tampering shows up on both edges, each naming the record that holds the old hash
    _tamper(chain / RAW)
    report = A.audit(OUT)
    assert {p.path for p in report.problems} == {RAW}
    assert {p.recorded_by for p in report.problems} == {str(sidecar_path(MID)),
                                                        str(sidecar_path(other))}


def test_cycle_terminates(chain):
    """Records that point at each other (never written by the workflow) end the walk."""
    a, b = "results/a.nii.gz", "results/b.nii.gz"
    _write(chain, a, b"a")
    _write(chain, b, b"b")
    write_sidecar(a, rule="r", inputs={"x": b})
    write_sidecar(b, rule="r", inputs={"x": a})
    report = A.audit(a)
    assert report.ok and report.files == 2
    assert report.tree.children[0].children[0].repeated


def test_json_output_with_its_provenance_inside(chain):
    """A JSON output that carries its provenance block (as the crop box does) is an
    intermediate; its inputs are followed."""
    box = "results/sub-01_from-NDI_to-NDIcrop_mode-image_xfm.json"
    atomic_write_json(box, {"CropBox": {"start": [0, 0, 0]},
                            **provenance(rule="crop_to_brain", inputs={"mask": MASK})})
    write_sidecar(OUT, rule="explain", inputs={"box": box, "t1map": MID})
    report = A.audit(OUT)
    assert report.ok, report.format()
    node = report.tree.children[0]
    assert node.rule == "crop_to_brain" and node.record == box
    assert [c.path for c in node.children] == [MASK]
    _tamper(chain / MASK)
    assert [p.path for p in A.audit(OUT).problems] == [MASK]


def test_a_sidecar_given_as_the_target_checks_its_file(chain):
    side = str(sidecar_path(OUT))
    assert A.audit(side).ok
    _tamper(chain / OUT)
    [p] = A.audit(side).problems
    assert p.status == A.STALE and OUT in p.message


def test_absolute_raw_input_outside_the_root(chain, tmp_path_factory):
    """Raw inputs (or package resources) recorded with absolute paths anywhere."""
    resource = _write(tmp_path_factory.mktemp("pkgdata"), "tpl.nii.gz", b"template")
    write_sidecar(MID, rule="scale_map", inputs={"image": RAW, "template": str(resource)})
    write_sidecar(OUT, rule="remove_cerebellum", inputs={"t1map": MID})
    report = A.audit(OUT)
    assert report.ok
    _tamper(resource)
    assert [p.path for p in A.audit(OUT).problems] == [str(resource)]


def test_json_report_and_cli_module(chain, capsys):
    _tamper(chain / RAW)
    assert A.main([OUT, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == A.STALE
    assert doc["problems"][0]["path"] == RAW
    assert doc["tree"]["inputs"][0]["inputs"][0]["status"] == A.STALE


def test_runs_as_a_module(chain):
    import subprocess
    import sys

    repo = Path(A.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "gamer_mril.audit", OUT], cwd=chain,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith(f"OK      {OUT} [remove_cerebellum]")
    _tamper(chain / MID)
    proc = subprocess.run([sys.executable, "-m", "gamer_mril.audit", OUT], cwd=chain,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and f"STALE {MID}" in proc.stdout


# ------------------------------------------------------------ several outputs at once
TOP = "results/sub-01_desc-top_T1map.nii.gz"
OUT2 = "results/sub-01_desc-other_T1map.nii.gz"


@pytest.fixture()
def two_outputs(chain) -> Path:
    """OUT: from MID and TOP, TOP itself from MID (MID met twice in OUT's chain);
    OUT2: from TOP only, so its whole chain was walked already for OUT."""
    _write(chain, TOP, b"top")
    write_sidecar(TOP, rule="top", inputs={"t1map": MID})
    write_sidecar(OUT, rule="remove_cerebellum", inputs={"t1map": MID, "top": TOP})
    _write(chain, OUT2, b"second output")
    write_sidecar(OUT2, rule="other", inputs={"top": TOP})
    return chain


def test_audit_many_hashes_each_file_once(two_outputs, monkeypatch):
    calls = []
    real = A.sha256
    monkeypatch.setattr(A, "sha256", lambda p: calls.append(Path(p)) or real(p))
    first, second = A.audit_many([OUT, OUT2])
    assert first.ok and second.ok
    assert len(calls) == len(set(calls)) == 5  # RAW, MID, TOP, OUT, OUT2
    assert first.shared == 0 and second.shared == 1
    [top] = second.tree.children
    assert top.repeated and top.checked_for == OUT and top.rule == "top"
    assert f"checked for {OUT}" in second.format()


@pytest.mark.parametrize("victim", [RAW, MID])
def test_audit_many_reports_shared_problems_for_every_output(two_outputs, victim):
    """A file changed deep in a chain walked for an earlier output is still named in the
    later output's report (its status is its own, not "OK because seen before")."""
    _tamper(two_outputs / victim)
    first, second = A.audit_many([OUT, OUT2])
    alone = A.audit(OUT2)
    assert first.status == second.status == alone.status == A.STALE
    assert {p.path for p in second.problems} == {p.path for p in alone.problems} == {victim}
    assert ({(p.path, p.recorded_by) for p in second.problems}
            == {(p.path, p.recorded_by) for p in alone.problems})
    assert second.tree.upstream == A.STALE


def test_cli_several_outputs_and_tsv(two_outputs, capsys):
    assert A.main([OUT, OUT2, "--tsv", "audit.tsv"]) == 0
    rows = (two_outputs / "audit.tsv").read_text().splitlines()
    assert rows[0].split("\t") == list(A.TSV_COLUMNS)
    assert [r.split("\t")[:2] for r in rows[1:]] == [[OUT, "OK"], [OUT2, "OK"]]
    assert "audited 2 output(s): 2 OK, 0 STALE, 0 MISSING" in capsys.readouterr().out
    _tamper(two_outputs / MID)
    assert A.main([OUT, OUT2, "--tsv", "audit.tsv", "--problems-only"]) == 1
    out = capsys.readouterr().out
    assert "audited 2 output(s): 0 OK, 2 STALE, 0 MISSING" in out
    assert f"STALE {MID}" in out
    rows = [r.split("\t") for r in (two_outputs / "audit.tsv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["STALE", "STALE"]
    assert all(MID in r[4] for r in rows)
    assert A.main([OUT, "results/nothing.nii.gz", "--json"]) == 1
    docs = json.loads(capsys.readouterr().out)
    assert [d["status"] for d in docs] == ["STALE", "MISSING"]


def test_final_maps_flattens_and_keeps_images_once():
    nested = [["a.nii.gz", "t.tsv"], ("b.nii.gz", ["a.nii.gz", Path("c.nii.gz")]), "d.json"]
    assert A.final_maps(nested) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]


def test_run_audit_as_the_workflow_target_does(two_outputs, capsys):
    """rules/audit.smk: report and table written, problems printed, failure raised."""
    counts = A.run_audit([OUT, OUT2], "logs/audit.log", "group/audit.tsv")
    assert counts == {A.OK: 2, A.STALE: 0, A.MISSING: 0}
    printed = capsys.readouterr().out
    assert "audited 2 output(s): 2 OK" in printed and f"OK      {OUT}" not in printed
    assert f"OK      {OUT}" in (two_outputs / "logs/audit.log").read_text()
    _tamper(two_outputs / RAW)
    with pytest.raises(A.AuditFailed, match="1 STALE, 0 MISSING of 1 file"):
        A.run_audit(OUT, "logs/audit.log", "group/audit.tsv", chains=True)  # one path
    printed = capsys.readouterr().out
    assert f"STALE   image: {RAW}" in printed  # the chain, as asked
    rows = (two_outputs / "group/audit.tsv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{OUT}\tSTALE\t")
