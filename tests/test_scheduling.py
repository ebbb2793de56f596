"""gamer_mril.scheduling: at most one pending re-evaluation timer per scheduler, and the
round it wakes can arm the next (a stand-in with the scheduler's semaphore; the Snakefile
applies the same function to Snakemake's JobScheduler, bench/controller.py measures it)."""

from __future__ import annotations

import threading
import time

from gamer_mril.scheduling import METHOD, coalesce_reevaluation


def _scheduler_class():
    class Scheduler:
        def __init__(self):
            self._open_jobs = threading.Semaphore(0)
            self.armed = 0

        def _schedule_reevalutation(self, delay):   # Snakemake's behaviour: a timer per call
            self.armed += 1
            threading.Timer(delay, self._open_jobs.release).start()

    return Scheduler


def _wakeups(s, seconds):
    n, end = 0, time.monotonic() + seconds
    while s._open_jobs.acquire(timeout=max(0.0, end - time.monotonic())):
        n += 1
    return n


def test_one_pending_timer_and_the_chain_goes_on():
    cls = _scheduler_class()
    assert coalesce_reevaluation(cls) is True
    s, other = cls(), cls()
    before = threading.active_count()
    for _ in range(50):
        s._schedule_reevalutation(0.2)
    other._schedule_reevalutation(0.2)                  # each scheduler has its own timer
    assert threading.active_count() == before + 2
    assert _wakeups(s, 0.6) == 1 and _wakeups(other, 0.1) == 1
    # the woken round arms the next timer: the re-evaluation keeps coming
    s._schedule_reevalutation(0.05)
    assert _wakeups(s, 0.5) == 1
    assert s.armed == 0                                 # Snakemake's own method not called


def test_the_timer_does_not_hold_the_exit():
    cls = _scheduler_class()
    coalesce_reevaluation(cls)
    s = cls()
    s._schedule_reevalutation(3600)
    ours = [t for t in threading.enumerate()
            if isinstance(t, threading.Timer) and t.interval == 3600]
    assert len(ours) == 1 and ours[0].daemon


def test_patched_once_and_other_versions_left_alone():
    cls = _scheduler_class()
    assert coalesce_reevaluation(cls) is True
    method = getattr(cls, METHOD)
    assert coalesce_reevaluation(cls) is False and getattr(cls, METHOD) is method

    class Other:
        pass

    assert coalesce_reevaluation(Other) is False and not hasattr(Other, METHOD)


def test_the_installed_snakemake_has_the_method_it_replaces():
    # a Snakemake upgrade that renames it leaves the scheduler unpatched: this says so
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert callable(getattr(JobScheduler, METHOD, None))
