"""Top-N quantile masks of every scenario of one session, and the mean normalized value of
each contrast inside them (METHOD.md 7)."""
import logging

import nibabel as nib
import numpy as np

from gamer_mril import assessment as A
from gamer_mril.explain import load_session_images
from gamer_mril.io import atomic_path, save_nifti
from gamer_mril.jobs import job

i, o, p = snakemake.input, snakemake.output, snakemake.params
log = logging.getLogger("gamer_mril")
with job(snakemake) as j:
    images, affine = load_session_images([i.t1map, i.mwfmap, i.ndimap])
    cerebrum_img = nib.load(i.cerebrum)
    brain = np.asarray(cerebrum_img.dataobj) > 0
    masks = {}
    for n in p.scenarios:
        img = nib.load(i[f"relmap_{n:02d}"])
        if not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"{i[f'relmap_{n:02d}']}: grid differs from the session's maps")
        rel = np.asarray(img.dataobj, dtype=np.float32)
        kind = "individual" if rel.ndim == 4 else "combined"
        maps = np.moveaxis(rel, -1, 0) if kind == "individual" else rel
        m = A.quantile_masks(maps, brain, p.levels, kind=kind)
        masks[n] = m
        lvl = A.level_image(m, p.levels, kind)
        if kind == "individual":
            lvl = np.moveaxis(lvl, 0, -1)                 # (L, D, H, W) -> (D, H, W, L)
        save_nifti(lvl, affine, o[f"mask_{n:02d}"])
        counts = m.reshape(m.shape[:2] + (-1,)).sum(axis=-1)
        vols = list(A.CONTRASTS) if kind == "individual" else ["combined"]
        voxels = {v: {int(lv): int(counts[k, c]) for k, lv in enumerate(p.levels)}
                  for c, v in enumerate(vols)}
        empty = [v for v in vols if voxels[v][int(p.levels[-1])] == 0]
        log.info("scenario %2d (%s): top-%d mask %s voxels", n, kind, p.levels[-1],
                 {v: voxels[v][int(p.levels[-1])] for v in vols})
        j.sidecar(o[f"mask_{n:02d}"],
                  dict(scenario=int(n), kind=kind, volumes=vols, levels=list(p.levels),
                       encoding="value = smallest N whose top-N mask holds the voxel, 0 = "
                                "in no mask; top-N mask = (value > 0) & (value <= N)",
                       brain_voxels=int(brain.sum()), mask_voxels=voxels,
                       empty_volumes=empty),
                  inputs={"relmap": i[f"relmap_{n:02d}"], "cerebrum": i.cerebrum})
    df = A.session_mask_values(images, masks, p.levels)
    df.insert(0, "session", j.session_id)
    df.insert(0, "subject", j.subject)
    with atomic_path(o.values) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
