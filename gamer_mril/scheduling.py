"""One re-evaluation timer at a time in Snakemake's job scheduler (a workaround for its
controller's cost; the Snakefile applies it, this module never imports Snakemake).

Snakemake 9's scheduler (``JobScheduler.schedule``) ends every round in which jobs wait
by arming a one-shot timer of the job rate limit's timespan (``--max-jobs-per-timespan``,
100 jobs per 1 s by default); when the timer fires it wakes the next round, which arms the
next timer. A round woken by a finished job arms one too, so every job that finishes while
others wait starts another chain, and all chains live for as long as jobs wait. On a
2-core run of the demo's size hundreds of chains re-ran the scheduler hundreds of times a
second, each round stat-ing the inputs of every ready job: the controller used about half
a core (bench/controller.py; docs/benchmarks.md, controller). The timers serve one
purpose, to look again once the rate limit may let more jobs start, and one pending timer
does that as well as many: :func:`coalesce_reevaluation` lets a round arm a timer only
when none is pending. The timer is a daemon thread, so the controller's exit does not wait
for it either.
"""

from __future__ import annotations

import threading

#: The scheduler's method that arms the timer (the name, misspelt, as Snakemake has it).
METHOD = "_schedule_reevalutation"
_MARK = "_gamer_mril_one_timer"


def coalesce_reevaluation(scheduler_class) -> bool:
    """Replace ``scheduler_class``'s timer method by one that arms a timer only when none
    of this scheduler is pending. Returns False (and changes nothing) when the class has no
    such method (another Snakemake version) or is patched already."""
    original = getattr(scheduler_class, METHOD, None)
    if original is None or getattr(original, _MARK, False):
        return False

    def schedule_reevaluation(self, delay) -> None:
        state = self.__dict__.setdefault("_gamer_mril_timer", {"lock": threading.Lock(),
                                                               "pending": None})

        def fire():
            # cleared before the round is woken, so that round can arm the next timer
            with state["lock"]:
                state["pending"] = None
            self._open_jobs.release()

        with state["lock"]:
            if state["pending"] is not None:
                return
            timer = threading.Timer(delay, fire)
            timer.daemon = True
            state["pending"] = timer
            timer.start()

    setattr(schedule_reevaluation, _MARK, True)
    schedule_reevaluation.__doc__ = (f"{METHOD}, at most one pending timer "
                                     "(gamer_mril.scheduling).")
    setattr(scheduler_class, METHOD, schedule_reevaluation)
    return True
