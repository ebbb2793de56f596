"""The per-session report pages and their index (gamer_mril/session_page.py), from
constructed inputs: every link relative and resolving to a file, the flagged session's
reasons highlighted, the figures its reasons name marked, the cohort's medians computed by
hand, the HTML well formed as html.parser reads it, and the index linking every session."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

from gamer_mril.io import sidecar_path
from gamer_mril.layout import REPORTLETS, Session
from gamer_mril.session_page import (
    CAPTIONS,
    EMBEDDED_NOTE,
    relative_link,
    run_session_index,
    run_session_report,
)

VOID = {"meta", "link", "br", "img", "hr", "input", "source"}
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" viewBox="0 0 40 20">'
       '<rect width="40" height="20" fill="#808080"/></svg>')
REASONS = ("nmi_ndi_T1map 0.100 below the cohort's 0.340 - 3 x 0.010 (co-registration to "
           "NDI suspect); Dice with the template brain mask 0.700 < 0.8")


class Page(HTMLParser):
    """Tags checked to nest and close, every link attribute, and each text with the
    classes of the elements around it."""

    def __init__(self, text):
        super().__init__()
        self.stack, self.errors, self.links, self.texts = [], [], [], []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {[t for t, _ in self.stack]}")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src", "data"):
            if name in attrs:
                self.links.append((tag, attrs[name]))
        if tag not in VOID:
            self.stack.append((tag, set((attrs.get("class") or "").split())))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else None}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if data.strip():
            self.texts.append((data.strip(), set().union(*(c for _, c in self.stack))))

    def classes_of(self, text):
        return [c for t, c in self.texts if t == text]


def _facts(path, facts):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"image")
    sidecar_path(path).write_text(json.dumps({"Facts": facts}))


def _session_files(root, subject, session, relevance=True):
    """The inputs of a session_report job, as the workflow names them."""
    s = Session(root, subject, session)
    inputs = {}
    for name in REPORTLETS + (("relevance",) if relevance else ()):
        p = Path(s.reportlet(name))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(SVG)
        inputs[name] = str(p)
    for contrast, suffix in (("qT1", "T1map"), ("MWF", "MWFmap"), ("NDI", "NDImap")):
        inputs[f"scaled_{contrast}"] = s.scaled(suffix)
        _facts(s.scaled(suffix), {"DeclaredUnit": "ms" if contrast == "qT1" else "fraction",
                                  "StoredOrientation": "LAS", "Orientation": "RAS",
                                  "VoxelSize_mm": [2.0, 2.0, 2.0]})
    for contrast, suffix in (("qT1", "T1map"), ("MWF", "MWFmap")):
        inputs[f"coreg_{contrast}"] = s.xfm_to_ndi(suffix)
        _facts(s.xfm_to_ndi(suffix), {"Transform": "Rigid", "Metric": "MattesMutualInformation",
                                      "Start": "rotation search"})
    if relevance:
        inputs["relmap"] = s.relmaps("NDIcrop")
        _facts(s.relmaps("NDIcrop"), {"model": {"folder": "results/models/fold-1",
                                                "epoch": 7, "val_auc": 0.75},
                                      "logit": 1.5, "prob": 0.8176,
                                      "attention": {"qT1": 0.2, "MWF": 0.5, "NDI": 0.3}})
        sidecar_path(s.reportlet("relevance")).write_text(
            json.dumps({"Facts": {"Scenario": 3, "Level": 40}}))
    return s, inputs


@pytest.fixture()
def cohort(tmp_path):
    root = tmp_path / "results"
    table = pd.DataFrame({
        "subject": ["001", "002", "003"], "session": ["1", "1", "2"],
        "brain_ml": [1000.0, 1400.0, 1200.0], "nmi_ndi_T1map": [0.34, 0.10, 0.35],
        "dice_template_brain": [0.95, 0.70, 0.93],
        "qc_flag": [False, True, False], "qc_reasons": ["", REASONS, ""]})
    (root / "group").mkdir(parents=True)
    qc = root / "group" / "preprocessing_qc.tsv"
    table.to_csv(qc, sep="\t", index=False)
    return root, qc


def _excluded_table(root, rows):
    """The table the checkpoint analysed_sessions writes: subject, session, by, reason."""
    path = root / "group" / "excluded_sessions.tsv"
    pd.DataFrame(rows, columns=["subject", "session", "by", "reason"]).to_csv(
        path, sep="\t", index=False)
    return str(path)


def _report(root, qc, subject, session, relevance=True, excluded=()):
    s, inputs = _session_files(root, subject, session, relevance)
    table = _excluded_table(root, list(excluded))
    run_session_report({**inputs, "qc_table": str(qc), "excluded_table": table}, s.page,
                       report=f"{root}/report.html", index=f"{root}/group/sessions.html",
                       subject=subject, session=session)
    return s, Page(Path(s.page).read_text())


def test_a_flagged_page_references_its_reportlets_relatively_and_highlights_why(cohort):
    root, qc = cohort
    s, page = _report(root, qc, "002", "1")
    assert s.page == f"{root}/sub-002/sub-002_ses-1.html"
    assert page.errors == []
    objects = [link for tag, link in page.links if tag == "object"]
    # every reportlet, in the captions' order, by its path under the page's folder
    assert objects == [f"ses-1/figures/sub-002_ses-1_desc-qc_{n}.svg" for n in CAPTIONS]
    # the navigation bar's links to the cohort report and the index (written later) ...
    nav = [("a", "../report.html"), ("a", "../group/sessions.html")]
    assert all(link in page.links for link in nav)
    # ... and every other link relative, resolving to a file ("#qc" and such stay here)
    for tag, link in page.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), link
        if parts.path and (tag, link) not in nav:
            assert (Path(s.page).parent / parts.path).resolve().is_file(), link
    assert "<svg" not in Path(s.page).read_text()            # referenced, not embedded
    # the flag and each reason inside the highlighted block
    for reason in REASONS.split("; "):
        assert page.classes_of(reason) and all("flagged" in c for c in page.classes_of(reason))
    # the figures the reasons name are marked, the others not
    for column, marked in (("nmi_ndi_T1map", True), ("dice_template_brain", True),
                           ("brain_ml", False)):
        [classes] = page.classes_of(column)
        assert ("named" in classes) is marked, column
    # this session's value and the cohort's median (1000, 1400, 1200 -> 1200) of a figure
    texts = [t for t, _ in page.texts]
    i = texts.index("brain_ml")
    assert texts[i + 1:i + 3] == ["1400", "1200"]
    # the sidecars' facts and every caption
    for text in ("LAS", "rotation search", "fold-1", "0.8176", "qT1 0.2; MWF 0.5; NDI 0.3"):
        assert text in texts, text
    assert all(caption in texts for _, caption in CAPTIONS.values())
    side = json.loads(sidecar_path(s.page).read_text())
    assert side["Facts"]["Flagged"] is True and side["Facts"]["Reportlets"] == list(CAPTIONS)
    assert side["Inputs"]["qc_table"][0]["sha256"] and set(side["Inputs"]) >= set(CAPTIONS)


def test_an_unflagged_page_says_so(cohort):
    root, qc = cohort
    _, page = _report(root, qc, "001", "1")
    [classes] = page.classes_of("Not flagged by the preprocessing QC.")
    assert "ok" in classes
    assert not any("named" in c for _, c in page.texts)


def test_an_excluded_session_has_no_relevance_and_says_why(cohort):
    root, qc = cohort
    s, page = _report(root, qc, "003", "2", relevance=False,
                      excluded=[("003", "2", "qc.exclude_flagged", "QC flag: motion"),
                                ("001", "1", "qc.exclude", "other")])
    objects = [link for tag, link in page.links if tag == "object"]
    assert objects == [f"ses-2/figures/sub-003_ses-2_desc-qc_{n}.svg" for n in REPORTLETS]
    assert any("qc.exclude_flagged: QC flag: motion" in t for t, _ in page.texts)
    assert not any("other" in t for t, _ in page.texts)
    assert "Relevance map (section 6)" not in [t for t, _ in page.texts]


def test_the_index_links_every_session_and_highlights_the_flagged(cohort):
    root, qc = cohort
    pages = [_report(root, qc, sub, ses, relevance=sub != "003")[0].page
             for sub, ses in (("001", "1"), ("002", "1"), ("003", "2"))]
    out = root / "group" / "sessions.html"
    run_session_index(str(qc), pages, str(out), excluded_table=_excluded_table(
        root, [("003", "2", "qc.exclude", "motion")]))
    page = Page(out.read_text())
    assert page.errors == []
    links = [link for tag, link in page.links if tag == "a"]
    assert links == ["../sub-001/sub-001_ses-1.html", "../sub-002/sub-002_ses-1.html",
                     "../sub-003/sub-003_ses-2.html"]
    assert all((out.parent / link).resolve() == Path(p).resolve()
               for link, p in zip(links, pages))
    [classes] = page.classes_of("sub-002_ses-1")
    assert "flagged" in classes
    assert "flagged" not in page.classes_of("sub-001_ses-1")[0]
    assert page.classes_of("qc.exclude: motion")
    # the note for a copy embedded in Snakemake's report, hidden unless the script shows it
    assert '<p class="note" id="embedded" hidden>' in out.read_text()
    assert EMBEDDED_NOTE in [t for t, _ in page.texts]
    assert json.loads(sidecar_path(out).read_text())["Facts"] == {"Sessions": 3, "Flagged": 1}


def test_an_index_without_a_sessions_page_names_it(cohort):
    root, qc = cohort
    pages = [_report(root, qc, "001", "1")[0].page]
    with pytest.raises(ValueError, match="sub-002_ses-1: in the QC table but no page"):
        run_session_index(str(qc), pages, str(root / "group" / "sessions.html"))


def test_a_reportlet_outside_the_page_folder_is_refused(tmp_path):
    page = tmp_path / "results" / "sub-001" / "sub-001_ses-1.html"
    inside = tmp_path / "results" / "sub-001" / "ses-1" / "figures" / "x.svg"
    assert relative_link(inside, page, inside=True) == "ses-1/figures/x.svg"
    with pytest.raises(ValueError, match="not under the folder of the page"):
        relative_link(tmp_path / "elsewhere" / "x.svg", page, inside=True)


def test_errors_name_the_session_and_the_file(cohort):
    root, qc = cohort
    s, inputs = _session_files(root, "001", "1")
    sidecar_path(inputs["coreg_MWF"]).unlink()
    with pytest.raises(ValueError, match=r"sub-001 ses-1: .*from-MWFmap_to-NDI.*json: the "
                                         r"sidecar .* is missing"):
        run_session_report({**inputs, "qc_table": str(qc)}, s.page, subject="001",
                           session="1")
    assert not Path(s.page).exists()
    s, inputs = _session_files(root, "009", "1")
    with pytest.raises(ValueError, match=r"sub-009 ses-1: 0 rows in .*preprocessing_qc.tsv"):
        run_session_report({**inputs, "qc_table": str(qc)}, s.page, subject="009",
                           session="1")
