"""The report and a session page in a real browser: headless Chromium (Debian's package)
opens the Snakemake report, goes to the Quality control category and opens the index of
the session pages, as a user clicks; it opens the heatmap viewer; and it opens one
session's page (results/sub-X/sub-X_ses-Y.html), which must reference its reportlets by
relative path, every referenced file existing, and show them. Each screenshot of a figure
must show an image, not a blank page (many distinct colours where the figure should be).

The report is ``$GAMER_MRIL_REPORT`` (a report.zip, as ``make demo`` writes it, beside
report.html and the session pages in results/; ``make check-report`` sets it and keeps
the screenshots in ``results/screenshots/``), or else the one of the 8-session run of the
other workflow tests, whose HTML report is written into its results/ for the test and
removed after it. Without Chromium the test is skipped, saying so; ``make check-report``
installs it (apt-get) when missing.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

from .conftest import run_snakemake, training_config

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Clicks of a user, appended to a copy of the report page: the category, then the eye
#: button of the row of the index of session pages; the title then says what the frame
#: that shows it holds (its source and its table's rows).
CLICKS = """
<script>
(function () {
  function byText(text) {
    return [...document.querySelectorAll("a, button, li, span, div, td")].reverse()
      .find(e => e.textContent.trim() === text);
  }
  function show(text) {
    const row = [...document.querySelectorAll("tr")].find(r => r.textContent.includes(text));
    const a = row && row.querySelector("a");
    if (a) a.dispatchEvent(new MouseEvent("click", {bubbles: true}));
    return !!a;
  }
  setTimeout(() => { byText("Quality control").click();
    setTimeout(() => { const shown = show("sessions.html");
      setTimeout(() => {
        const frame = document.querySelector("iframe");
        let rows = -1;
        try { rows = frame.contentDocument.querySelectorAll("table.index tr").length - 1; }
        catch (e) { rows = -2; }
        document.title = (shown ? "shown" : "missing") + " | "
          + (frame ? frame.getAttribute("src") : "no frame") + " | " + rows;
      }, 1500);
    }, 800);
  }, 2000);
})();
</script>
"""


#: Distinct colours of the index's screenshot right of the navigation bar: its table's
#: text and rules (the bar alone, left of it, has a few dozen).
INDEX_COLOURS = 100


def chromium(url: str, *args, size=(1400, 1000)) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--allow-file-access-from-files", f"--window-size={size[0]},{size[1]}",
         "--virtual-time-budget=20000", *args, url],
        capture_output=True, text=True, timeout=180)


def screenshot(url: str, png: Path, size=(1400, 1000)) -> None:
    proc = chromium(url, f"--screenshot={png}", size=size)
    assert png.exists(), proc.stderr[-2000:]


def title_after_scripts(url: str) -> str:
    """The page's title once its scripts have run (Chromium's --dump-dom)."""
    proc = chromium(url, "--dump-dom")
    m = re.search(r"<title>(.*?)</title>", proc.stdout, re.S)
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    return html.unescape(m.group(1)).strip()


def distinct_colours(png: Path, left: float = 0.0) -> int:
    """Distinct RGB colours of the screenshot, right of ``left`` (a fraction of its width)."""
    from matplotlib.image import imread

    rgb = (imread(png)[..., :3] * 255).astype(np.uint8)
    rgb = rgb[:, int(left * rgb.shape[1]):]
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


class Links(HTMLParser):
    """Every (tag, link) of a page's href, src and data attributes."""

    def __init__(self, text):
        super().__init__()
        self.links = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.links += [(tag, v) for k, v in attrs if k in ("href", "src", "data") and v]


@pytest.fixture(scope="module")
def results_dir(request):
    if CHROMIUM is None:
        pytest.skip("no Chromium here (make check-report installs Debian's chromium)")
    given = os.environ.get("GAMER_MRIL_REPORT")
    return Path(given).parent if given else request.getfixturevalue("trained") / "results"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, request, results_dir):
    given = os.environ.get("GAMER_MRIL_REPORT")
    if given:
        report = Path(given)
    else:
        trained = request.getfixturevalue("trained")
        cohort = request.getfixturevalue("training_cohort")
        report = trained / "report_browser.zip"
        proc = run_snakemake(trained, training_config(cohort), "--report", str(report))
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path_factory.mktemp("report")
    zipfile.ZipFile(report).extractall(out)
    [html_file] = list(out.rglob("report.html"))
    return html_file.parent


@pytest.fixture(scope="module")
def html_report(request, results_dir):
    """The HTML report in results/, where make demo writes it (for the 8-session run:
    written there for these tests, removed after them)."""
    report = results_dir / "report.html"
    if os.environ.get("GAMER_MRIL_REPORT"):
        assert report.is_file(), f"{report}: missing; make demo writes it beside report.zip"
        yield report
        return
    trained = request.getfixturevalue("trained")
    proc = run_snakemake(trained, training_config(request.getfixturevalue("training_cohort")),
                         "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield report
    report.unlink()


def _keep(png: Path) -> None:
    keep = os.environ.get("GAMER_MRIL_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)


def _qc(results_dir) -> pd.DataFrame:
    return pd.read_csv(results_dir / "group" / "preprocessing_qc.tsv", sep="\t",
                       dtype={"subject": str, "session": str})


def test_quality_control_page_shows_the_session_index(report_dir, results_dir):
    page = report_dir / "qc_view.html"
    page.write_text((report_dir / "report.html").read_text() + CLICKS)
    shown, src, rows = title_after_scripts(page.as_uri()).split(" | ")
    assert shown == "shown" and src.endswith("/sessions.html"), (shown, src)
    assert int(rows) == len(_qc(results_dir))            # one row per session
    png = report_dir.parent / "report_quality_control.png"
    screenshot(page.as_uri(), png)
    _keep(png)
    # the navigation bar alone has a few dozen colours; the index's table more, right of it
    assert distinct_colours(png, left=0.3) > INDEX_COLOURS


def test_the_html_report_links_every_session_page_and_embeds_no_reportlet(html_report,
                                                                          results_dir):
    text = html_report.read_text()
    assert html_report.stat().st_size < 25e6
    # no reportlet (nor any other SVG) among the report's items
    assert not re.findall(r'"filename": "[^"]+[.]svg"', text)
    for subject, session in zip(*map(_qc(results_dir).get, ("subject", "session"))):
        link = f"sub-{subject}/sub-{subject}_ses-{session}.html"
        assert f'href=\\"{link}\\"' in text, link          # in the index's caption
        assert (html_report.parent / link).is_file(), link


def test_a_session_page_shows_its_reportlets(results_dir, html_report, tmp_path):
    qc = _qc(results_dir)
    row = qc[qc["qc_flag"]].iloc[0] if qc["qc_flag"].any() else qc.iloc[0]
    page = results_dir / f"sub-{row.subject}" / f"sub-{row.subject}_ses-{row.session}.html"
    links = Links(page.read_text()).links
    figures = [link for tag, link in links if tag == "object"]
    assert len(figures) >= 5, figures
    for tag, link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), link
        if parts.path:
            assert (page.parent / parts.path).is_file(), link
    assert all(link.startswith(f"ses-{row.session}/figures/") for link in figures)
    png = tmp_path / "session_page.png"
    screenshot(page.as_uri(), png, size=(1400, 1400))
    _keep(png)
    # the reportlets' brain images: hundreds of colours
    assert distinct_colours(png) > 200


def test_heatmap_viewer_draws_the_brain(report_dir):
    [viewer] = list(report_dir.rglob("heatmap_viewer.html"))
    png = report_dir.parent / "heatmap_viewer.png"
    screenshot(viewer.as_uri(), png, size=(1000, 1400))
    _keep(png)
    assert distinct_colours(png) > 200
