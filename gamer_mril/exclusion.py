"""The sessions left out of training and assessment
(docs/method.md#28-quality-control-numbers): those the user lists (``qc.exclude``) and those whose QC flags are of a kind in
``qc.exclude_flagged`` (the kinds: :data:`gamer_mril.qc.FLAG_KINDS`). They stay
preprocessed and in the QC table; rule analysed_sessions (a checkpoint of the workflow,
since the flags exist only after the preprocessing) writes the table of the others, which
every training and assessment rule reads, and names each one left out and why.

* :func:`exclusions` -- ``qc.exclude`` as ``{(subject, session): reason}``;
* :func:`flagged_exclusions` -- the sessions of the QC table with a flag of the given kinds;
* :func:`check_exclusions` / :func:`analysed` -- checked against the table, and the rest;
* :func:`run_analysed_sessions` -- the rule's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .qc import FLAG_KINDS

if TYPE_CHECKING:
    import pandas as pd

#: The kinds ``qc.exclude_flagged`` leaves out by default (the schema's): the failed
#: registrations (maps that do not overlap NDI, a brain not in MNI152), which no later step
#: makes up for; the other kinds are often harmless and are left to the user's eye.
EXCLUDE_FLAGGED = ("dice", "coregistration")
_LABEL = re.compile(r"^sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)$")


def exclusions(entries) -> dict:
    """``qc.exclude`` as ``{(subject, session): reason}``: a list of ``sub-X_ses-Y``
    labels (reason: "listed in qc.exclude") or a mapping of label to reason."""
    if not entries:
        return {}
    if isinstance(entries, Mapping):
        items = [(label, str(reason) if reason else "") for label, reason in entries.items()]
    elif isinstance(entries, Sequence) and not isinstance(entries, str):
        items = [(label, "") for label in entries]
    else:
        raise ValueError(f"qc.exclude must be a list of sub-X_ses-Y labels or a mapping of "
                         f"label to reason, not {entries!r}")
    out = {}
    for label, reason in items:
        m = _LABEL.match(str(label))
        if not m:
            raise ValueError(f"qc.exclude: {label!r} is not a session label of the form "
                             f"sub-<subject>_ses-<session>")
        out[(m["subject"], m["session"])] = reason or "listed in qc.exclude"
    return out


def flag_kinds(kinds) -> tuple:
    """``qc.exclude_flagged`` checked: known kinds (:data:`FLAG_KINDS`), once each."""
    unknown = sorted(set(kinds) - set(FLAG_KINDS))
    if unknown:
        raise ValueError(f"qc.exclude_flagged: unknown flag kinds {unknown}; known: "
                         f"{list(FLAG_KINDS)}")
    return tuple(k for k in FLAG_KINDS if k in set(kinds))


def flagged_exclusions(table: pd.DataFrame, kinds, source: str = "the QC table") -> dict:
    """``{(subject, session): "QC flag: <its reasons>"}`` of the sessions of the QC
    ``table`` (``source``: its name in errors) with a flag of one of ``kinds``."""
    kinds = set(flag_kinds(kinds))
    if not kinds:
        return {}
    if "qc_flag_kinds" not in table:
        raise ValueError(f"{source} has no qc_flag_kinds column (written by an older "
                         f"version); rerun its rule: snakemake --forcerun preprocessing_qc")
    out = {}
    for subject, session, found, reasons in zip(table["subject"], table["session"],
                                                table["qc_flag_kinds"], table["qc_reasons"]):
        if isinstance(found, str) and kinds & set(found.split(";")):
            out[(str(subject), str(session))] = f"QC flag: {reasons}"
    return out


def check_exclusions(excluded: Mapping, sessions, by: str = "qc.exclude") -> None:
    """Every excluded session must be one of ``sessions`` ((subject, session) pairs), and
    at least one session must stay (``by``: what left them out, for the message)."""
    known = {(str(s), str(t)) for s, t in sessions}
    unknown = sorted(set(excluded) - known)
    if unknown:
        raise ValueError(f"{by} names sessions that are not among the selected ones: "
                         + ", ".join(f"sub-{s}_ses-{t}" for s, t in unknown))
    if known and not known - set(excluded):
        raise ValueError(f"{by} leaves no session to analyse")


def analysed(table: pd.DataFrame, excluded: Mapping) -> pd.DataFrame:
    """The rows of the participants table that ``excluded`` does not name."""
    keys = list(zip(table["subject"].astype(str), table["session"].astype(str)))
    return table.loc[[k not in excluded for k in keys]].reset_index(drop=True)


# ------------------------------------------------------------------ the rule's job

def run_analysed_sessions(table_path, out, excluded_tsv=None, *, exclude,
                          exclude_flagged=(), qc_table=None, log_file=None,
                          threads: int = 1) -> None:
    """Rule analysed_sessions: the participants table without the sessions of
    ``qc.exclude`` and those whose QC flags (``qc_table``) are of a kind in
    ``qc.exclude_flagged``. Its sidecar, and ``excluded_tsv`` when given, name each one
    left out, why and by which setting (``by``); a session both list is the user's."""
    import pandas as pd

    from .inputs import load_participants, write_participants
    from .io import atomic_write_text
    from .jobs import log, step

    listed = exclusions(exclude)
    kinds = flag_kinds(exclude_flagged)
    inputs = {"table": table_path, **({"qc_table": qc_table} if kinds else {})}
    with step("analysed_sessions", inputs=inputs,
              params={"exclude": {f"sub-{s}_ses-{t}": r for (s, t), r in listed.items()},
                      "exclude_flagged": list(kinds)},
              outputs=[out] + ([excluded_tsv] if excluded_tsv else []),
              log_file=log_file, threads=threads) as s:
        table = load_participants(table_path)
        sessions = list(zip(table["subject"], table["session"]))
        check_exclusions(listed, sessions)
        flagged = {}
        if kinds:
            if qc_table is None:
                raise ValueError(f"qc.exclude_flagged {list(kinds)} needs the QC table")
            flags = pd.read_csv(qc_table, sep="\t", dtype=str, keep_default_na=False)
            flagged = flagged_exclusions(flags, kinds, f"The QC table {qc_table}")
            flagged = {k: r for k, r in flagged.items() if k in set(sessions)}
            check_exclusions({**flagged, **listed}, sessions,
                             f"qc.exclude with qc.exclude_flagged {list(kinds)} "
                             f"(flags of {qc_table})")
        excluded = {**{k: (r, "qc.exclude_flagged") for k, r in flagged.items()},
                    **{k: (r, "qc.exclude") for k, r in listed.items()}}
        rows = [dict(subject=sub, session=ses, reason=r, by=by)
                for (sub, ses), (r, by) in sorted(excluded.items())]
        for row in rows:
            log.warning("sub-%s ses-%s left out of training and assessment (%s): %s",
                        row["subject"], row["session"], row["by"], row["reason"])
        kept = analysed(table, excluded)
        write_participants(kept, out)
        s.sidecar(out, {"Excluded": rows, "Sessions": len(kept)})
        if excluded_tsv:
            atomic_write_text(excluded_tsv, pd.DataFrame(
                rows, columns=["subject", "session", "by", "reason"]).to_csv(
                    sep="\t", index=False))
        log.info("%d of %d sessions analysed (%d left out by qc.exclude, %d by "
                 "qc.exclude_flagged %s)", len(kept), len(table), len(listed),
                 len(set(flagged) - set(listed)), list(kinds))
