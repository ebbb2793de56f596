"""Reportlets (gamer_mril.reportlets, drawn by nireports): valid standalone SVG with the
expected frames -- a flicker has a background and a foreground layer, each with the three
views (axial, sagittal, coronal) and their cuts; a static reportlet has the three views."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nireports")

from gamer_mril.reportlets import contour_reportlet, flicker_reportlet, masks_reportlet  # noqa: E402

NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("reportlets")
    grid = np.stack(np.meshgrid(*[np.arange(24)] * 3, indexing="ij"))
    r = np.sqrt(((grid - 11.5) ** 2).sum(0))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    files = {}
    for name, data in (("anat", np.clip(1 - r / 14, 0, 1) + 0.1 * (grid[0] % 4 == 0)),
                       ("moved", np.clip(1 - np.roll(r, 2, axis=0) / 14, 0, 1)),
                       ("mask", (r < 9).astype(np.uint8)),
                       ("inner", (r < 4).astype(np.uint8))):
        files[name] = d / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32 if name in ("anat", "moved")
                                             else np.uint8), affine), files[name])
    return d, files


def _views(layer):
    """The view groups (one nilearn figure each) directly under a layer."""
    return [g for g in layer if g.tag == NS + "g"]


def test_flicker_has_two_layers_of_three_views(images):
    d, f = images
    out = d / "flicker.svg"
    flicker_reportlet(f["anat"], f["moved"], f["mask"], out, labels=("fixed", "moved"),
                      cuts=3)
    root = ET.parse(out).getroot()
    assert root.tag == NS + "svg"
    layers = {g.get("class"): g for g in root.iter(NS + "g") if g.get("class")}
    assert set(layers) == {"background-svg", "foreground-svg"}
    for layer in layers.values():
        assert len(_views(layer)) == 3
        assert len(list(layer.iter(NS + "image"))) >= 3 * 3    # every cut drawn
    assert "@keyframes" in out.read_text()                    # the flicker animation


def test_static_reportlets_have_three_views_and_more_cuts_when_asked(images):
    d, f = images
    counts = {}
    for cuts in (2, 5):
        out = d / f"contour{cuts}.svg"
        contour_reportlet(f["anat"], f["mask"], out, label="mask", cuts=cuts)
        root = ET.parse(out).getroot()
        [top] = [g for g in root if g.tag == NS + "g"]
        assert not [g for g in root.iter(NS + "g") if g.get("class")]     # no flicker
        assert len(_views(top)) == 3
        counts[cuts] = len(list(root.iter(NS + "image")))
    # three more cuts per view, each drawn as the same number of images (one, or two
    # when the slices are embedded unresampled), over the same fixed rest
    per_cut, rest = divmod(counts[5] - counts[2], 3 * 3)
    assert rest == 0 and per_cut in (1, 2), counts
    assert counts[2] - 3 * 2 * per_cut == counts[5] - 3 * 5 * per_cut >= 0
    out = d / "masks.svg"
    masks_reportlet(f["anat"], [f["mask"], f["inner"]], out, bbox=f["mask"])
    root = ET.parse(out).getroot()
    assert len(_views([g for g in root if g.tag == NS + "g"][0])) == 3
