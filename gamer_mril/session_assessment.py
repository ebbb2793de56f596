"""The per-session part of the assessment (docs/method.md#7-assessment): one job per
rule.

* :func:`run_quantile_masks` -- every scenario's top-N quantile masks, as one level image
  per scenario, and the mean normalized value of each contrast inside them;
* :func:`run_invert_session` -- voxel inverting: the explaining model's probability after
  ``x -> 1 - x`` inside every top-N mask;
* :func:`run_warp_top_masks` -- every scenario's top-N mask carried to MNI152.

Relevance maps, level images and warped masks are scenario stacks
(:mod:`gamer_mril.scenario_stack`): one file per session holds every scenario.

The cohort-level part (AUC per scenario and N, correlations, group heatmaps) is in
:mod:`gamer_mril.assessment`, which also holds the array logic used here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from . import CONTRASTS
from .io import atomic_path
from .jobs import step
from .layout import roles


def _maps(maps: Sequence) -> dict:
    """{role: path} of the session's network inputs, given in CONTRASTS order."""
    return roles(zip(CONTRASTS, maps))

log = logging.getLogger("gamer_mril")

#: Inverted images per forward pass of one session's voxel inverting, on CPU and on CUDA
#: (on one CPU thread a batch of 4 costs about 0.77 of 4 single passes; larger batches
#: cost more per image).
INVERT_BATCH = {False: 4, True: 16}


def contrast_first(array):
    """A scenario's array with its contrast volumes first: (L, D, H, W) for an
    individual map's (D, H, W, L); a combined map's (D, H, W) unchanged."""
    array = np.asarray(array)
    return np.moveaxis(array, -1, 0) if array.ndim == 4 else array


def read_level_images(path) -> tuple:
    """``({scenario: level image, contrast volumes first}, affine)`` of a quantile mask
    stack."""
    from .scenario_stack import load_stack

    arrays, affine, _ = load_stack(path)
    return {n: contrast_first(a) for n, a in arrays.items()}, affine


def run_quantile_masks(maps: Sequence, cerebrum, relmaps, out, out_values,
                       *, levels: Sequence, subject, session, log_file=None,
                       threads: int = 1) -> None:
    """Rule quantile_masks. ``maps``: the session's network inputs (CONTRASTS order);
    ``relmaps`` / ``out``: the scenario stacks of the relevance maps (cropped grid) / of
    the level images."""
    import nibabel as nib

    from . import assessment as A
    from .explain import load_session_images
    from .scenario_stack import load_stack, save_stack, volume_names

    levels = [int(n) for n in levels]
    inputs = {**_maps(maps), "cerebrum": cerebrum, "relmaps": relmaps}
    with step("quantile_masks", inputs=inputs, params={"levels": levels},
              outputs=[out, out_values], log_file=log_file, threads=threads,
              subject=subject, session=session) as s:
        images, affine = load_session_images(list(maps))
        brain = np.asarray(nib.load(cerebrum).dataobj) > 0
        relevance, rel_affine, _ = load_stack(relmaps, dtype=np.float32)
        if not np.allclose(rel_affine, affine, atol=1e-4):
            raise ValueError(f"{relmaps}: grid differs from the session's maps")
        scenarios = sorted(relevance)
        s.params["scenarios"] = scenarios
        masks, level_images, facts = {}, {}, {}
        for n in scenarios:
            rel = relevance[n]
            kind = "individual" if rel.ndim == 4 else "combined"
            m = A.quantile_masks(np.moveaxis(rel, -1, 0) if kind == "individual" else rel,
                                 brain, levels, kind=kind)
            masks[n] = m
            lvl = A.level_image(m, levels, kind)
            if kind == "individual":
                lvl = np.moveaxis(lvl, 0, -1)                 # (L, D, H, W) -> (D, H, W, L)
            level_images[n] = lvl
            counts = m.reshape(m.shape[:2] + (-1,)).sum(axis=-1)
            vols = volume_names(rel)
            voxels = {v: {int(lv): int(counts[k, c]) for k, lv in enumerate(levels)}
                      for c, v in enumerate(vols)}
            empty = [v for v in vols if voxels[v][int(levels[-1])] == 0]
            log.info("scenario %2d (%s): top-%d mask %s voxels", n, kind, levels[-1],
                     {v: voxels[v][int(levels[-1])] for v in vols})
            facts[n] = dict(kind=kind, volumes=vols, mask_voxels=voxels,
                            empty_volumes=empty)
        table = save_stack(level_images, affine, out)
        s.sidecar(out, dict(levels=list(levels), volumes=table,
                            encoding="value = smallest N whose top-N mask holds the voxel, "
                                     "0 = in no mask; top-N mask = (value > 0) & "
                                     "(value <= N)",
                            brain_voxels=int(brain.sum()), scenarios=facts),
                  inputs={"relmaps": relmaps, "cerebrum": cerebrum})
        df = A.session_mask_values(images, masks, levels)
        df.insert(0, "session", session)
        df.insert(0, "subject", subject)
        with atomic_path(out_values) as tmp:
            df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def run_invert_session(maps: Sequence, model_dirs: Mapping, split_path, qmasks,
                       out, *, age: float, levels: Sequence, relmaps, cerebrum,
                       control_levels: Sequence = (), n_random: int = 5, seed: int = 0,
                       subject, session, log_file=None, threads: int = 1) -> None:
    """Rule invert_session: the probability of the model that explains the session
    (:func:`gamer_mril.explain.choose_model`) after inverting inside every scenario's
    top-N mask (order MoRF), and without inverting (scenario 0, N 0); at
    ``control_levels`` also inside the least-relevant-first mask (LeRF) and ``n_random``
    random masks (random, draw 0, 1, ...) of the same voxel counts in the cerebrum
    (:func:`gamer_mril.inverting.control_masks`). ``qmasks`` / ``relmaps``: the scenario
    stacks of the level images / relevance maps; ``split_path``: None in frozen-model
    mode."""
    import nibabel as nib
    import pandas as pd
    import torch

    from . import assessment as A
    from .explain import choose_model, load_session_images, model_files
    from .inverting import DistinctImages, control_masks
    from .scenario_stack import load_stack
    from .split import read_split
    from .training import autocast, load_model, model_precision, resolve_device

    levels = [int(n) for n in levels]
    control_levels = [int(n) for n in control_levels]
    if not set(control_levels) <= set(levels):
        raise ValueError(f"control levels {control_levels} must be among {levels}")
    inputs = {**_maps(maps), **({} if split_path is None else {"split": split_path}),
              "masks": qmasks, "relmaps": relmaps, "cerebrum": cerebrum}
    with step("invert_session", inputs=inputs,
              params={"age": float(age), "levels": levels,
                      "control_levels": control_levels, "random_masks": int(n_random),
                      "seed": int(seed)},
              outputs=[out], log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        level_images, _ = read_level_images(qmasks)
        scenarios = sorted(level_images)
        s.params["scenarios"] = scenarios
        split = None if split_path is None else read_split(split_path)
        fold, model_dir = choose_model(model_dirs, subject, session, split)
        s.inputs["model"] = model_files(model_dir)
        s.params["fold"] = fold
        log.info("inverted by the model of fold %d (%s)", fold, model_dir)
        device = resolve_device("auto")
        # channels-last 3D memory: a third less time per forward pass on one CPU thread
        # (34 -> 22 ms per image at the quick demo's grid), the same probabilities
        model = load_model(model_dir, device=device).to(memory_format=torch.channels_last_3d)
        images, _ = load_session_images(list(maps), model.contrasts)
        # The network input of training and explanation: clipped to [0, 1], float16 values.
        images = np.clip(images, 0.0, 1.0).astype(np.float16).astype(np.float32)
        region = np.asarray(nib.load(cerebrum).dataobj) > 0

        precision = model_precision(model_dir)

        def forward(batch, ages):
            with torch.no_grad(), autocast(device, precision):
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
                a = torch.from_numpy(np.asarray(ages, dtype=np.float32)).to(device)
                x = x.contiguous(memory_format=torch.channels_last_3d)
                return model(x, a, return_details=True)["p"].double().cpu().numpy()

        # identical inverted images (the baseline, random draws shared by scenarios of
        # the same mask size, scenarios that pick the same voxels) go through the model once
        predict = DistinctImages(forward)

        batch_size = INVERT_BATCH[device.type == "cuda"]
        top = {n: A.masks_from_levels(level_images[n], levels) for n in scenarios}

        def invert(masks: Mapping, at_levels, order: str, draw: int = 0):
            _, p = A.inverting_auc(predict, images[None], [float(age)], [0],
                                   {n: [m] for n, m in masks.items()}, at_levels,
                                   batch_size=batch_size, return_probabilities=True,
                                   with_aucs=False)
            p.insert(0, "draw", draw)
            p.insert(0, "order", order)
            return p if order == "MoRF" else p[p["scenario"] > 0]

        parts = [invert(top, levels, "MoRF")]
        if control_levels:
            ks = [levels.index(n) for n in control_levels]
            relevance, _, _ = load_stack(relmaps, dtype=np.float32)
            if sorted(relevance) != scenarios:
                raise ValueError(f"{relmaps} holds scenarios {sorted(relevance)}, the "
                                 f"masks {qmasks} {scenarios}")
            controls = {}
            for n in scenarios:
                rel = contrast_first(relevance[n])
                # top[n]: (levels, V, D, H, W), or (levels, D, H, W) for a combined map
                controls[n] = control_masks(rel, region, top[n][ks], n_random, seed,
                                            subject, session)
            parts.append(invert({n: c["LeRF"] for n, c in controls.items()}, control_levels,
                                "LeRF"))
            for d in range(int(n_random)):
                parts.append(invert({n: c["random"][d] for n, c in controls.items()},
                                    control_levels, "random", d))
        log.info("%d inverted images asked for, %d distinct ones through the model in %d "
                 "calls", predict.asked, predict.images, predict.calls)
        probs = pd.concat(parts, ignore_index=True).drop(columns="session")
        probs.insert(0, "fold", fold)
        probs.insert(0, "session", session)
        probs.insert(0, "subject", subject)
        base = probs.loc[probs["scenario"] == 0, "prob"]
        log.info("baseline probability %.6f", float(base.iloc[0]))
        with atomic_path(out) as tmp:
            probs.to_csv(tmp, sep="\t", index=False)


def run_warp_top_masks(qmasks, xfm: Mapping, template_mask, out, *,
                       levels: Sequence, level: int, subject, session, log_file=None,
                       threads: int = 1) -> None:
    """Rule warp_top_masks: every scenario's top-``level`` mask to MNI152 (nearest
    neighbour, the session's saved transforms, onto the grid of ``template_mask``, the
    file of the template's brain mask); one volume per contrast for individual maps.
    ``qmasks`` / ``out``: the scenario stacks of the level images / of the warped masks."""
    from . import assessment as A
    from .scenario_stack import save_stack, volume_names

    levels = [int(n) for n in levels]
    with step("warp_top_masks", inputs={"masks": qmasks, "template_mask": template_mask,
                                        **dict(xfm)},
              params={"levels": levels, "level": int(level)},
              outputs=[out], log_file=log_file, threads=threads,
              subject=subject, session=session) as s:
        k = levels.index(int(level))
        level_images, affine = read_level_images(qmasks)
        scenarios = sorted(level_images)
        s.params["scenarios"] = scenarios
        masks = {n: A.masks_from_levels(lvl if lvl.ndim == 4 else lvl[None], levels)[k]
                 for n, lvl in level_images.items()}
        individual = {n: level_images[n].ndim == 4 for n in scenarios}
        # every scenario's volumes through the transforms in one call
        stacked = np.concatenate([masks[n] for n in scenarios])        # (V, D, H, W)
        warped_all, tpl_affine = A.warp_masks_to_template(stacked, affine, dict(xfm),
                                                          template_mask)
        first, warped_masks, facts = 0, {}, {}
        for n in scenarios:
            m = masks[n]
            warped = warped_all[first:first + m.shape[0]].astype(np.uint8)
            first += m.shape[0]
            warped_masks[n] = np.moveaxis(warped, 0, -1) if individual[n] else warped[0]
            names = volume_names(warped_masks[n])
            facts[n] = dict(session_voxels={v: int(m[c].sum()) for c, v in enumerate(names)},
                            template_voxels={v: int(warped[c].sum())
                                             for c, v in enumerate(names)})
            log.info("scenario %2d: %s", n, facts[n]["template_voxels"])
        table = save_stack(warped_masks, tpl_affine, out)
        s.sidecar(out, dict(level=int(level), volumes=table,
                            interpolation="nearestNeighbor", scenarios=facts),
                  inputs={"masks": qmasks, **dict(xfm)})
