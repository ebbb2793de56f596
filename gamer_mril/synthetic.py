"""Synthetic multiple-sclerosis cohorts with a known, planted disability effect.

The generator makes what the real (private) cohort would give the workflow, plus the
ground truth the workflow never sees:

``<out>/rawdata/``
    ``participants.tsv`` (one row per session: subject, session, age, edss, sex,
    phenotype) and per session ``anat/*_T1map.nii.gz`` (qT1, ms), ``anat/*_MWFmap.nii.gz``
    (fraction), ``dwi/*_model-noddi_param-icvf_dwimap.nii.gz`` (NDI), each in its own
    grid and voxel size (the paper's protocol: qT1 1 mm, MWF 1.25 x 1.25 x 5 mm, NDI
    1.8 mm; ``scale`` multiplies every voxel size) and its own head pose.
``<out>/ground_truth/``
    ``truth.tsv`` (per session: EDSS, effect strength, lesion count, head poses),
    ``space-MNI152NLin2009cAsym_desc-planted_mask.nii.gz`` (the region whose values change
    with EDSS), and per session the true brain, cerebellum, planted-region and lesion masks
    in the NDI grid and the true brain mask in the qT1 grid.

Anatomy: the MNI152 grey/white-matter maps and brain mask shipped with nilearn, with CSF
as the rest of the brain mask, a CSF rim, skull and scalp as shells around the brain, the
cerebellum from AAL3 (:mod:`gamer_mril.templates`). Each subject's anatomy is the template
warped by a random head size and a smooth random deformation; each contrast of each
session sees the head in its own random pose (rigid), so co-registration is needed.

Effects (multiplying the white-matter signal): lesions (qT1 up, MWF and NDI down);
the planted disability effect inside both corticospinal tracts (cerebral peduncle, posterior
limb of the internal capsule, corona radiata: EDSS is dominated by ambulation, hence by the
pyramidal tracts), of strength ``clip((EDSS - 2) / 4, 0, 1)`` (none up to EDSS 2, full from
EDSS 6); a weaker global age effect. Gaussian noise is added last.

The template-space anatomy and the planted region: :mod:`gamer_mril.phantom`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from . import CONTRASTS
from . import templates
from .io import atomic_write_text, save_nifti
from .phantom import Anatomy, balls, build_anatomy, partial_volume, planted_region

# --------------------------------------------------------------------------- protocol

#: Voxel size (mm) and matrix of each contrast at scale 1 (the paper's protocol; the NDI
#: slab is widened to 96 slices so the whole brain fits).
PROTOCOL = {
    "qT1": ((1.0, 1.0, 1.0), (176, 240, 256)),
    "MWF": ((1.25, 1.25, 5.0), (256, 256, 32)),
    "NDI": ((1.8, 1.8, 1.8), (142, 142, 96)),
}

#: File name suffix of each contrast in rawdata (BIDS-like) and its datatype folder.
RAW_NAMES = {
    "qT1": ("anat", "T1map"),
    "MWF": ("anat", "MWFmap"),
    "NDI": ("dwi", "model-noddi_param-icvf_dwimap"),
}

#: Tissue values: qT1 (ms), MWF (fraction), NDI (fraction).
TISSUE_VALUES = {
    #          GM      WM     CSF    skull  scalp
    "qT1": (1350.0, 850.0, 3500.0, 250.0, 400.0),
    "MWF": (0.04, 0.16, 0.0, 0.0, 0.02),
    "NDI": (0.45, 0.60, 0.0, 0.05, 0.15),
}
NOISE_SD = {"qT1": 25.0, "MWF": 0.008, "NDI": 0.02}

#: Relative change of the white-matter signal at full strength, per contrast.
LESION_EFFECT = {"qT1": +0.60, "MWF": -0.70, "NDI": -0.40}
PLANTED_EFFECT = {"qT1": +0.525, "MWF": -0.90, "NDI": -0.525}
AGE_EFFECT_PER_YEAR = {"qT1": +0.002, "MWF": -0.002, "NDI": -0.002}
REFERENCE_AGE = 45.0

#: Head centre in template (MNI) coordinates; scanner grids are centred here.
HEAD_CENTRE = np.array([0.0, -18.0, 8.0])


def effect_strength(edss: float) -> float:
    """Strength of the planted disability effect for an EDSS value, in [0, 1]:
    0 up to EDSS 2, rising linearly to 1 at EDSS 6."""
    return float(min(max((edss - 2.0) / 4.0, 0.0), 1.0))


def contrast_grid(contrast: str, scale: float = 1.0):
    """``(shape, affine)`` of a contrast's scanner grid, centred on the origin."""
    voxel, shape = PROTOCOL[contrast]
    voxel = np.asarray(voxel, dtype=float) * scale
    shape = tuple(int(np.ceil(n / scale)) for n in shape)
    affine = np.diag(list(voxel) + [1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * voxel
    return shape, affine


# --------------------------------------------------------------------------- subjects


def _rotation(angles_deg):
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_pose(rng, max_deg: float, max_mm: float) -> np.ndarray:
    """A rigid 4x4 matrix: subject space -> scanner space."""
    pose = np.eye(4)
    pose[:3, :3] = _rotation(rng.uniform(-max_deg, max_deg, 3))
    pose[:3, 3] = rng.uniform(-max_mm, max_mm, 3)
    return pose


@dataclass
class SubjectWarp:
    """Subject space -> template space: ``t = centre + S (q) + u(q)`` (q in subject mm)."""

    scale: np.ndarray  # (3,)
    field: np.ndarray  # (3, nx, ny, nz) displacement in mm on a coarse grid
    field_affine: np.ndarray  # coarse grid voxel -> subject mm

    def __call__(self, q):
        inv = np.linalg.inv(self.field_affine)
        vox = inv[:3, :3] @ q + inv[:3, 3:4]
        u = np.stack(
            [ndimage.map_coordinates(f, vox, order=1, mode="nearest") for f in self.field]
        )
        return HEAD_CENTRE[:, None] + self.scale[:, None] * q + u


def random_warp(rng, amplitude_mm: float = 3.0, sex: str = "F") -> SubjectWarp:
    spacing = 10.0
    n = 27  # covers +-130 mm
    raw = rng.normal(size=(3, n, n, n))
    field = np.stack([ndimage.gaussian_filter(c, 2.0, mode="wrap") for c in raw])
    field *= amplitude_mm / max(field.std(), 1e-6)
    aff = np.diag([spacing] * 3 + [1.0])
    aff[:3, 3] = -spacing * (n - 1) / 2
    size = 1.0 + rng.normal(0, 0.03) + (0.03 if sex == "M" else -0.01)
    scale = np.full(3, 1.0 / size) * (1 + rng.normal(0, 0.015, 3))
    return SubjectWarp(scale=scale, field=field, field_affine=aff)


def random_lesions(rng, anat: Anatomy, n: int):
    """Lesion centres (template mm) in deep white matter and radii (mm)."""
    wm = anat.maps["WM"]
    candidates = np.argwhere(wm > 0.95)
    pick = candidates[rng.choice(len(candidates), size=n, replace=False)] if n else []
    centres = [anat.affine[:3, :3] @ v + anat.affine[:3, 3] for v in pick]
    radii = list(rng.uniform(2.0, 5.0, size=n))
    return centres, radii


def lesion_load(points, centres, radii):
    """Soft lesion indicator in [0, 1] at template-space points (3, N)."""
    out = np.zeros(points.shape[1], dtype=np.float32)
    for c, r in zip(centres, radii):
        d2 = ((points - np.asarray(c)[:, None]) ** 2).sum(0)
        near = d2 < (3 * r) ** 2
        if near.any():
            out[near] = np.maximum(out[near], np.exp(-d2[near] / (2 * r * r)))
    return out


# --------------------------------------------------------------------------- rendering


def _sample(maps: dict, anat_affine, points, names):
    inv = np.linalg.inv(anat_affine)
    vox = inv[:3, :3] @ points + inv[:3, 3:4]
    return {
        n: ndimage.map_coordinates(maps[n], vox, order=1, mode="constant", cval=0.0)
        for n in names
    }


def render_contrast(
    contrast, shape, affine, pose, warp, anat, smooth_maps, session_info, rng, chunk=400_000
):
    """The contrast's map in its scanner grid, plus the sampled truth fractions."""
    values = TISSUE_VALUES[contrast]
    k = session_info["strength"]
    age_factor = 1.0 + AGE_EFFECT_PER_YEAR[contrast] * (session_info["age"] - REFERENCE_AGE)
    wm_value = values[1] * (session_info["mwf_wm_scale"] if contrast == "MWF" else 1.0)
    n_vox = int(np.prod(shape))
    out = np.empty(n_vox, dtype=np.float32)
    truth = {n: np.empty(n_vox, dtype=np.float32)
             for n in ("brain", "cerebellum", "planted", "lesions")}
    vox_to_subject = np.linalg.inv(pose) @ affine
    for a in range(0, n_vox, chunk):
        idx = np.arange(a, min(a + chunk, n_vox))
        ijk = np.stack(np.unravel_index(idx, shape)).astype(np.float64)
        q = vox_to_subject[:3, :3] @ ijk + vox_to_subject[:3, 3:4]
        t = warp(q)
        s = _sample(smooth_maps, anat.affine, t, ("GM", "WM", "CSF", "skull", "scalp", "planted"))
        m = _sample(anat.maps, anat.affine, t, ("brain", "cerebellum", "planted"))
        lesion = lesion_load(t, session_info["lesion_centres"], session_info["lesion_radii"])
        planted = PLANTED_EFFECT[contrast] * session_info.get("effect_scale", 1.0)
        wm_mod = (1 + LESION_EFFECT[contrast] * lesion) * (
            1 + planted * k * np.clip(s["planted"], 0, 1)
        )
        brain_val = (
            s["GM"] * values[0] * age_factor
            + s["WM"] * wm_value * age_factor * wm_mod
            + s["CSF"] * values[2]
        )
        v = brain_val + s["skull"] * values[3] + s["scalp"] * values[4]
        v = v + rng.normal(0.0, NOISE_SD[contrast], size=v.shape)
        out[idx] = v
        for n in ("brain", "cerebellum", "planted"):
            truth[n][idx] = m[n]
        truth["lesions"][idx] = lesion * m["brain"]
    out = out.reshape(shape)
    out = np.clip(out, 0, 1.0 if contrast == "NDI" else None)
    return out, {n: (v.reshape(shape) > 0.5).astype(np.uint8) for n, v in truth.items()}


# --------------------------------------------------------------------------- cohort


def _spread(i: int, offset: float, step: float) -> float:
    """A low-discrepancy sequence in [0, 1): any run of subjects gets near-exact fractions."""
    return (offset + i * step) % 1.0


def make_table(n_subjects, followup_fraction, severe_fraction, seed) -> pd.DataFrame:
    """Participants: one row per session, EDSS on the half-step scale.

    Subject i's row depends only on (seed, i), so a larger cohort with the same seed
    extends a smaller one (new subjects are added, old ones unchanged).
    """
    offsets = np.random.default_rng(seed).random(2)
    rows = []
    for i in range(n_subjects):
        rng = np.random.default_rng([seed, i, 7])
        severe = _spread(i, offsets[0], 0.6180339887) < severe_fraction
        follow = _spread(i, offsets[1], 0.4142135624) < followup_fraction
        sub = f"{i + 1:03d}"
        age = float(np.round(rng.uniform(20, 70), 1))
        edss = float(rng.choice(np.arange(5.0, 8.01, 0.5) if severe else np.arange(0, 4.51, 0.5)))
        sex = str(rng.choice(["F", "M"], p=[0.6, 0.4]))
        pheno = "PMS" if (severe and rng.random() < 0.7) or rng.random() < 0.2 else "RRMS"
        rows.append(dict(subject=sub, session="1", age=age, edss=edss, sex=sex, phenotype=pheno))
        if follow:
            step = float(rng.choice([0.0, 0.0, 0.5, 1.0]))
            rows.append(
                dict(subject=sub, session="2", age=round(age + 2.0, 1),
                     edss=min(edss + step, 9.5), sex=sex, phenotype=pheno)
            )
    return pd.DataFrame(rows)


def raw_path(root: Path, subject: str, session: str, contrast: str) -> Path:
    folder, suffix = RAW_NAMES[contrast]
    return root / f"sub-{subject}" / f"ses-{session}" / folder / f"sub-{subject}_ses-{session}_{suffix}.nii.gz"


def generate_cohort(
    out,
    n_subjects: int = 40,
    followup_fraction: float = 0.4,
    severe_fraction: float = 0.25,
    scale: float = 1.0,
    seed: int = 0,
    subjects=None,
    log=print,
    effect_scale: float = 1.0,
    region=None,
) -> pd.DataFrame:
    """Write a synthetic cohort (rawdata + ground_truth) under ``out``; returns the table.

    ``subjects``: optional list of subject IDs to (re)write, for adding subjects to an
    existing cohort; the table is always the full one so a cohort grows reproducibly.
    ``effect_scale`` multiplies the planted effect's relative changes
    (:data:`PLANTED_EFFECT`): 0.25 gives a moderate effect (MWF -22%, qT1 and NDI +-13%
    at full strength), 0 none. ``region``: ``(x, y, z, radius)`` in MNI mm, a ball of
    white matter on one side instead of the two corticospinal tracts, or a list of such
    balls (a pattern of several regions; :func:`planted_region`).
    """
    if effect_scale < 0:
        raise ValueError(f"effect_scale must be >= 0, got {effect_scale}")
    out = Path(out)
    table = make_table(n_subjects, followup_fraction, severe_fraction, seed)
    resolution = 1 if scale < 1.5 else 2
    anat = build_anatomy(resolution, region)
    grids = {c: contrast_grid(c, scale) for c in CONTRASTS}
    smooth = {c: partial_volume(anat, grids[c][1].diagonal()[:3], resolution) for c in CONTRASTS}
    raw = out / "rawdata"
    truth_dir = out / "ground_truth"
    truth_rows = []
    for sub, rows in table.groupby("subject", sort=True):
        srng = np.random.default_rng([seed, int(sub)])
        sex = rows["sex"].iloc[0]
        warp = random_warp(srng, sex=sex)
        n_les = int(srng.poisson(4))
        centres, radii = random_lesions(srng, anat, n_les)
        mwf_scale = float(srng.uniform(0.75, 1.25))  # WM MWF between 0.12 and 0.20
        for _, row in rows.iterrows():
            ses = row["session"]
            if ses != "1":  # a new lesion at follow-up, sometimes
                if srng.random() < 0.4:
                    c2, r2 = random_lesions(srng, anat, 1)
                    centres, radii = centres + c2, radii + r2
            info = dict(
                age=row["age"], strength=effect_strength(row["edss"]),
                lesion_centres=centres, lesion_radii=radii, mwf_wm_scale=mwf_scale,
                effect_scale=float(effect_scale),
            )
            ndi_pose = random_pose(srng, 10.0, 8.0)
            poses = {"NDI": ndi_pose}
            for c in ("qT1", "MWF"):
                poses[c] = random_pose(srng, 5.0, 5.0) @ ndi_pose
            if subjects is not None and sub not in subjects:
                continue
            log(f"sub-{sub} ses-{ses}: EDSS {row['edss']}, {len(centres)} lesions")
            tdir = truth_dir / f"sub-{sub}" / f"ses-{ses}"
            for c in CONTRASTS:
                shape, affine = grids[c]
                crng = np.random.default_rng([seed, int(sub), int(ses), CONTRASTS.index(c)])
                img, truth = render_contrast(c, shape, affine, poses[c], warp, anat, smooth[c], info, crng)
                save_nifti(img.astype(np.float32), affine, raw_path(raw, sub, ses, c))
                stem = f"sub-{sub}_ses-{ses}_space-{c}"
                if c == "NDI":
                    for name in ("brain", "cerebellum", "planted", "lesions"):
                        save_nifti(truth[name], affine, tdir / f"{stem}_desc-{name}_mask.nii.gz")
                elif c == "qT1":
                    save_nifti(truth["brain"], affine, tdir / f"{stem}_desc-brain_mask.nii.gz")
            truth_rows.append(
                dict(
                    subject=sub, session=ses, edss=row["edss"], strength=info["strength"],
                    n_lesions=len(centres),
                    **{f"pose_{c}": json.dumps(np.round(poses[c], 6).tolist()) for c in CONTRASTS},
                )
            )
    raw.mkdir(parents=True, exist_ok=True)
    atomic_write_text(raw / "participants.tsv", table.to_csv(sep="\t", index=False))
    atomic_write_text(
        raw / "dataset_description.json",
        json.dumps({"Name": "gamer-mril synthetic cohort", "BIDSVersion": "1.9.0",
                    "DatasetType": "raw",
                    "GeneratedBy": [{"Name": "gamer_mril.synthetic",
                                     "Description": f"seed={seed} scale={scale} "
                                                    f"effect_scale={effect_scale}"
                                                    f" region={region}"}]},
                   indent=2),
    )
    truth_dir.mkdir(parents=True, exist_ok=True)
    planted = planted_region(2, region)
    save_nifti(np.asarray(planted.dataobj), planted.affine,
               truth_dir / f"space-{templates.TEMPLATE_SPACE}_res-2_desc-planted_mask.nii.gz")
    if truth_rows:
        truth_table = pd.DataFrame(truth_rows)
        old = truth_dir / "truth.tsv"
        if subjects is not None and old.exists():
            prev = pd.read_csv(old, sep="\t", dtype={"subject": str, "session": str})
            prev = prev[~prev.subject.isin(truth_table.subject)]
            truth_table = pd.concat([prev, truth_table]).sort_values(["subject", "session"])
        atomic_write_text(old, truth_table.to_csv(sep="\t", index=False))
    atomic_write_text(
        truth_dir / "README.txt",
        "Ground truth of a synthetic gamer-mril cohort. The workflow never reads this folder.\n"
        "pose_<contrast>: 4x4 matrix from subject space (mm) to that contrast's scanner space;\n"
        "the true transform from a contrast's grid to the NDI grid is pose_NDI @ inv(pose_c).\n"
        f"Planted effect: strength clip((EDSS - 2) / 4, 0, 1) in the region; relative WM change at full\n"
        f"strength {PLANTED_EFFECT}, times effect_scale {effect_scale}.\n"
        f"Region: {'both corticospinal tracts' if region is None else f'balls {balls(region)} (x, y, z, radius; MNI mm)'}"
        ", white matter only.\n",
    )
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder (rawdata/ and ground_truth/ are made in it)")
    p.add_argument("--subjects", type=int, default=40, help="number of subjects (default 40)")
    p.add_argument("--followup", type=float, default=0.4, help="fraction with a second session")
    p.add_argument("--severe", type=float, default=0.25, help="fraction of severe subjects")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every voxel size (2 = half the resolution, 8x faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="write only these subject IDs (add to a cohort)")
    p.add_argument("--effect-scale", type=float, default=1.0,
                   help="multiply the planted effect (0.25: moderate; 0: none)")
    p.add_argument("--region", type=float, nargs=4, metavar=("X", "Y", "Z", "RADIUS"),
                   action="append",
                   help="plant the effect in a ball of white matter there (MNI mm) instead "
                        "of both corticospinal tracts, e.g. 24 20 24 9 (about 3 cm3); "
                        "repeat for a pattern of several balls")
    a = p.parse_args(argv)
    table = generate_cohort(a.out, a.subjects, a.followup, a.severe, a.scale, a.seed,
                            subjects=a.only, effect_scale=a.effect_scale, region=a.region)
    print(f"wrote {len(table)} sessions of {table.subject.nunique()} subjects to {a.out}")


if __name__ == "__main__":
    main()
