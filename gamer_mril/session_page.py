"""Per-session report pages and the cohort's index of them, as NiPreps write theirs
(docs/outputs.md, "Report pages"; docs/method.md#28-quality-control-numbers).

* :func:`session_page` -- one HTML page per session, ``<root>/sub-X/sub-X_ses-Y.html``
  (:attr:`gamer_mril.layout.Session.page`): the session's QC row (every figure beside the
  cohort's median, the flag and its reasons highlighted when flagged), the key facts of
  its steps' sidecars (units and orientation of the scaling, start and metric of the
  co-registrations, the explaining model, its probability and attention), and its
  reportlets with their captions. The reportlets are referenced by relative path
  (``ses-Y/figures/...svg``), never embedded, so a page weighs a few kB;
* :func:`index_page` -- ``<root>/group/sessions.html``: the QC table, one row per
  session linked to its page (``../sub-X/sub-X_ses-Y.html``), flagged rows highlighted.

Written with the standard library (``html.escape``), offline; why not nireports'
assembler: docs/outputs.md, "Report pages".
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from html import escape
from pathlib import Path

import pandas as pd

#: Every reportlet of a page: (title, caption), in the order the page shows them; the
#: five preprocessing reportlets (gamer_mril.layout.REPORTLETS) and the relevance one.
CAPTIONS = {
    "brainmask": (
        "Brain mask (step 2c)",
        "The mask's contour (red) over the scaled qT1 map in its own grid, axial, sagittal "
        "and coronal cuts. A contour that cuts into the brain or takes in skull or eyes "
        "means the mask failed: check brain_ml and dice_template_brain, and consider "
        "qc.exclude."),
    "coregT1map": (
        "Co-registration of qT1 to NDI (steps 3-4)",
        "The NDI map and the qT1 map resampled into its grid, flickering when the pointer "
        "is over the figure, with the NDI brain mask's contour on both. Ventricles, sulci "
        "and the brain's outline should stay in place; nmi_ndi_T1map gives the same check "
        "as a number."),
    "coregMWFmap": (
        "Co-registration of MWF to NDI (steps 3-4)",
        "The NDI map and the MWF map resampled into its grid, flickering when the pointer "
        "is over the figure, with the NDI brain mask's contour on both. White-matter tracts "
        "should stay in place; nmi_ndi_MWFmap gives the same check as a number."),
    "template": (
        "Registration to MNI152 (step 6)",
        "The template's T1w image and the session's qT1 map carried into MNI152 through "
        "the session's saved transforms, flickering when the pointer is over the figure, "
        "with the template's brain outline on both. The brain should fill the outline; "
        "dice_template_brain and jaccard_template_brain measure it."),
    "cerebellum": (
        "Cerebellum removal (step 7)",
        "The cerebellum mask set to 0 in all three contrasts (red) and the brain mask, over "
        "the cropped qT1 map. The red contour should hold the cerebellum and brain stem "
        "below the tentorium and nothing of the occipital lobes."),
    "relevance": (
        "Relevance (section 7.6)",
        "The top-N mask (N = assessment.heatmap_level) of the cohort's chosen scenario "
        "(results/group/chosen_scenario.json) over the session's NDI map in the cropped "
        "grid; one contour per contrast for an individual map. Where the network's "
        "evidence lies in this session."),
}

#: The facts a page shows of each kind of sidecar, as (label, Facts key).
SCALING_FACTS = (("declared unit", "DeclaredUnit"), ("unit factor", "UnitFactor"),
                 ("stored orientation", "StoredOrientation"), ("orientation", "Orientation"),
                 ("stored obliquity (deg)", "StoredObliquity_deg"),
                 ("resampled to axis-aligned", "ResampledToAxisAligned"),
                 ("voxel size (mm)", "VoxelSize_mm"), ("non-finite voxels", "NonFiniteVoxels"),
                 ("clipped voxels", "ClippedVoxels"))
COREG_FACTS = (("transform", "Transform"), ("metric", "Metric"), ("start", "Start"),
               ("metric by start", "MetricByStart"))

_STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 2em 3em;color:#222}
nav{position:sticky;top:0;background:#f4f4f4;padding:.5em 1em;margin:0 -2em 1em;
border-bottom:1px solid #ccc}
nav a{margin-right:1.2em}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:.9em}
th{background:#eee}table.index td:first-child{white-space:nowrap}
tr.flagged td,td.named{background:#fbd5d5}
.flag{padding:.6em 1em;margin:1em 0;border-radius:4px}
.flag.flagged{background:#fbd5d5;border:2px solid #c0392b}
.flag.ok{background:#dff0d8;border:1px solid #6a9e5a}
.note{background:#fff3cd;border:1px solid #c9a227;padding:.5em 1em}
figure{margin:1.5em 0}figure object{max-width:100%;display:block}
figcaption{max-width:60em;margin:.3em 0}
"""


def _value(v) -> str:
    """A table cell: floats to four significant digits (whole numbers and those from 1000
    on without decimals), missing values as n/a."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:        # a numpy scalar
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):                     # 4 significant digits, no exponent
        return f"{v:.0f}" if v.is_integer() or abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k} {_value(x)}" for k, x in v.items())
    return str(v)


def relative_link(target, page, inside: bool = False) -> str:
    """``target``'s path relative to the folder of ``page``, with forward slashes; with
    ``inside``, an error unless it lies in that folder (a page's own reportlets)."""
    link = Path(os.path.relpath(Path(target).absolute(), Path(page).absolute().parent)).as_posix()
    if inside and (link.startswith("../") or link == ".."):
        raise ValueError(f"{target}: not under the folder of the page {page}, so the page "
                         f"cannot reference it by a relative path inside its own folder")
    return link


def qc_row(table: pd.DataFrame, subject: str, session: str, source="the QC table") -> dict:
    """The QC table's row of one session, as {column: value}; an error naming the
    session and the table unless there is exactly one."""
    rows = table[(table["subject"].astype(str) == str(subject))
                 & (table["session"].astype(str) == str(session))]
    if len(rows) != 1:
        raise ValueError(f"sub-{subject} ses-{session}: {len(rows)} rows in {source}, "
                         f"expected one")
    return rows.iloc[0].to_dict()


def cohort_medians(table: pd.DataFrame) -> dict:
    """The median of every numeric QC figure over the cohort's sessions (qc_flag aside)."""
    numeric = table.drop(columns=["qc_flag"], errors="ignore").select_dtypes("number")
    return {c: float(numeric[c].median()) for c in numeric.columns}


def named_figures(row: Mapping) -> set:
    """The QC figures (columns) that the session's reasons name."""
    reasons = str(row.get("qc_reasons") or "")
    named = {c for c in row if re.search(rf"(?<!\w){re.escape(str(c))}(?!\w)", reasons)}
    if "Dice with the template brain mask" in reasons:
        named.add("dice_template_brain")
    return named - {"qc_reasons", "qc_flag", "subject", "session"}


def _flagged(row: Mapping) -> bool:
    flag = row.get("qc_flag")
    return str(flag).strip().lower() in ("true", "1", "yes")


def _reasons(row: Mapping) -> list:
    text = row.get("qc_reasons")
    if not isinstance(text, str):
        return []
    return [r.strip() for r in text.split(";") if r.strip()]


def _page(title: str, body: list, script: str = "") -> str:
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>",
                      '<meta charset="utf-8">', f"<title>{escape(title)}</title>",
                      f"<style>{_STYLE}</style>", "</head>", "<body>", *body,
                      *([f"<script>{script}</script>"] if script else []),
                      "</body>", "</html>", ""])


#: Columns of the QC table that are not figures of the session.
NOT_FIGURES = ("subject", "session", "qc_flag", "qc_reasons", "qc_flag_kinds")


def _flag_block(row: Mapping) -> str:
    if not _flagged(row):
        return '<div class="flag ok">Not flagged by the preprocessing QC.</div>'
    items = "".join(f"<li>{escape(r)}</li>" for r in _reasons(row))
    return (f'<div class="flag flagged"><strong>Flagged by the preprocessing QC</strong>'
            f"<ul>{items}</ul></div>")


def session_page(subject: str, session: str, row: Mapping, medians: Mapping,
                 figures: list, facts: list, links: Mapping, excluded: str | None = None
                 ) -> str:
    """The HTML of one session's page. ``row``: its QC row ({column: value});
    ``medians``: the cohort's median of each numeric figure; ``figures``: (name,
    relative link) of each reportlet (names of :data:`CAPTIONS`); ``facts``: (heading,
    [(label, value), ...]) blocks; ``links``: {text: relative link} of the navigation bar;
    ``excluded``: why qc.exclude or qc.exclude_flagged leaves the session out, if one does."""
    label = f"sub-{subject} ses-{session}"
    nav = " ".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in links.items())
    body = [f"<nav>{nav} <a href=\"#figures\">Reportlets</a> <a href=\"#qc\">QC</a> "
            f"<a href=\"#facts\">Facts</a></nav>",
            f"<h1>{escape(label)}</h1>", _flag_block(row)]
    if excluded:
        body.append(f'<p class="note">Left out of training and assessment by '
                    f"{escape(excluded)}. Its preprocessing is shown; it has no relevance "
                    f"map.</p>")
    body.append('<h2 id="figures">Reportlets</h2>')
    for name, link in figures:
        title, caption = CAPTIONS[name]
        body += [f'<figure id="fig-{escape(name)}">', f"<h3>{escape(title)}</h3>",
                 f'<object type="image/svg+xml" data="{escape(link)}">{escape(name)}</object>',
                 f'<figcaption>{escape(caption)}<br>File: <a href="{escape(link)}">'
                 f"{escape(link)}</a></figcaption>", "</figure>"]
    named = named_figures(row)
    body += ['<h2 id="qc">Quality-control figures</h2>', '<table class="qc">',
             "<tr><th>figure</th><th>this session</th><th>cohort median</th></tr>"]
    for column, value in row.items():
        if column in NOT_FIGURES:
            continue
        cls = ' class="named"' if column in named else ""
        median = _value(medians[column]) if column in medians else ""
        body.append(f"<tr><td{cls}>{escape(str(column))}</td><td{cls}>{escape(_value(value))}"
                    f"</td><td>{escape(median)}</td></tr>")
    body += ["</table>", '<h2 id="facts">Key facts of the steps</h2>']
    for heading, items in facts:
        body += [f"<h3>{escape(heading)}</h3>", "<table>"]
        body += [f"<tr><th>{escape(k)}</th><td>{escape(_value(v))}</td></tr>" for k, v in items]
        body.append("</table>")
    return _page(f"{label}: gamer-mril session report", body)


#: Shown by the index's script when it is opened inside Snakemake's report (embedded as a
#: data: URI in report.html, or under data/raw/ of report.zip), where its links break.
EMBEDDED_NOTE = (
    "This index is shown inside the Snakemake report, where its links to the session "
    "pages cannot open. Open results/group/sessions.html itself, or use the links in "
    "this item's description (they work when report.html is in results/).")
_EMBEDDED_SCRIPT = ("if (location.protocol === 'data:' || /\\/data\\/raw\\//.test("
                    "location.pathname)) document.getElementById('embedded').hidden = false;")


def index_page(table: pd.DataFrame, pages: Mapping, excluded: Mapping | None = None) -> str:
    """The HTML of the cohort's index: every session of ``table`` (the QC table) with
    its flag, reasons, whether it is left out and its figures, linked to its page.
    ``pages``: {(subject, session): relative link}; ``excluded``: {"sub-X_ses-Y":
    "<setting>: <reason>"} (:func:`excluded_reasons`)."""
    excluded = dict(excluded or {})
    flagged = sum(_flagged(r) for r in table.to_dict("records"))
    figures = [c for c in table.columns if c not in NOT_FIGURES]
    body = [f'<p class="note" id="embedded" hidden>{escape(EMBEDDED_NOTE)}</p>',
            "<h1>Sessions</h1>",
            f"<p>{len(table)} sessions, {flagged} flagged by the preprocessing QC, "
            f"{len(excluded)} left out (qc.exclude, qc.exclude_flagged). Each session's "
            f"page shows its "
            f"reportlets and its QC row; flagged rows are highlighted.</p>",
            '<table class="index">',
            "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in
                             ("session", "flag", "reasons", "left out", *figures)) + "</tr>"]
    for row in table.to_dict("records"):
        subject, session = str(row["subject"]), str(row["session"])
        key = f"sub-{subject}_ses-{session}"
        if (subject, session) not in pages:
            raise ValueError(f"{key}: in the QC table but no page was given for it")
        cls = ' class="flagged"' if _flagged(row) else ""
        cells = [f'<a href="{escape(pages[(subject, session)])}">{escape(key)}</a>',
                 "flagged" if _flagged(row) else "",
                 escape("; ".join(_reasons(row))), escape(excluded.get(key, ""))]
        cells += [escape(_value(row[c])) for c in figures]
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    body.append("</table>")
    return _page("gamer-mril: sessions", body, _EMBEDDED_SCRIPT)


# --------------------------------------------------------------------------- jobs
def _facts_of(path, session: str) -> dict:
    from .io import sidecar_path

    side = sidecar_path(path)
    try:
        return json.loads(side.read_text()).get("Facts", {})
    except FileNotFoundError:
        raise ValueError(f"{session}: {side}: the sidecar of {path} is missing; rerun the "
                         f"rule that wrote it") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{session}: {side}: not valid JSON ({err})") from None


def key_facts(scaled: Mapping, coreg: Mapping, relmap=None, relevance_reportlet=None,
              session: str = "") -> list:
    """(heading, [(label, value)]) blocks from the steps' sidecars: ``scaled``
    {contrast: scaled map}, ``coreg`` {contrast: transform to NDI}, the relevance map
    (its model, logit, probability, attention) and the relevance reportlet (scenario,
    level), each read from the sidecar beside the file."""
    blocks = []
    for contrast, path in scaled.items():
        f = _facts_of(path, session)
        blocks.append((f"Scaling of {contrast} (step 1)",
                       [(label, f.get(key)) for label, key in SCALING_FACTS]))
    for contrast, path in coreg.items():
        f = _facts_of(path, session)
        blocks.append((f"Co-registration of {contrast} to NDI (step 3)",
                       [(label, f.get(key)) for label, key in COREG_FACTS]))
    if relmap is not None:
        f = _facts_of(relmap, session)
        model = f.get("model", {})
        items = [("model", Path(str(model.get("folder", "?"))).name),
                 ("model epoch", model.get("epoch")),
                 ("model validation AUC", model.get("val_auc")),
                 ("logit", f.get("logit")), ("probability of severe", f.get("prob")),
                 ("attention", f.get("attention"))]
        if relevance_reportlet is not None:
            r = _facts_of(relevance_reportlet, session)
            items += [("reportlet's scenario", r.get("Scenario")),
                      ("reportlet's top-N level", r.get("Level"))]
        blocks.append(("Relevance map (section 6)", items))
    return blocks


def excluded_reasons(path) -> dict:
    """{"sub-X_ses-Y": "<setting>: <reason>"} of the sessions left out, from the table the
    checkpoint analysed_sessions writes (columns subject, session, by, reason)."""
    from .io import read_session_table

    table = read_session_table(path)
    return {f"sub-{r['subject']}_ses-{r['session']}": f"{r['by']}: {r['reason']}"
            for r in table.to_dict("records")}


def session_inputs(inputs: Mapping) -> tuple:
    """A session_report job's named inputs, split: (reportlets {name: SVG}, QC table,
    scaled maps {contrast: path}, transforms to NDI {contrast: path}, relevance map or
    None). ``inputs``: ``qc_table``, ``scaled_<contrast>``, ``coreg_<contrast>``,
    ``relmap`` (analysed sessions) and the reportlets by their names in :data:`CAPTIONS`."""
    known = {"qc_table", "relmap", "excluded_table"} | set(CAPTIONS)
    other = [k for k in inputs if k not in known and not k.startswith(("scaled_", "coreg_"))]
    if other or "qc_table" not in inputs:
        raise ValueError(f"session_report's inputs: unknown {other}, or no qc_table; "
                         f"expected qc_table, scaled_*, coreg_*, relmap and some of "
                         f"{list(CAPTIONS)}")
    reportlets = {k: str(v) for k, v in inputs.items() if k in CAPTIONS}
    scaled = {k[len("scaled_"):]: str(v) for k, v in inputs.items() if k.startswith("scaled_")}
    coreg = {k[len("coreg_"):]: str(v) for k, v in inputs.items() if k.startswith("coreg_")}
    relmap = inputs.get("relmap")
    return reportlets, str(inputs["qc_table"]), scaled, coreg, str(relmap) if relmap else None


def run_session_report(inputs: Mapping, out, *, report=None, index=None,
                       subject, session, log_file=None, threads: int = 1) -> None:
    """Rule session_report: the session's page at ``out``. ``inputs``: as
    :func:`session_inputs` reads them (every reportlet under the page's folder);
    ``report``, ``index``: the cohort report and the index of sessions, linked from the
    navigation bar. Whether (and why) the session is left out is read from the
    ``excluded_table`` input (the checkpoint analysed_sessions' table), when given."""
    from .io import atomic_write_text, read_session_table
    from .jobs import session_label, step

    label = session_label(subject, session)
    reportlets, qc_table, scaled, coreg, relmap = session_inputs(inputs)
    excluded = (excluded_reasons(inputs["excluded_table"]).get(
        f"sub-{subject}_ses-{session}") if inputs.get("excluded_table") else None)
    with step("session_report", inputs={k: str(v) for k, v in inputs.items()},
              params={"report": report, "index": index},
              outputs=[out], log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        for name, path in reportlets.items():
            if not Path(path).is_file():
                raise ValueError(f"{label}: reportlet {name} {path} does not exist")
        table = read_session_table(qc_table)
        row = qc_row(table, subject, session, qc_table)
        figures = [(n, relative_link(reportlets[n], out, inside=True))
                   for n in CAPTIONS if n in reportlets]
        facts = key_facts(scaled, coreg, relmap, reportlets.get("relevance") if relmap
                          else None, session=label)
        links = {text: relative_link(path, out) for text, path in
                 (("Cohort report", report), ("All sessions", index)) if path}
        atomic_write_text(out, session_page(subject, session, row, cohort_medians(table),
                                            figures, facts, links, excluded))
        s.sidecar(out, {"Reportlets": [n for n, _ in figures], "Flagged": _flagged(row),
                        "Excluded": excluded or None})


_PAGE_NAME = re.compile(r"^sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)\.html$")


def run_session_index(qc_table, pages, out, *, excluded_table=None,
                      log_file=None, threads: int = 1) -> None:
    """Rule session_index: the index of every session's page (``pages``: the pages of
    the QC table's sessions, named as :attr:`gamer_mril.layout.Session.page` names them).
    ``excluded_table``: the sessions left out, as the checkpoint analysed_sessions writes
    them."""
    from .io import atomic_write_text, read_session_table
    from .jobs import step

    exclude = excluded_reasons(excluded_table) if excluded_table else {}
    inputs = {"qc_table": qc_table, "pages": list(pages),
              **({"excluded_table": excluded_table} if excluded_table else {})}
    with step("session_index", inputs=inputs, outputs=[out], log_file=log_file,
              threads=threads) as s:
        table = read_session_table(qc_table)
        links = {}
        for page in pages:
            if not Path(page).is_file():
                raise ValueError(f"{page}: a session page of the index does not exist")
            m = _PAGE_NAME.search(Path(page).name)
            if not m:
                raise ValueError(f"{page}: not a session page's name (sub-X_ses-Y.html)")
            links[(m["subject"], m["session"])] = relative_link(page, out)
        atomic_write_text(out, index_page(table, links, exclude))
        s.sidecar(out, {"Sessions": len(table),
                        "Flagged": int(sum(_flagged(r) for r in table.to_dict("records")))})
