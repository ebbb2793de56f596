"""The README's commands, as written, where running them is cheap: every `make` target it
names exists (``make -n``), and every Snakemake command line it gives plans on the tiny
cohort (a dry run, ``-n``, added where the command would run jobs), with its placeholders
(``my.yaml``, ``/data/derivatives-run``, ``mystudy``, ``/path/to/gamer-mril``) filled in.
The cluster command (``.venv-controller``) is left to ``make test-slurm``; a command with a
placeholder for a file of the user's own (``PATH``) is skipped."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO, make_config

README = (REPO / "README.md").read_text()


def inline_commands(text: str) -> list:
    """Every command of the README: the lines of its bash blocks (backslash continuations
    joined, comments dropped) and its inline code spans that start with a command."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                out.append(" ".join(line.split()))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if re.match(r"(\.venv/bin/)?snakemake |make [a-z]", span):
            out.append(span)
    return list(dict.fromkeys(out))


COMMANDS = inline_commands(README)
MAKE = [c for c in COMMANDS if c.startswith("make ")]
SNAKEMAKE = [c for c in COMMANDS if re.match(r"(\.venv/bin/)?snakemake ", c)]


def test_the_readme_has_its_commands():
    """The extraction finds what a reader sees (so the tests below cannot pass empty)."""
    assert {"make demo", "make test"} <= set(MAKE)
    assert any("--configfile my.yaml" in c for c in SNAKEMAKE)
    assert any(c.startswith("snakemake audit") for c in SNAKEMAKE)


@pytest.mark.parametrize("command", MAKE)
def test_every_make_command_is_a_target(command):
    proc = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"


#: Options that plan or report without running jobs: no -n added.
NO_JOBS = ("--unlock", "--summary", "--list-changes", "-n")


def _fill(command: str, work, cfg) -> list | None:
    args = shlex.split(command)[1:]
    if "PATH" in args or any(a.endswith("=PATH") for a in args):
        return None
    filled = []
    for a in args:
        a = a.replace("/path/to/gamer-mril/Snakefile", str(REPO / "Snakefile"))
        a = {"my.yaml": str(cfg), "/data/derivatives-run": str(work),
             "mystudy": str(work)}.get(a, a)
        filled.append(a)
    if "-s" not in filled:
        filled = ["-s", str(REPO / "Snakefile"), *filled]
    if "--directory" not in filled:
        filled += ["--directory", str(work)]
    if "--configfile" not in filled:
        filled += ["--configfile", str(cfg)]
    if not any(o in filled for o in NO_JOBS):
        filled.append("-n")
    return filled


@pytest.mark.parametrize("command", SNAKEMAKE)
def test_every_snakemake_command_plans_on_a_tiny_cohort(command, tiny_cohort, tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    cfg = work / "my.yaml"
    cfg.write_text(yaml.safe_dump(make_config(tiny_cohort / "rawdata")))
    args = _fill(command, work, cfg)
    if args is None:
        pytest.skip(f"{command}: a placeholder for a file of the user's")
    env = dict(os.environ)
    env["PATH"] = str(os.path.dirname(sys.executable)) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=work,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{command}:\n{proc.stderr[-3000:]}"
