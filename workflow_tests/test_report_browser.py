"""The report in a real browser: headless Chromium (Debian's package) opens the Snakemake
report, goes to the Quality control category, a session, and one of its reportlets, as a
user clicks; and it opens the heatmap viewer. Each screenshot must show an image, not a
blank page (many distinct colours where the figure should be).

The report is ``$GAMER_MRIL_REPORT`` (a report.zip, as ``make demo`` writes it; ``make
check-report`` sets it and keeps the screenshots in ``results/screenshots/``), or else the
one of the 8-session run of the other workflow tests. Without Chromium the test is
skipped, saying so; ``make check-report`` installs it (apt-get) when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_snakemake, training_config

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Clicks of a user, appended to a copy of the report page: the category, the session
#: (subcategory), then the eye button of one reportlet's row.
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
    setTimeout(() => { byText(%(session)s).click();
      setTimeout(() => { document.title = show(%(figure)s) ? "shown" : "missing"; }, 800);
    }, 800);
  }, 2000);
})();
</script>
"""


def screenshot(url: str, png: Path, size=(1400, 1000)) -> None:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--allow-file-access-from-files", f"--window-size={size[0]},{size[1]}",
         "--virtual-time-budget=20000", f"--screenshot={png}", url],
        capture_output=True, text=True, timeout=180)
    assert png.exists(), proc.stderr[-2000:]


def distinct_colours(png: Path, left: float = 0.0) -> int:
    """Distinct RGB colours of the screenshot, right of ``left`` (a fraction of its width)."""
    from matplotlib.image import imread

    rgb = (imread(png)[..., :3] * 255).astype(np.uint8)
    rgb = rgb[:, int(left * rgb.shape[1]):]
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, request):
    if CHROMIUM is None:
        pytest.skip("no Chromium here (make check-report installs Debian's chromium)")
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
    [html] = list(out.rglob("report.html"))
    return html.parent


def _keep(png: Path) -> None:
    keep = os.environ.get("GAMER_MRIL_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)


def test_quality_control_page_shows_a_reportlet(report_dir):
    svg = sorted(report_dir.rglob("*_desc-qc_coregT1map.svg"))[0]
    subject, session = svg.name.split("_")[:2]
    label = f"{subject} {session}"                     # the report's subcategory: sub-X ses-Y
    page = report_dir / "qc_view.html"
    page.write_text((report_dir / "report.html").read_text()
                    + CLICKS % {"session": repr(label), "figure": '"coregT1map"'})
    png = report_dir.parent / "report_quality_control.png"
    screenshot(page.as_uri(), png)
    _keep(png)
    # the navigation bar alone has a few dozen colours; the reportlet's brain images
    # hundreds, right of it
    assert distinct_colours(png, left=0.3) > 200


def test_heatmap_viewer_draws_the_brain(report_dir):
    [viewer] = list(report_dir.rglob("heatmap_viewer.html"))
    png = report_dir.parent / "heatmap_viewer.png"
    screenshot(viewer.as_uri(), png, size=(1000, 1400))
    _keep(png)
    assert distinct_colours(png) > 200
