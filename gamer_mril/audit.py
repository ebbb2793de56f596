"""Provenance audit: walk an output's sidecars back to the raw inputs and re-hash them.

    python -m gamer_mril.audit OUTPUT [OUTPUT ...] [--root DIR] [--problems-only] [--json]
                               [--tsv FILE]

Every output ``X`` of the workflow has a provenance record: the sidecar ``X.json`` (see
:func:`gamer_mril.io.write_sidecar`: ``Inputs`` = ``{role: [{"path", "sha256"}]}`` and
``Output`` = ``{"path", "sha256"}``), or, for a JSON output, the same block inside itself
(``GeneratedBy`` and ``Inputs``, no ``Output`` hash). The audit starts at ``X`` and, for
each input its record lists:

* the input is re-hashed (once per file, however many outputs use it) and compared with
  the sha256 that the record holds: a difference is **STALE** (the input changed after
  the output was made from it), an absent file is **MISSING**;
* an input with a provenance record of its own is an intermediate: its own ``Output``
  hash is checked too (a difference is STALE: the file changed after its rule wrote it)
  and the walk goes on through its inputs; an input without one is a raw input (or a
  resource shipped with a package) and ends the chain.

The walk is cycle-safe and expands each file once; a file met again is printed with the
check of that record's hash and "(shown above)". Relative paths in records are relative
to the workflow's working directory (``snakemake --directory``), given as ``root``;
without it the root is found from the output's own record (its recorded path is a tail of
the given path) or is the current directory.

Statuses: each line shows the file's own status; a line whose file is fine but which has
a problem further up its chain is marked ``(upstream: STALE)``. Exit code 0 when every
file is OK, 1 otherwise.

Several outputs (:func:`audit_many`, or several paths on the command line) are audited in
one walk: every file is hashed and every record read once, and a chain already walked for
an earlier output is not walked again (its line says ``checked for <that output>``), but
its problems count for every output that depends on it. ``--tsv`` writes one row per
output (status, counts, problems). The workflow's ``audit`` target (rules/audit.smk)
runs this on every final map of a run.

The provenance records themselves are read by :mod:`gamer_mril.records`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .io import sha256, sidecar_path
from .records import find_record, infer_root, recorded_inputs

OK, STALE, MISSING = "OK", "STALE", "MISSING"
_RANK = {OK: 0, STALE: 1, MISSING: 2}


def _worst(*statuses) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


@dataclass
class Problem:
    """One finding: ``status`` of ``path``; ``recorded_by`` is the provenance record whose
    expectation failed (None for a file that is itself missing at the top)."""

    status: str
    path: str
    recorded_by: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.path}: {self.message}"


@dataclass
class Node:
    """A file in the provenance chain."""

    path: str                         # as recorded (or as given, for the top)
    resolved: Path
    role: str | None = None           # the role under which the parent recorded it
    rule: str | None = None           # the rule that made it (from its own record)
    record: str | None = None         # its provenance record (sidecar, or itself)
    status: str = OK                  # this file's own status, this edge's check included
    notes: list = field(default_factory=list)
    children: list = field(default_factory=list)
    repeated: bool = False            # already expanded elsewhere in the tree
    upstream: str = OK                # worst status of everything above it in the chain
    checked_for: str | None = None    # expanded while auditing this earlier output

    @property
    def kind(self) -> str:
        if self.record is None:
            return "raw input" if self.role is not None else "no provenance"
        return "intermediate" if self.role is not None else "output"


@dataclass
class Report:
    target: str
    root: Path
    tree: Node
    problems: list
    files: int                        # distinct files checked (for this output only)
    shared: int = 0                   # chains reused from the audit of an earlier output

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        return _worst(*(p.status for p in self.problems))

    def stale(self) -> list:
        return [p for p in self.problems if p.status == STALE]

    def missing(self) -> list:
        return [p for p in self.problems if p.status == MISSING]

    def format(self, problems_only: bool = False) -> str:
        lines = [f"provenance audit of {self.target} (root {self.root})"]
        if not problems_only:
            _format_tree(self.tree, 0, lines)
        reused = (f" (and {self.shared} chain(s) checked for an earlier output)"
                  if self.shared else "")
        lines.append(f"{self.status}: {self.files} file(s) checked{reused}, "
                     f"{len(self.stale())} stale, {len(self.missing())} missing")
        for p in self.problems:
            lines.append(f"  {p}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def node(n: Node) -> dict:
            return {"path": n.path, "role": n.role, "rule": n.rule, "record": n.record,
                    "status": n.status, "upstream": n.upstream, "notes": n.notes,
                    "repeated": n.repeated, "inputs": [node(c) for c in n.children]}
        return {"target": self.target, "root": str(self.root), "status": self.status,
                "files": self.files, "tree": node(self.tree),
                "problems": [vars(p) for p in self.problems]}


def _format_tree(n: Node, depth: int, lines: list) -> None:
    role = f"{n.role}: " if n.role else ""
    rule = f" [{n.rule}]" if n.rule else ""
    extra = []
    if n.repeated:
        extra.append(f"checked for {n.checked_for}" if n.checked_for else "shown above")
    elif n.record is None:
        extra.append(n.kind)
    if n.status == OK and n.upstream != OK:
        extra.append(f"upstream: {n.upstream}")
    tail = f"  ({'; '.join(extra)})" if extra else ""
    lines.append(f"{'  ' * depth}{n.status:<7} {role}{n.path}{rule}{tail}")
    for note in n.notes:
        lines.append(f"{'  ' * depth}        ! {note}")
    for c in n.children:
        _format_tree(c, depth + 1, lines)


# ----------------------------------------------------------------------------- the walk
class _Auditor:
    def __init__(self, root: Path):
        self.root = root
        self.hashes: dict[Path, str | None] = {}
        self.expanded: dict[Path, Node] = {}
        self.problems: list[Problem] = []
        # for several outputs: problems found inside each expanded file's chain, and the
        # output whose audit expanded it
        self.found: dict[Path, list] = {}
        self.owner: dict[Path, str] = {}
        self.target: str | None = None
        self.shared = 0
        self._listed: set = set()

    def start(self, target: str) -> None:
        """Begin the audit of another output (hashes and expanded chains are kept)."""
        self.target = target
        self.problems = []
        self.shared = 0
        self._listed = set()

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.root / p).resolve()

    def digest(self, resolved: Path) -> str | None:
        if resolved not in self.hashes:
            self.hashes[resolved] = sha256(resolved) if resolved.is_file() else None
        return self.hashes[resolved]

    def _list(self, problem: Problem) -> None:
        if id(problem) not in self._listed:
            self._listed.add(id(problem))
            self.problems.append(problem)

    def problem(self, node: Node, status: str, recorded_by, message: str) -> Problem:
        node.status = _worst(node.status, status)
        node.notes.append(message)
        p = Problem(status, node.path, recorded_by, message)
        self._list(p)
        return p

    def visit(self, path: str, role: str | None, expected: str | None,
              recorded_by: str | None) -> Node:
        return self._visit(path, role, expected, recorded_by)[0]

    def _visit(self, path, role, expected, recorded_by):
        """``(node, problems of its chain)``: the check of this edge (the file against
        the hash its parent recorded) and everything found in the file's own chain."""
        resolved = self.resolve(path)
        node = Node(path, resolved, role)
        actual = self.digest(resolved)
        if actual is None:
            where = f" (recorded by {recorded_by})" if recorded_by else ""
            return node, [self.problem(node, MISSING, recorded_by, f"does not exist{where}")]
        edge = []
        if expected is not None and actual != expected:
            edge.append(self.problem(node, STALE, recorded_by,
                                     f"changed since {recorded_by} recorded it "
                                     f"(sha256 then {expected[:12]}, now {actual[:12]})"))
        seen = self.expanded.get(resolved)
        if seen is not None:  # expanded elsewhere (or an ancestor: a cycle)
            node.repeated = True
            node.rule, node.record = seen.rule, seen.record
            node.upstream = _worst(seen.status, seen.upstream)
            chain = self.found.get(resolved, [])  # empty for an ancestor (a cycle)
            owner = self.owner.get(resolved)
            if owner != self.target:
                # walked for an earlier output: its problems are this output's too
                node.checked_for = owner
                self.shared += 1
                for p in chain:
                    self._list(p)
            return node, edge + chain
        self.expanded[resolved] = node
        self.owner[resolved] = self.target
        chain = self._expand(node, resolved, actual, role)
        self.found[resolved] = chain
        return node, edge + chain

    def _expand(self, node: Node, resolved: Path, actual: str, role) -> list:
        """Read the file's record, check it and walk its inputs; the problems found."""
        record_path, doc = find_record(resolved)
        if doc is None:
            if role is None:
                return [self.problem(node, MISSING, None,
                                     f"no provenance record (neither "
                                     f"{sidecar_path(resolved).name} nor a provenance "
                                     f"block inside the file)")]
            return []
        node.record = self.rel(record_path)
        gen = doc.get("GeneratedBy")
        node.rule = gen.get("Rule") if isinstance(gen, dict) else None
        chain = self.check_output(node, resolved, actual, record_path, doc.get("Output"))
        ids = {id(p) for p in chain}
        for in_role, in_path, in_sha in recorded_inputs(doc):
            child, found = self._visit(in_path, in_role, in_sha, node.record)
            node.children.append(child)
            node.upstream = _worst(node.upstream, child.status, child.upstream)
            for p in found:
                if id(p) not in ids:
                    ids.add(id(p))
                    chain.append(p)
        return chain

    def check_output(self, node: Node, resolved: Path, actual: str, record_path: Path,
                     out) -> list:
        """The record's own ``Output`` hash against the file it describes: the file
        itself for a sidecar, the described file for a sidecar met as a file."""
        if not isinstance(out, dict) or not out.get("sha256"):
            return []
        if record_path != resolved:
            described, now = resolved, actual
        elif out.get("path"):
            described = self.resolve(str(out["path"]))
            if described == resolved:
                return []
            now = self.digest(described)
        else:
            return []
        what = "the file" if described == resolved else self.rel(described)
        if now is None:
            return [self.problem(node, MISSING, node.record,
                                 f"{what} it describes does not exist")]
        if now != out["sha256"]:
            return [self.problem(node, STALE, node.record,
                                 f"{what} changed since its rule wrote it (sha256 in "
                                 f"{node.record}: {out['sha256'][:12]}, now {now[:12]})")]
        return []

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def audit(path, root=None) -> Report:
    """Audit one output's provenance chain; see the module docstring.

    ``root``: the workflow's working directory, against which the relative paths in the
    records are resolved (default: found from the output's record, else the current
    directory). ``path`` itself is taken relative to the current directory.
    """
    target = Path(path).expanduser().resolve()
    root = Path(root).expanduser().resolve() if root is not None else infer_root(target)
    auditor = _Auditor(root)
    tree = auditor.visit(auditor.rel(target), None, None, None)
    return Report(str(path), root, tree, auditor.problems, len(auditor.hashes))


def audit_many(paths, root=None):
    """Audit several outputs in one walk; yields one :class:`Report` per output, in order.

    Every file is hashed and every record read once. A chain already walked for an
    earlier output is not walked again (the node is marked ``checked_for`` that output)
    but its problems are listed in every report that reaches it, so each report's status
    is that output's own. ``root`` as for :func:`audit` (default: found from the first
    output's record).
    """
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        return
    if root is None:
        root = infer_root(paths[0].resolve())
    auditor = _Auditor(Path(root).expanduser().resolve())
    for path in paths:
        auditor.start(str(path))
        before = len(auditor.hashes)
        tree = auditor.visit(auditor.rel(path.resolve()), None, None, None)
        yield Report(str(path), auditor.root, tree, auditor.problems,
                     len(auditor.hashes) - before, auditor.shared)


TSV_COLUMNS = ("output", "status", "stale", "missing", "problems")


def _tsv_row(report: Report) -> str:
    problems = " | ".join(str(p) for p in report.problems)
    cells = (report.target, report.status, len(report.stale()), len(report.missing()),
             problems)
    return "\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in cells)


def write_reports(reports, out, tsv=None, problems_only: bool = False) -> dict:
    """Print each report to the text stream ``out`` (its chain unless ``problems_only``),
    then a summary line; write one row per output to the file ``tsv`` (atomically) if
    given. Returns ``{status: number of outputs}``."""
    from .io import atomic_write_text

    counts = {OK: 0, STALE: 0, MISSING: 0}
    rows = ["\t".join(TSV_COLUMNS)]
    for report in reports:
        counts[report.status] += 1
        if problems_only and report.ok:
            out.write(f"OK      {report.target}\n")
        else:
            out.write(report.format(problems_only=problems_only) + "\n")
        rows.append(_tsv_row(report))
    total = sum(counts.values())
    out.write(f"audited {total} output(s): {counts[OK]} OK, {counts[STALE]} STALE, "
              f"{counts[MISSING]} MISSING\n")
    if tsv is not None:
        atomic_write_text(tsv, "\n".join(rows) + "\n")
    return counts


def final_maps(paths) -> list:
    """The images (``.nii.gz``) among ``paths`` (nested lists allowed), in order, once."""
    maps, stack = [], [paths]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, Path)):
            if str(item).endswith(".nii.gz") and str(item) not in maps:
                maps.append(str(item))
        else:
            stack.extend(reversed(list(item)))
    return maps


class AuditFailed(Exception):
    """Some audited file is STALE or MISSING."""


def run_audit(targets, report, table, chains: bool = False, root=".", out=None) -> dict:
    """The workflow's ``audit`` target: audit ``targets`` (a path or a list), write the
    report to the file ``report`` (every chain if ``chains``, else the problems only) and
    one row per target to the file ``table``; print the problems and the summary (every
    chain if ``chains``) to ``out`` (default stdout). Raises :class:`AuditFailed` when a
    file is STALE or MISSING."""
    from .io import atomic_write_text

    if isinstance(targets, (str, Path)):
        targets = [targets]
    text = io.StringIO()
    counts = write_reports(audit_many(targets, root=root), text, tsv=table,
                           problems_only=not chains)
    atomic_write_text(report, text.getvalue())
    lines = text.getvalue().splitlines()
    if not chains:
        lines = [line for line in lines if not line.startswith("OK      ")]
    print("\n".join(lines), file=out or sys.stdout)
    if counts[STALE] or counts[MISSING]:
        raise AuditFailed(f"provenance audit: {counts[STALE]} STALE, {counts[MISSING]} "
                          f"MISSING of {sum(counts.values())} file(s); see {report} and "
                          f"{table}")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gamer_mril.audit",
        description="Walk an output's provenance sidecars back to the raw inputs, re-hash "
                    "every file, and report OK, STALE (changed since recorded) or MISSING.")
    ap.add_argument("output", nargs="+",
                    help="outputs of the workflow (maps, tables, transforms)")
    ap.add_argument("--root", default=None,
                    help="the workflow's working directory, which relative paths in the "
                         "sidecars are relative to (default: found from the output's "
                         "sidecar, else the current directory)")
    ap.add_argument("--problems-only", action="store_true",
                    help="print only the summary and the problems, not the chain")
    ap.add_argument("--json", action="store_true",
                    help="print the report as JSON (a list of reports for several outputs)")
    ap.add_argument("--tsv", default=None,
                    help="also write one row per output to this file: output, status, "
                         "stale, missing, problems")
    args = ap.parse_args(argv)
    if len(args.output) == 1 and not args.tsv:
        report = audit(args.output[0], root=args.root)
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(report.format(problems_only=args.problems_only))
        return 0 if report.ok else 1
    reports = audit_many(args.output, root=args.root)
    if args.json:
        reports = list(reports)
        if args.tsv:
            write_reports(reports, io.StringIO(), tsv=args.tsv)
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0 if all(r.ok for r in reports) else 1
    counts = write_reports(reports, sys.stdout, tsv=args.tsv,
                           problems_only=args.problems_only)
    return 0 if counts[STALE] == counts[MISSING] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
