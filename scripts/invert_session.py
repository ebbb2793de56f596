"""Voxel inverting of one session: the model's probability after x -> 1 - x inside every
scenario's top-N mask, and without inverting (METHOD.md 7, Fig. 4)."""
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from gamer_mril import assessment as A
from gamer_mril.explain import choose_model, load_session_images
from gamer_mril.io import atomic_path
from gamer_mril.jobs import job
from gamer_mril.split import read_split
from gamer_mril.training import load_model, resolve_device

i, o, p = snakemake.input, snakemake.output, snakemake.params
log = logging.getLogger("gamer_mril")
with job(snakemake) as j:
    dirs = {int(Path(w).parent.name.split("-", 1)[1]): Path(w).parent for w in i.weights}
    split = None if p.frozen_models else read_split(i.split)
    fold, model_dir = choose_model(dirs, j.subject, j.session_id, split)
    log.info("inverted through the model of fold %d (%s)", fold, model_dir)
    device = resolve_device("auto")
    model = load_model(model_dir, device=device)
    images, _ = load_session_images([i.t1map, i.mwfmap, i.ndimap], model.contrasts)
    # The network input of training and explanation: clipped to [0, 1], float16 values.
    images = np.clip(images, 0.0, 1.0).astype(np.float16).astype(np.float32)

    masks = {}
    for n in p.scenarios:
        lvl = np.asarray(nib.load(i[f"mask_{n:02d}"]).dataobj)
        if lvl.ndim == 4:
            lvl = np.moveaxis(lvl, -1, 0)                 # one mask per contrast
        masks[n] = [A.masks_from_levels(lvl, p.levels)]   # one session

    def predict(batch, ages):
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            a = torch.from_numpy(np.asarray(ages, dtype=np.float32)).to(device)
            return model(x, a, return_details=True)["p"].double().cpu().numpy()

    _, probs = A.inverting_auc(predict, images[None], [p.age], [0], masks, p.levels,
                               batch_size=1, return_probabilities=True)
    probs = probs.drop(columns="session")
    probs.insert(0, "fold", fold)
    probs.insert(0, "session", j.session_id)
    probs.insert(0, "subject", j.subject)
    log.info("baseline probability %.6f", float(probs.loc[probs["scenario"] == 0, "prob"].iloc[0]))
    with atomic_path(o.tsv) as tmp:
        probs.to_csv(tmp, sep="\t", index=False)
