"""Group heatmaps in MNI152: the fraction of sessions whose warped top-N mask covers each
voxel, for severe, mild and all sessions (METHOD.md 7, Fig. 6)."""
import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd

from gamer_mril import assessment as A
from gamer_mril import templates
from gamer_mril.io import atomic_path, save_nifti
from gamer_mril.jobs import job
from gamer_mril.layout import Session

i, o, p = snakemake.input, snakemake.output, snakemake.params
log = logging.getLogger("gamer_mril")
ids = {"subject": str, "session": str}
with job(snakemake) as j:
    chosen = int(json.loads(open(i.chosen).read())["scenario"])
    pred = pd.read_csv(i.predictions, sep="\t", dtype=ids)
    labels = dict(zip(pred["subject"] + "\t" + pred["session"], pred["label"].astype(int)))
    folders = [Session.of_dir(d) for d in i.sessions]
    sessions = [f"{f.subject}\t{f.session}" for f in folders]
    members = {"severe": [labels[s] == 1 for s in sessions],
               "mild": [labels[s] == 0 for s in sessions],
               "all": [True] * len(sessions)}
    shown = list(dict.fromkeys([chosen] + list(p.fig6_scenarios)))
    images, peaks = {}, []
    for n in p.scenarios:
        paths = [f.top_mask(n, p.level) for f in folders]
        first = nib.load(paths[0])
        individual = len(first.shape) == 4
        names = list(A.CONTRASTS) if individual else ["combined"]
        masks = []
        for path in paths:
            data = np.asarray(nib.load(path).dataobj) > 0
            masks.append(np.moveaxis(data, -1, 0) if individual else data[None])
        for g in p.groups:
            group = [m for m, keep in zip(masks, members[g]) if keep]
            if group:
                heat = np.stack([A.group_heatmap(m[v] for m in group)
                                 for v in range(len(names))])
            else:
                log.warning("scenario %d: no %s session; its heatmap is all zero", n, g)
                heat = np.zeros((len(names),) + first.shape[:3], dtype=np.float32)
            out = np.moveaxis(heat, 0, -1) if individual else heat[0]
            save_nifti(out, first.affine, o[f"heat_{n:02d}_{g}"])
            j.sidecar(o[f"heat_{n:02d}_{g}"],
                      dict(scenario=n, group=g, level=int(p.level), volumes=names,
                           n_sessions=len(group), chosen=n == chosen,
                           sessions=[s.replace("\t", " ") for s, keep
                                     in zip(sessions, members[g]) if keep],
                           value="fraction of the group's sessions whose top-N mask "
                                 "covers the voxel"),
                      inputs={"chosen": i.chosen, "predictions": i.predictions,
                              "masks": paths})
            if n in shown:
                for v, name in enumerate(names):
                    img = nib.Nifti1Image(heat[v], first.affine)
                    images[(n, g, name)] = (img, len(group))
                    df = A.heatmap_peaks(heat[v], first.affine)
                    df.insert(0, "volume", name)
                    df.insert(0, "group", g)
                    df.insert(0, "scenario", n)
                    df.insert(0, "role", "chosen" if n == chosen else "Fig. 6")
                    peaks.append(df)
    table = pd.concat(peaks, ignore_index=True)
    with atomic_path(o.peaks) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    rows = []
    for n in shown:
        for name in dict.fromkeys(k[2] for k in images if k[0] == n):
            rows.append([(f"scenario {n}{' (chosen)' if n == chosen else ''}, {name}, "
                          f"{g} (n={images[(n, g, name)][1]})", images[(n, g, name)][0])
                         for g in p.groups])
    A.plot_heatmap_grid(rows, templates.template_t1w(p.template_resolution), o.figure,
                        title=f"Top-{p.level} masks in MNI152: fraction of sessions")
