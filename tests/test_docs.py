"""The method page (docs/method.md) and the references to it.

* every link to a section of the method page written anywhere in the repository names a heading that
  docs/method.md has (anchors computed as GitHub computes them);
* no tracked file points at the retired method page or at paths outside the repository;
* docs/method.md keeps the numbered headings other files link to.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

#: Headings other files link to, in order; their anchors must not change.
HEADINGS = [
    "# The GAMER-MRIL method, as this workflow implements it",
    "## 0. Words",
    "## 1. Inputs",
    "## 2. Preprocessing",
    "### 2.1 Range checks and scaling",
    "### 2.2 Brain mask and template registration",
    "### 2.3 Co-registration to NDI",
    "### 2.4 Resampling to the NDI grid",
    "### 2.5 Crop",
    "### 2.6 Registration to MNI152",
    "### 2.7 Cerebellum removal",
    "### 2.8 Quality control numbers",
    "## 3. Split",
    "## 4. Network",
    "## 5. Training",
    "### 5.1 Table II and its intervals",
    "## 6. Layer-wise relevance propagation",
    "### 6.1 Canonization",
    "### 6.2 Rules per layer",
    "### 6.3 Element-wise products",
    "### 6.4 Where relevance starts",
    "### 6.5 Combined maps",
    "### 6.6 Gradient baselines",
    "### 6.7 The twelve scenarios",
    "### 6.8 Beyond the paper: scenarios 13 to 20",
    "## 7. Assessment",
    "### 7.1 Assessment set",
    "### 7.2 Quantile masks",
    "### 7.3 Voxel inverting",
    "### 7.4 Controls and uncertainty of voxel inverting",
    "### 7.5 Correlation with EDSS",
    "### 7.6 Template space and group heatmaps",
    "### 7.7 Group statistics in MNI152",
    "## 8. Decisions the paper leaves open",
    "## 9. Where each stage lives",
    "## 10. What the paper reports",
]

#: Strings no tracked file may hold, built in pieces so that this file does not hold them.
FORBIDDEN = ("METHOD" + ".md", ".." + "/shared", "/" + "work/")

_REF = re.compile(r"method\.md#([\w-]+)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text: lower case, every character that is not a
    letter, digit, space, hyphen or underscore dropped, spaces turned into hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(path: Path) -> list:
    """The ATX headings of a Markdown file (``#`` lines outside fenced code blocks)."""
    out, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            mark = stripped[:3]
            fence = None if fence == mark else (fence or mark)
            continue
        if fence is None:
            m = _HEADING.match(line)
            if m:
                out.append(line.rstrip())
    return out


def anchors(path: Path) -> set:
    return {github_anchor(_HEADING.match(h).group(2)) for h in headings(path)}


def tracked_text_files() -> dict:
    """{relative path: text} of every tracked file that is a readable text file, plus
    docs/method.md itself (tracked or not)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    names = {n for n in listing.decode("utf-8", "surrogateescape").split("\0") if n}
    names.add(str(METHOD.relative_to(ROOT)))
    out = {}
    for name in sorted(names):
        path = ROOT / name
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue                                   # binary (images, arrays)
        try:
            out[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def test_github_anchor():
    assert github_anchor("## 2.3 Co-registration to NDI".lstrip("# ")) == \
        "23-co-registration-to-ndi"
    assert github_anchor("The GAMER-MRIL method, as this workflow implements it") == \
        "the-gamer-mril-method-as-this-workflow-implements-it"
    assert github_anchor("6.4 Where relevance starts") == "64-where-relevance-starts"


def test_method_page_has_the_headings():
    found = headings(METHOD)
    missing = [h for h in HEADINGS if h not in found]
    assert not missing, f"docs/method.md lacks the headings {missing}"
    assert [h for h in found if h in HEADINGS] == HEADINGS, "headings out of order"
    ids = [github_anchor(_HEADING.match(h).group(2)) for h in found]
    dupes = sorted({a for a in ids if ids.count(a) > 1})
    assert not dupes, f"headings with the same anchor (GitHub would number them): {dupes}"


def test_every_method_anchor_exists():
    known = anchors(METHOD)
    bad = []
    for name, text in tracked_text_files().items():
        for number, line in enumerate(text.splitlines(), start=1):
            for anchor in _REF.findall(line):
                if anchor not in known:
                    bad.append(f"{name}:{number}: method.md#{anchor}")
    assert not bad, "references to anchors docs/method.md does not have:\n" + "\n".join(bad)


def test_no_retired_or_outside_paths():
    bad = []
    for name, text in tracked_text_files().items():
        for number, line in enumerate(text.splitlines(), start=1):
            for needle in FORBIDDEN:
                if needle in line:
                    bad.append(f"{name}:{number}: {needle!r}: {line.strip()}")
    assert not bad, "tracked files that name paths outside the repository or the " \
                    "retired method page:\n" + "\n".join(bad)
