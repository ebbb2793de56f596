"""Glue between a workflow job and the package: logging, scratch space, sidecars.

The workflow's scripts pass their ``snakemake`` object here; this module only reads its
attributes (``input``, ``output``, ``params``, ``wildcards``, ``log``, ``threads``,
``rule``) and never imports snakemake, so it is tested with a plain stand-in object.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

from .io import provenance, write_sidecar

log = logging.getLogger("gamer_mril")


def _named(items) -> dict:
    """Named entries of a snakemake Namedlist (or a plain dict)."""
    if isinstance(items, dict):
        return dict(items)
    return {k: v for k, v in items.items()}


class Job:
    """What a script needs from its job, plus provenance helpers."""

    def __init__(self, smk, workdir: Path):
        self.smk = smk
        self.workdir = workdir
        wc = _named(getattr(smk, "wildcards", {}))
        self.subject = wc.get("subject")
        self.session_id = wc.get("session")
        if self.subject is not None:
            self.session = f"sub-{self.subject} ses-{self.session_id}"
        else:
            self.session = "cohort"

    @property
    def params(self) -> dict:
        return _named(self.smk.params)

    def provenance(self, facts=None, inputs=None) -> dict:
        """The provenance block of a JSON output that carries its own (no sidecar)."""
        inputs = _named(self.smk.input) if inputs is None else inputs
        return provenance(rule=self.smk.rule, inputs=inputs, params=self.params,
                          extra={"Facts": facts} if facts else None)

    def sidecar(self, output, facts=None, inputs=None):
        """Write ``output``'s provenance sidecar (inputs default to all named inputs)."""
        inputs = _named(self.smk.input) if inputs is None else inputs
        return write_sidecar(output, rule=self.smk.rule, inputs=inputs, params=self.params,
                             extra={"Facts": facts} if facts else None)


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
    never taken for outputs, but they are litter. Snakemake runs at most one instance of a
    job at a time (its outputs are locked), so whatever carries this job's names when it
    starts belongs to a dead attempt. Returns the paths removed.
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


@contextlib.contextmanager
def job(smk, seed: int | None = None):
    """Run a job: log to its log file, give it a private scratch folder, clean up.

    The scratch folder sits beside the first output (same file system, so finished files
    can be renamed into place) and is removed however the job ends.
    """
    log_path = Path(smk.log[0]) if len(smk.log) else None
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    threads = int(getattr(smk, "threads", 1) or 1)
    from . import registration

    registration.configure(threads, 42 if seed is None else seed)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch reads it when first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    first = Path(smk.output[0])
    sweep_litter(smk.rule, [Path(o) for o in smk.output])
    workdir = first.parent / f".work-{smk.rule}-{first.name.split('.')[0]}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    j = Job(smk, workdir)
    start = time.time()
    log.info("rule %s, %s, %d thread(s)", smk.rule, j.session, threads)
    try:
        yield j
    except Exception:
        log.exception("rule %s failed for %s", smk.rule, j.session)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("done in %.1f s", time.time() - start)
