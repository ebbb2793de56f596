"""The MNI152 template images as files (rule template_images): the same images as
nilearn's loaders give, read without importing nilearn's datasets module."""

import subprocess
import sys

import numpy as np

from gamer_mril import templates


def test_template_files_hold_nilearns_images(tmp_path):
    t1w, mask = tmp_path / "t1w.nii.gz", tmp_path / "mask.nii.gz"
    facts = templates.write_template_images(2, t1w, mask)
    assert facts["Resolution_mm"] == 2 and facts["Shape"] == list(templates.template_t1w(2).shape)
    for load in (templates.template_t1w, templates.template_brain_mask):
        made, read = load(2), load(t1w if load is templates.template_t1w else mask)
        assert read.shape == made.shape
        np.testing.assert_array_equal(np.asarray(read.dataobj), np.asarray(made.dataobj))
        np.testing.assert_allclose(read.affine, made.affine, atol=1e-6)
    assert templates.resolution_mm(templates.template_t1w(t1w)) == 2.0
    brain = np.asarray(templates.template_brain_mask(mask).dataobj)
    assert set(np.unique(brain)) == {0, 1} and brain.dtype == np.uint8


def test_reading_the_files_leaves_nilearn_datasets_unimported(tmp_path):
    """The reason for the files: nilearn.datasets imports scikit-learn and its loaders
    resample the 1 mm template, in every job that asked for a resolution."""
    t1w, mask = tmp_path / "t1w.nii.gz", tmp_path / "mask.nii.gz"
    templates.write_template_images(2, t1w, mask)
    probe = ("import sys; from gamer_mril import templates, preprocessing_jobs; "
             f"templates.template_t1w({str(t1w)!r}); templates.template_brain_mask({str(mask)!r}); "
             "print(sorted(m for m in ('nilearn.datasets', 'sklearn', 'scipy.ndimage') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split("\n")[-2]
    assert out == "[]", out
