"""The package's shape: no import circle, stages import only earlier stages, and no
module much longer than 400 lines without a reason in its docstring (docs/development.md,
"Layout").

The imports are read from the source (every ``import`` and ``from ... import``, those
inside functions too), not by importing, so a circle hidden behind a deferred import is
found as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gamer_mril"

#: The stages of the method in their order (docs/method.md#9-where-each-stage-lives): a
#: module of one stage may import modules of its own or earlier stages and the support
#: modules (those not listed), never a later stage.
#: Training, its evaluation (Table II, 5.1) and the baselines (5.2) are one stage; the QC
#: of preprocessing reads its outputs, so it comes after it.
STAGES = {
    "inputs": 1, "preprocessing": 2, "preprocessing_jobs": 2, "qc": 3, "exclusion": 3,
    "split": 4, "network": 5, "training": 6,
    "evaluation": 6, "baselines": 6, "lrp": 7, "explain": 8, "assessment": 9,
    "audit": 10, "reportlets": 10,
}

#: Lines above which a module must say in its docstring why it is longer.
LONG = 450


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict:
    """{dotted name: path} of every module of the package under ``root``."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set) -> set:
    """The package modules ``name`` (at ``path``) imports, anywhere in its code."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - node.level + 1]
                mod = ".".join(parent + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:          # ``import a.b.c`` -> the deepest known
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph(root: Path = PACKAGE) -> dict:
    mods = modules(root)
    known = set(mods)
    # a package's __init__ is run by importing any of its modules: that is not an edge of
    # the graph unless the __init__ itself imports something
    return {n: imports_of(n, p, known) - {r for r in known if n.startswith(r + ".")}
            for n, p in mods.items()}


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def stage_of(name: str):
    parts = name.split(".")
    return STAGES.get(parts[1]) if len(parts) > 1 else None


def test_no_import_circle():
    found = cycles(import_graph())
    assert not found, f"import circles in the package: {found}"


def test_a_circle_is_found(tmp_path):
    """The walk finds a circle through a deferred import and a relative one."""
    pkg = tmp_path / "gamer_mril"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import gamer_mril.a\n")
    (pkg / "d.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["gamer_mril.d"] == {"gamer_mril.a"}
    assert cycles(graph) == [["gamer_mril.a", "gamer_mril.c", "gamer_mril.sub.b"]]


def test_stages_import_only_earlier_stages():
    wrong = []
    for name, deps in import_graph().items():
        mine = stage_of(name)
        for d in deps:
            theirs = stage_of(d)
            if theirs is not None and (mine is None or theirs > mine):
                wrong.append(f"{name} imports {d}")
    assert not wrong, "a module imports a later stage: " + "; ".join(sorted(wrong))


@pytest.mark.parametrize("name", sorted(modules()))
def test_long_modules_say_why(name):
    path = modules()[name]
    n = len(path.read_text().splitlines())
    if n > LONG:
        doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split())
        assert "Longer than 400 lines" in doc, (
            f"{name} has {n} lines: split it, or say in its docstring why it is longer "
            f"('Longer than 400 lines because ...')")


def test_the_module_map_matches_the_package():
    """docs/development.md's module map names every module of the package, once, and
    nothing else."""
    import re

    text = (PACKAGE.parent / "docs" / "development.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `(gamer_mril/[\w/]+\.py)`:", section, flags=re.M)
    actual = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py"))
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == actual, (sorted(set(actual) - set(listed)),
                                      sorted(set(listed) - set(actual)))
