"""Progress bars for the long steps (training epochs, relevance scenarios, integrated
gradients, voxel inverting), written into the job's log.

A bar is a ``tqdm`` bar whose output goes to a logger instead of a terminal: each refresh
becomes one log line (at most one every ``interval`` seconds, plus the final state), so a
job's log file shows how far a step got and how long the rest will take, and nothing
writes carriage returns into it. Jobs log through :func:`gamer_mril.jobs.step`, which sends
the ``gamer_mril`` logger's records to the job's log file and to stderr.
"""

from __future__ import annotations

import logging

from tqdm import tqdm

#: Seconds between two log lines of one bar.
INTERVAL = 10.0


class _LogStream:
    """A file-like object that turns tqdm's refreshes into log records."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._last = ""

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            line = line.strip()
            if line and line != self._last:
                self.logger.info(line)
                self._last = line

    def flush(self) -> None:
        pass


def bar(total: int, desc: str, *, unit: str = "it", logger: str | logging.Logger = "gamer_mril",
        interval: float = INTERVAL, disable: bool = False) -> tqdm:
    """A progress bar of ``total`` steps that reports to ``logger`` (a name or a logger).
    Use it as tqdm's (``update``, ``set_postfix``, ``close``, or as a context manager)."""
    log = logging.getLogger(logger) if isinstance(logger, str) else logger
    return tqdm(total=int(total), desc=desc, unit=unit, file=_LogStream(log),
                mininterval=float(interval), ascii=True, ncols=88, disable=disable)
