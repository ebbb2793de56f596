"""Provenance records: the sidecar ``X.json`` of an output ``X`` (written by
:func:`gamer_mril.io.write_sidecar`), or the same block inside a JSON output, read back
for the audit (:mod:`gamer_mril.audit`): which record a file has, the inputs it lists
with their hashes, and the working directory it was written from."""

from __future__ import annotations

import json
from pathlib import Path

from .io import sidecar_path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _is_record(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("Inputs"), dict) and "GeneratedBy" in doc


def find_record(path: Path):
    """``(record path, record)`` of a file: its sidecar, or itself for a JSON file that
    carries its provenance inside; ``(None, None)`` when it has none."""
    side = sidecar_path(path)
    if side != path and side.is_file():
        doc = _read_json(side)
        if _is_record(doc):
            return side, doc
    if path.name.endswith(".json") and path.is_file():
        doc = _read_json(path)
        if _is_record(doc):
            return path, doc
    return None, None


def recorded_inputs(doc: dict):
    """``(role, path, sha256 or None)`` of every input a record lists."""
    for role, entries in doc.get("Inputs", {}).items():
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            continue
        for e in entries:
            if isinstance(e, dict) and e.get("path"):
                yield str(role), str(e["path"]), e.get("sha256")
            elif isinstance(e, str):
                yield str(role), e, None


def infer_root(target: Path) -> Path:
    """The working directory the target's record was written from: the folder that the
    recorded output path (relative) is a tail of; else the current directory."""
    _, doc = find_record(target)
    recorded = None
    if doc is not None and isinstance(doc.get("Output"), dict):
        recorded = doc["Output"].get("path")
    if recorded and not Path(recorded).is_absolute():
        parts = Path(recorded).parts
        tparts = target.parts
        if len(tparts) > len(parts) and tparts[-len(parts):] == parts:
            return Path(*tparts[: -len(parts)])
    return Path.cwd()
