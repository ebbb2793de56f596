"""Relevance maps of every session from the workflow run on the training cohort."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gamer_mril.io import sha256, sidecar_path
from gamer_mril.modelfiles import best_fold
from gamer_mril.spaces import CropBox, apply_crop, uncrop
from gamer_mril.layout import LRP_SCENARIOS
from gamer_mril.scenario_stack import load_stack
from gamer_mril.settings import ALL_SCENARIOS
from gamer_mril.split import read_split

pytestmark = pytest.mark.slow


def _maps(results, subject, session, space):
    return (results / f"sub-{subject}" / f"ses-{session}" / "xai"
            / f"sub-{subject}_ses-{session}_space-{space}_relmap.nii.gz")


def test_every_session_has_every_scenario_in_both_grids(trained):
    results = trained / "results"
    split = read_split(results / "group" / "split.tsv")
    metas = {k: json.loads((results / "models" / f"fold-{k}" / "model.json").read_text())
             for k in (0, 1)}
    best = best_fold(metas)
    for _, row in split.iterrows():
        s, t = row["subject"], row["session"]
        anat = results / f"sub-{s}" / f"ses-{t}" / "anat"
        box_doc = json.loads((anat / f"sub-{s}_ses-{t}_from-NDI_to-NDIcrop_mode-image_xfm.json")
                             .read_text())
        box = CropBox.from_dict(box_doc["CropBox"])
        fold = row["fold"] if row["set"] == "cv" else best
        model_hash = sha256(results / "models" / f"fold-{fold}" / "model.safetensors")
        crops, crop_affine, crop_table = load_stack(_maps(results, s, t, "NDIcrop"))
        ndis, ndi_affine, ndi_table = load_stack(_maps(results, s, t, "NDI"))
        assert crop_table == ndi_table and sorted(crops) == list(ALL_SCENARIOS)
        sides = [json.loads(sidecar_path(_maps(results, s, t, space)).read_text())
                 for space in ("NDIcrop", "NDI")]
        for space, side in zip(("NDIcrop", "NDI"), sides):
            assert side["Facts"]["volumes"] == crop_table
            assert side["Output"]["sha256"] == sha256(_maps(results, s, t, space))
            assert side["Inputs"]["model"][0]["sha256"] == model_hash
            assert side["Facts"]["model"]["sha256"] == model_hash
            assert side["Facts"]["fold"] == fold
        for n in ALL_SCENARIOS:
            crop, ndi = crops[n], ndis[n]
            individual = n not in (3, 4, 7, 8)
            assert crop.shape == ((48, 48, 56, 3) if individual else (48, 48, 56))
            assert np.isfinite(crop).all() and np.abs(crop).sum() > 0
            # Put back in the NDI grid exactly: cropping it again gives the map back
            # wherever the box lies inside the grid (padding voxels, where the box runs
            # past the grid, have no place there), and nothing lies outside the box.
            assert tuple(ndi.shape[:3]) == tuple(box_doc["FullShape"])
            inside = apply_crop(np.ones(ndi.shape[:3], bool), box)
            if crop.ndim == 4:
                inside = inside[..., None]
            assert np.array_equal(apply_crop(ndi, box), np.where(inside, crop, 0))
            assert np.array_equal(uncrop(crop, box, ndi.shape), ndi)
            assert np.allclose(ndi_affine, box_doc["FullAffine"], atol=1e-5)
            for side in sides:
                facts = side["Facts"]
                scenario = facts["scenarios"][str(n)]
                assert scenario["number"] == n
                # LRP maps carry their conservation record: the start value (f(x), or
                # the attention weights' sum, 1), the sums over each contrast and age
                if n in LRP_SCENARIOS:
                    cons = scenario["conservation"]
                    start = facts["logit"] if scenario["start"] == "f" else 1.0
                    assert cons["start_value"] == pytest.approx(start, abs=1e-5)
                    assert set(cons["relevance_sum"]) == {"qT1", "MWF", "NDI", "age"}
                    assert cons["total"] == pytest.approx(sum(cons["relevance_sum"].values()))
                    assert cons["relative_error"] == pytest.approx(
                        abs(cons["start_value"] - cons["total"]) / abs(cons["start_value"]))
                else:
                    assert "conservation" not in scenario


def test_relevance_maps_agree_with_predictions(trained):
    """The logit and attention recorded with the maps are those of predictions.tsv, and
    the saliency map (scenario 11) is non-negative."""
    results = trained / "results"
    pred = pd.read_csv(results / "group" / "predictions.tsv", sep="\t",
                       dtype={"subject": str, "session": str})
    for _, row in pred.iterrows():
        s, t = row["subject"], row["session"]
        side = json.loads(sidecar_path(_maps(results, s, t, "NDIcrop")).read_text())
        assert side["Facts"]["logit"] == pytest.approx(row["logit"], abs=1e-4)
        for c in ("qT1", "MWF", "NDI"):
            assert side["Facts"]["attention"][c] == pytest.approx(row[f"a_{c}"], abs=1e-5)
        sal = load_stack(_maps(results, s, t, "NDIcrop"))[0][11]
        assert (sal >= 0).all()
