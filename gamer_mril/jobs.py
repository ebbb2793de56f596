"""What every workflow job shares: logging, a scratch folder, provenance of its outputs.

Each rule's script passes its paths and parameters, as ordinary arguments, to one
package function (``run_<rule>`` in the stage's module); that function opens a
:func:`step` with the rule's name, its named inputs, parameters and outputs, does the
work and writes each output's provenance sidecar through the step. Nothing here knows
Snakemake: the package runs (and is tested) without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .io import provenance, sidecar_path, write_sidecar

log = logging.getLogger("gamer_mril")

#: glibc's malloc settings for the workflow's job processes (``GLIBC_TUNABLES``, which the
#: Snakefile sets for the jobs it starts unless the user has set it). By default glibc
#: serves blocks above a threshold that grows to 32 MB with fresh ``mmap`` pages and
#: returns them when freed, so a job that runs the network or an ANTs registration many
#: times faults in the same memory again and again: a fifth of such a job's CPU time was
#: system time (page faults). Above 256 MB only; below, freed memory is reused. Measured
#: on the 2-core machine: 40 forward and 10 training passes of the quick demo's network
#: 8.0 -> 5.9 s, the skull strip 4.2 -> 3.3 s, the template registration 6.6 -> 5.9 s;
#: a job's peak memory is unchanged, only returned to the system at its end. Ignored by
#: other C libraries (macOS, musl).
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=268435456:"
                   "glibc.malloc.trim_threshold=268435456")


def session_label(subject=None, session=None) -> str:
    """``sub-X ses-Y`` of a session, for messages and per-session jobs (a ``sub-`` or
    ``ses-`` prefix already there is not doubled), ``cohort`` for a cohort-level job (no
    subject)."""
    if subject is None:
        return "cohort"

    def bare(value, prefix):
        value = str(value).strip()
        return value[len(prefix):] if value.startswith(prefix) else value

    return f"sub-{bare(subject, 'sub-')} ses-{bare(session, 'ses-')}"


class Step:
    """A running job: its rule, named inputs and parameters, scratch folder and session.

    ``inputs``: {role: path or list of paths}, every file the job reads (hashed into the
    sidecars); ``params``: the job's parameters as recorded in the sidecars.
    """

    def __init__(self, rule: str, inputs: Mapping, params: Mapping | None, workdir: Path,
                 subject=None, session=None):
        self.rule = rule
        self.inputs = {k: v for k, v in inputs.items() if v is not None}
        self.params = dict(params or {})
        self.workdir = Path(workdir)
        self.subject, self.session_id = subject, session
        self.session = session_label(subject, session)
        self.written: list[Path] = []

    def provenance(self, facts=None, inputs=None) -> dict:
        """The provenance block of a JSON output that carries its own (no sidecar)."""
        return provenance(rule=self.rule, inputs=self.inputs if inputs is None else inputs,
                          params=self.params, extra={"Facts": facts} if facts else None)

    def sidecar(self, output, facts=None, inputs=None, params=None) -> Path:
        """Write ``output``'s provenance sidecar: the rule, the inputs it was made from
        (default: all the job's inputs) and the parameters (default: the job's)."""
        path = write_sidecar(output, rule=self.rule,
                             inputs=self.inputs if inputs is None else inputs,
                             params=self.params if params is None else params,
                             extra={"Facts": facts} if facts else None)
        self.written.append(path)
        return path


def job_stats(text: str) -> dict:
    """{rule: count} from the last "Job stats" table in Snakemake's output (a dry run's
    plan or a finished run's summary); ``total`` left out. {} when there is no table
    (nothing to do)."""
    if "Job stats:" not in text:
        return {}
    jobs = {}
    for line in text.split("Job stats:")[-1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        jobs[m.group(1)] = int(m.group(2))
    jobs.pop("total", None)
    return jobs


def sweep_litter(rule: str, outputs) -> list:
    """Remove what an earlier, killed attempt at this same job left behind.

    A job killed by SIGKILL (or a lost node) cannot clean up: its scratch folder
    (``.work-<rule>-<first output's stem>-<pid>``) and the hidden temporary files of
    :func:`gamer_mril.io.atomic_path` (``.<output name>.<random><suffix>``) stay. They are
    never taken for outputs, but they are litter. So are the sidecars of outputs that do
    not exist (Snakemake removes a job's outputs before it runs it): they would describe
    files that are gone. Snakemake runs at most one instance of a job at a time (its
    outputs are locked), so whatever carries this job's names when it starts belongs to a
    dead attempt. Returns the paths removed.
    """
    outputs = [Path(o) for o in outputs]
    removed = []
    if not outputs:
        return removed
    first = outputs[0]
    stem = first.name.split(".")[0]
    candidates = list(first.parent.glob(f".work-{rule}-{stem}-*"))
    for out in outputs:
        if out.parent.is_dir():
            candidates += [p for p in out.parent.glob(f".{out.name}.*") if p.is_file()]
            side = sidecar_path(out)
            if side != out and side.exists() and not out.exists():
                candidates.append(side)
    for p in candidates:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    if removed:
        log.info("removed %d leftover(s) of an earlier, interrupted attempt: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def named_error(err: BaseException, rule: str, s: Step):
    """For an error of ANTs (or ITK) that no step has named yet, the
    :class:`gamer_mril.errors.RegistrationError` that names the session, the rule and the
    job's input files above ANTs' message; None for any other error."""
    from .errors import RegistrationError, ants_error, from_ants

    if isinstance(err, RegistrationError) or not from_ants(err):
        return None
    files = {role: ", ".join(str(p) for p in ([paths] if isinstance(paths, (str, Path))
                                               else paths))
             for role, paths in s.inputs.items() if paths}
    return ants_error(err, f"rule {rule}", s.session, files)


@contextlib.contextmanager
def step(rule: str, *, inputs: Mapping, outputs: Sequence, params: Mapping | None = None,
         log_file=None, threads: int = 1, seed: int | None = None, subject=None,
         session=None):
    """Run one job of rule ``rule``: log to ``log_file`` (and stderr), a private scratch
    folder, threads and registration seed set, leftovers of a killed attempt swept.

    The scratch folder sits beside the first output (same file system, so finished files
    can be renamed into place) and is removed however the job ends. When the job fails,
    the outputs and sidecars it wrote are removed. Yields a :class:`Step`.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    threads = int(threads or 1)
    from . import registration

    registration.configure(threads, 42 if seed is None else int(seed))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch reads it when first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    outputs = [Path(o) for o in outputs]
    first = outputs[0]
    sweep_litter(rule, outputs)
    workdir = first.parent / f".work-{rule}-{first.name.split('.')[0]}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    s = Step(rule, inputs, params, workdir, subject, session)
    start = time.time()
    log.info("rule %s, %s, %d thread(s)", rule, s.session, threads)
    try:
        yield s
    except Exception as err:
        named = named_error(err, rule, s)
        err.add_note(f"(rule {rule}, {s.session})")
        log.exception("rule %s failed for %s", rule, s.session)
        # A failed job leaves nothing under a final name: neither the outputs it managed
        # to write nor their sidecars (which Snakemake does not know of).
        for path in outputs + s.written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if named is not None:
            raise named from None
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("done in %.1f s", time.time() - start)
