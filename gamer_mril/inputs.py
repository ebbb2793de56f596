"""The participants table and the session selection (docs/method.md#1-inputs): reading
and checking the table, the sessions a run uses, and rule select_participants, which
also matches the selected rows with the map files (:mod:`gamer_mril.mapfiles`).

Every check raises :class:`gamer_mril.errors.InputError`; the message names the session
(``sub-<subject> ses-<session>``) where it is known, the file, and what is wrong, and says
what to do when that is obvious. Nothing is ever fixed silently: rows are not dropped.

Choices the paper leaves open (docs/method.md#1-inputs and
docs/method.md#8-decisions-the-paper-leaves-open):

* Subject and session labels are BIDS labels: letters and digits only, read as text so that
  leading zeros survive (``01`` is not ``1``). A leading ``sub-`` / ``ses-`` is removed.
  BIDS column names ``participant_id`` / ``session_id`` are accepted in place of
  ``subject`` / ``session``; column names are matched without regard to case.
* Empty cells and ``n/a`` / ``NA`` / ``nan`` / ``none`` / ``null`` count as missing.
* An EDSS within 1e-6 of a step of 0.5 is snapped to that step (spreadsheet float noise
  such as ``4.4999999999``); anything further from a step is an error.
* All problems found in the participants table are reported together (one line each),
  so a user fixes the table in one pass rather than one error per run.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .jobs import session_label
from .mapfiles import LABEL_RE, check_session_files

__all__ = [
    "load_participants",
    "Selection",
    "select_sessions",
    "write_participants",
    "run_select_participants",
]

_MISSING = {"", "n/a", "na", "nan", "none", "null"}
_COLUMN_ALIASES = {"participant_id": "subject", "session_id": "session"}
_REQUIRED = ("subject", "session", "age", "edss")


def _strip_prefix(value, prefix: str) -> str:
    value = str(value).strip()
    return value[len(prefix):] if value.startswith(prefix) else value


# ---------------------------------------------------------------------------------------
# Participants table
# ---------------------------------------------------------------------------------------

def _is_missing(value: str) -> bool:
    return value.strip().lower() in _MISSING


def _parse_number(value: str):
    """Return a finite float, or None when ``value`` is not a finite number."""
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _number_hint(value: str) -> str:
    return " (use a decimal point, not a comma)" if "," in value else ""


def load_participants(path) -> pd.DataFrame:
    """Read and validate the participants table (one row per session).

    ``path`` is a tab-separated file, or comma-separated when its name ends in ``.csv``.
    Required columns: ``subject``, ``session``, ``age`` (years), ``edss``; optional ``sex``,
    ``phenotype``; other columns are kept as text. Returns the table sorted by subject then
    session, with ``subject``/``session`` as text, ``age``/``edss`` as float and
    ``label = int(edss >= 5)`` (1 = severe). Raises InputError on any invalid row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The participants table {path} does not exist; check the "
                         f"'participants' entry of the config.")
    sep = "," if path.name.lower().endswith(".csv") else "\t"
    kind = "comma" if sep == "," else "tab"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            if sep == "\t":
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(f, delimiter=",")
            rows = []
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue  # blank line
                rows.append((reader.line_num, [x.strip() for x in fields]))
    except UnicodeDecodeError as exc:
        raise InputError(f"The participants table {path} is not a UTF-8 text file; save it "
                         f"as {kind}-separated UTF-8 text.") from exc
    except (OSError, csv.Error) as exc:
        raise InputError(f"The participants table {path} could not be read ({exc}).") from exc

    if not rows:
        raise InputError(f"The participants table {path} is empty; it needs a header line "
                         f"with the columns {', '.join(_REQUIRED)} and one row per session.")
    header_line, header = rows[0]
    columns = [h.lower() for h in header]
    for alias, name in _COLUMN_ALIASES.items():
        if name not in columns and alias in columns:
            columns[columns.index(alias)] = name
    dupes = sorted({c for c in columns if columns.count(c) > 1 and c})
    if dupes:
        raise InputError(f"The participants table {path} has the column(s) {', '.join(dupes)} "
                         f"more than once in its header (line {header_line}).")
    missing_cols = [c for c in _REQUIRED if c not in columns]
    if missing_cols:
        hint = ""
        if len(header) == 1 and ("," in header[0] or "\t" in header[0]):
            other = "comma" if sep == "\t" else "tab"
            hint = (f" The file looks {other}-separated but its name says {kind}-separated; "
                    f"rename it to .{'csv' if other == 'comma' else 'tsv'}.")
        raise InputError(
            f"The participants table {path} has no column "
            f"{' and no column '.join(repr(c) for c in missing_cols)} (columns found: "
            f"{', '.join(repr(h) for h in header) or 'none'}); the required columns are "
            f"{', '.join(_REQUIRED)}.{hint}")
    if len(rows) == 1:
        raise InputError(f"The participants table {path} has a header but no sessions.")

    problems: list[str] = []
    records = []
    seen: dict[tuple[str, str], int] = {}
    for line, fields in rows[1:]:
        where = f"participants table {path}, line {line}"
        if len(fields) > len(columns):
            problems.append(f"In the {where}: the row has {len(fields)} {kind}-separated "
                            f"fields but the header has {len(columns)}.")
            continue
        fields = fields + [""] * (len(columns) - len(fields))  # trailing empty cells
        row = dict(zip(columns, fields))

        subject = _strip_prefix(row["subject"], "sub-")
        session = _strip_prefix(row["session"], "ses-")
        bad_label = False
        for name, value in (("subject", subject), ("session", session)):
            if _is_missing(value):
                problems.append(f"In the {where}: the {name} is missing.")
                bad_label = True
            elif not LABEL_RE.fullmatch(value):
                problems.append(f"In the {where}: the {name} label {value!r} may contain "
                                f"only letters and digits (a BIDS label).")
                bad_label = True
        who = "" if bad_label else f" ({session_label(subject, session)})"
        if not bad_label:
            key = (subject, session)
            if key in seen:
                problems.append(f"{session_label(subject, session)} is listed twice in the "
                                f"participants table {path}, on lines {seen[key]} and "
                                f"{line}; keep one row per session.")
            else:
                seen[key] = line

        raw_edss = row["edss"]
        edss = None
        if _is_missing(raw_edss):
            problems.append(f"In the {where}{who}: the EDSS is missing; every session needs "
                            f"an EDSS value.")
        else:
            edss = _parse_number(raw_edss)
            if edss is None:
                problems.append(f"In the {where}{who}: the EDSS {raw_edss!r} is not a "
                                f"number{_number_hint(raw_edss)}.")
            elif not 0.0 <= edss <= 10.0:
                problems.append(f"In the {where}{who}: the EDSS {raw_edss!r} is outside the "
                                f"scale 0 to 10.")
                edss = None
            elif abs(edss * 2 - round(edss * 2)) > 1e-6:
                problems.append(f"In the {where}{who}: the EDSS {raw_edss!r} is not a step "
                                f"of the scale (EDSS goes 0, 1, 1.5, 2, ... 10 in steps of "
                                f"0.5).")
                edss = None
            else:
                # Snap float noise from spreadsheet exports (4.4999999999 -> 4.5) so that
                # the label edss >= 5 cannot flip on a rounding error.
                edss = round(edss * 2) / 2

        raw_age = row["age"]
        age = None
        if _is_missing(raw_age):
            problems.append(f"In the {where}{who}: the age is missing.")
        else:
            age = _parse_number(raw_age)
            if age is None:
                problems.append(f"In the {where}{who}: the age {raw_age!r} is not a "
                                f"number of years{_number_hint(raw_age)}.")
            elif not 0.0 < age < 120.0:
                problems.append(f"In the {where}{who}: the age {raw_age!r} is not a "
                                f"plausible age in years (expected between 0 and 120).")
                age = None

        record = {c: (None if _is_missing(v) else v) for c, v in row.items() if c}
        record.update(subject=subject, session=session, age=age, edss=edss)
        records.append(record)

    if problems:
        if len(problems) == 1:
            raise InputError(problems[0])
        raise InputError(f"The participants table {path} has {len(problems)} problems:\n"
                         + "\n".join(f"  - {p}" for p in problems))

    table = pd.DataFrame.from_records(records)
    table["subject"] = table["subject"].astype(str)
    table["session"] = table["session"].astype(str)
    table["age"] = table["age"].astype(np.float64)
    table["edss"] = table["edss"].astype(np.float64)
    table["label"] = (table["edss"] >= 5.0).astype(np.int64)
    front = ["subject", "session", "age", "edss"] + [c for c in ("sex", "phenotype")
                                                      if c in table.columns]
    rest = [c for c in table.columns if c not in front and c != "label"]
    table = table[front + rest + ["label"]]
    return table.sort_values(["subject", "session"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Subsets of a dataset
# ---------------------------------------------------------------------------------------

def _labels(values, prefix: str, key: str) -> tuple:
    out = []
    for value in values or ():
        label = _strip_prefix(value, prefix)
        if not LABEL_RE.fullmatch(label):
            raise InputError(f"The config's inputs: {key} holds {value!r}, which is not a "
                             f"BIDS label (letters and digits, optionally with '{prefix}').")
        out.append(label)
    return tuple(out)


@dataclass(frozen=True)
class Selection:
    """Which sessions of a dataset a run uses, as BIDS apps select them.

    Empty include lists select everything; a session is selected when its subject is
    included and not excluded and its session label is included and not excluded. Labels
    may carry their ``sub-`` / ``ses-`` prefix.
    """

    participant_label: tuple = ()
    exclude_participant_label: tuple = ()
    session_label: tuple = ()
    exclude_session_label: tuple = ()

    KEYS = ("participant_label", "exclude_participant_label", "session_label",
            "exclude_session_label")

    @classmethod
    def from_config(cls, inputs: dict) -> "Selection":
        """The selection named by the config's ``inputs`` section (missing keys: all)."""
        prefix = {"participant_label": "sub-", "exclude_participant_label": "sub-",
                  "session_label": "ses-", "exclude_session_label": "ses-"}
        return cls(**{k: _labels(inputs.get(k), prefix[k], k) for k in cls.KEYS})

    @property
    def active(self) -> bool:
        """Whether the selection leaves anything out at all."""
        return any(getattr(self, k) for k in self.KEYS)

    def as_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in self.KEYS}

    def __contains__(self, key) -> bool:
        subject, session = (str(x) for x in key)
        return ((not self.participant_label or subject in self.participant_label)
                and subject not in self.exclude_participant_label
                and (not self.session_label or session in self.session_label)
                and session not in self.exclude_session_label)


def select_sessions(table: pd.DataFrame, selection: Selection, source="the participants "
                    "table") -> pd.DataFrame:
    """The rows of ``table`` that ``selection`` keeps.

    A label in any of the four lists that no row of the table carries is an error (a typo
    would otherwise silently run or keep the wrong sessions), and so is a selection that
    keeps no session at all.
    """
    subjects = set(table["subject"].astype(str))
    sessions = set(table["session"].astype(str))
    problems = []
    for key in Selection.KEYS:
        known = subjects if "participant" in key else sessions
        unknown = [x for x in getattr(selection, key) if x not in known]
        if unknown:
            what = "subject" if "participant" in key else "session"
            problems.append(f"inputs: {key} names the {what} label(s) "
                            f"{', '.join(unknown)}, which {source} does not have.")
    if problems:
        raise InputError(" ".join(problems) + " Check the labels (without typos; "
                                              "quote labels such as '01' in YAML).")
    keep = [(s, t) in selection for s, t in zip(table["subject"].astype(str),
                                                table["session"].astype(str))]
    selected = table.loc[keep].reset_index(drop=True)
    if selected.empty:
        raise InputError(f"The config's participant and session labels select no session "
                         f"of {source} ({selection.as_dict()}).")
    return selected


def write_participants(table: pd.DataFrame, path) -> None:
    """Write a participants table (one row per session) as tab-separated text, atomically;
    missing values as ``n/a``. :func:`load_participants` reads it back unchanged."""
    from .io import atomic_path

    columns = [c for c in table.columns if c != "label"]
    with atomic_path(path) as tmp:
        table[columns].to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                              float_format="%.10g")


def run_select_participants(table_path, out, *, selection: dict, maps: dict,
                            brain_mask=None, log_file=None) -> None:
    """Rule select_participants: the validated rows of the sessions this run uses."""
    from .jobs import log, step

    chosen = Selection.from_config(selection)
    with step("select_participants", inputs={"table": table_path},
              params={"selection": chosen.as_dict()}, outputs=[out],
              log_file=log_file) as s:
        table = load_participants(table_path)
        selected = select_sessions(table, chosen, f"the participants table {table_path}")
        ignored = check_session_files(selected, maps, brain_mask, chosen)
        log.info("%d of %d sessions selected; files of %d sessions on disk ignored",
                   len(selected), len(table), ignored)
        write_participants(selected, out)
        s.sidecar(out, {"sessions_in_table": int(len(table)),
                        "sessions_selected": int(len(selected)),
                        "sessions_on_disk_ignored": int(ignored)})


