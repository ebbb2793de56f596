"""Relevance maps of one session on disk: the file side of
docs/method.md#6-layer-wise-relevance-propagation.

:mod:`gamer_mril.lrp` computes maps from tensors; this module picks the model that
explains a session, reads the session's network inputs, runs every requested scenario in
one go (the forward pass is shared) and writes every scenario's map twice: in the cropped
grid the network saw, and put back in the session's NDI grid through the recorded crop box
(exactly: the inverse of the crop; voxels outside the crop get 0).

Each of the two files is a scenario stack (:mod:`gamer_mril.scenario_stack`): an
individual map gives one volume per contrast in the order ``qT1, MWF, NDI``, a combined
map one volume, the scenarios in ascending order, the volume table in the header::

    sub-X/ses-Y/xai/sub-X_ses-Y_space-NDIcrop_relmap.nii.gz
    sub-X/ses-Y/xai/sub-X_ses-Y_space-NDI_relmap.nii.gz

Which model explains a session (so that no session is explained by a model that trained
on it): a validation session its own fold's model; a test session, or any session in
frozen-model mode, the fold model with the best validation AUC
(:func:`gamer_mril.modelfiles.best_fold`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from . import CONTRASTS
from .io import sha256
from .modelfiles import MODEL_JSON, MODEL_WEIGHTS, best_fold, explaining_fold, read_model_meta
from .settings import (GAMMA, IG_REFERENCE_SIGMA_MM, SMOOTHGRAD_NOISE, SMOOTHGRAD_SAMPLES,
                       SMOOTHGRAD_SEED, scenario_numbers)
from .spaces import CropBox, uncrop


def choose_model(model_dirs: Mapping, subject: str, session: str, split=None) -> tuple:
    """``(fold, folder)`` of the model that explains a session.

    ``model_dirs``: {fold: folder}; ``split``: the split table (None in frozen-model mode).
    A session missing from a given split table is an error (it would otherwise be
    explained by a model that may have trained on it).
    """
    best = best_fold({k: read_model_meta(d) for k, d in model_dirs.items()})
    row = None
    if split is not None:
        hit = split[(split["subject"].astype(str) == str(subject))
                    & (split["session"].astype(str) == str(session))]
        if hit.empty:
            raise ValueError(f"sub-{subject} ses-{session} is not in the split table")
        row = hit.iloc[0]
    fold = explaining_fold(row, best)
    return fold, Path(model_dirs[fold])


def load_session_images(paths: Sequence, contrasts: Sequence[str] = CONTRASTS) -> tuple:
    """``(images (L, D, H, W) float32, affine)`` of a session's network inputs.

    The maps must share one grid (they are the cropped NDI-grid outputs of
    preprocessing); a mismatch is an error naming the file.
    """
    arrays, affine = [], None
    for contrast, path in zip(contrasts, paths):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        if affine is None:
            affine, shape = img.affine, data.shape
        elif data.shape != shape or not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"{path}: the {contrast} map's grid differs from "
                             f"{paths[0]}'s (shape {data.shape} vs {shape})")
        arrays.append(data)
    return np.stack(arrays), affine


def load_network_inputs(image_paths: Sequence, model_dir, device="auto") -> tuple:
    """``(model, images, affine, device)``: a fold model ready to run and one session's
    maps exactly as the network saw them in training, shared by explanation and voxel
    inverting.

    The model is in eval mode on ``device`` (``"auto"``: CUDA where there is one) in
    channels-last 3D memory (the twelve scenarios in 0.64 of the time on one CPU thread,
    a third less time per inverting pass; the same outputs to rounding). The images
    (L, D, H, W) are the maps in the model's contrast order, clipped to [0, 1] and rounded
    through float16 like the training cache, so the logit equals predictions.tsv's; maps
    of another shape than the model's input are a ``ValueError`` naming the file.
    """
    import torch

    from .training import load_model, resolve_device

    device = resolve_device(device)
    model = load_model(model_dir, device=device).to(memory_format=torch.channels_last_3d)
    images, affine = load_session_images(image_paths, model.contrasts)
    images = np.clip(images, 0.0, 1.0).astype(np.float16).astype(np.float32)
    if tuple(images.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"{image_paths[0]}: maps of shape {images.shape[1:]} but the model "
                         f"at {model_dir} expects {tuple(model.input_shape)}")
    return model, images, affine, device


def read_crop_box(path) -> tuple:
    """``(CropBox, full_shape, full_affine)`` from the crop step's transform file."""
    d = json.loads(Path(path).read_text())
    try:
        return (CropBox.from_dict(d["CropBox"]), tuple(int(v) for v in d["FullShape"]),
                np.asarray(d["FullAffine"], dtype=np.float64))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a crop box file ({err})") from None


def conservation_facts(kept: dict, contrasts: Sequence[str]) -> dict:
    """The sidecar's conservation record of a session's LRP walk
    (:func:`gamer_mril.lrp.conservation` of a batch of one): the start value, the
    relevance summed over each contrast's voxels and over age, their total and the
    relative error. A combined map records the walk of the individual maps it is made
    from (the product with the input is not a relevance redistribution)."""
    return dict(start_value=kept["start_value"][0],
                relevance_sum={**dict(zip(contrasts, kept["voxel_sums"][0])),
                               "age": kept["age"][0]},
                total=kept["total"][0], relative_error=kept["relative_error"][0])


def smoothgrad_session_seed(smoothgrad_seed: int, subject, session) -> int:
    """The seed of a session's SmoothGrad noise: the config's ``smoothgrad_seed`` and the
    session's label (:func:`gamer_mril.jobs.session_label`) hashed together (sha256, 63
    bits), so a rerun draws the same noise and two sessions draw different noise."""
    from .jobs import session_label

    text = f"{int(smoothgrad_seed)}|{session_label(subject, session)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def voxel_sigma(sigma_mm: float, affine) -> tuple:
    """A Gaussian's sd in mm as voxels along each array axis of a grid with ``affine``."""
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return tuple(float(sigma_mm / v) for v in sizes)


def explain_session(image_paths: Sequence, age: float, model_dir, crop_box_path,
                    crop_output, ndi_output, scenarios: Sequence, *,
                    ig_steps: int = 32, smoothgrad_samples: int = SMOOTHGRAD_SAMPLES,
                    smoothgrad_noise: float = SMOOTHGRAD_NOISE,
                    smoothgrad_seed: int = SMOOTHGRAD_SEED, gamma: float = GAMMA,
                    ig_reference_sigma_mm: float = IG_REFERENCE_SIGMA_MM,
                    subject=None, session=None, device="auto", log=print) -> dict:
    """Compute and write the relevance maps of one session; return facts for sidecars.

    ``crop_output`` / ``ndi_output``: the scenario stacks to write (cropped and NDI grid)
    of ``scenarios``. ``crop_box_path``: the crop step's ``from-NDI_to-NDIcrop`` file
    (box, shape and affine of the NDI grid). The settings of the scenarios beyond the
    paper keep the config's names (:class:`gamer_mril.settings.RelevanceSettings`);
    ``subject`` and ``session`` pick the session's SmoothGrad noise
    (:func:`smoothgrad_session_seed`). Returns a dict with the model, the volume
    table and, per scenario, its description, total relevance and conservation record.
    """
    import torch

    from . import lrp
    from .scenario_stack import save_stack

    scenarios = scenario_numbers(scenarios)
    model, images, affine, device = load_network_inputs(image_paths, model_dir, device)
    box, full_shape, full_affine = read_crop_box(crop_box_path)

    x = torch.from_numpy(images).unsqueeze(0).to(device)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    age_t = torch.tensor([float(age)], dtype=torch.float32, device=device)
    noise_seed = smoothgrad_session_seed(smoothgrad_seed, subject, session)
    sigma = voxel_sigma(ig_reference_sigma_mm, affine)
    t0 = time.perf_counter()
    record = {}
    maps = lrp.scenario_maps(model, x, age_t, scenarios=scenarios, ig_steps=ig_steps,
                             record=record, gamma=gamma,
                             smoothgrad_samples=smoothgrad_samples,
                             smoothgrad_noise=smoothgrad_noise, smoothgrad_seed=noise_seed,
                             ig_reference_sigma=sigma)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        out = model(x, age_t, return_details=True)
    meta = read_model_meta(model_dir)
    facts = dict(model=dict(folder=str(model_dir),
                            sha256=sha256(Path(model_dir) / MODEL_WEIGHTS),
                            epoch=meta.get("epoch"), val_auc=meta.get("val_auc")),
                 logit=float(out["logit"][0]), prob=float(out["p"][0]),
                 attention={c: float(a) for c, a in zip(model.contrasts, out["a"][0])},
                 age=float(age), device=str(device), seconds_all_scenarios=round(seconds, 3),
                 ig_steps=int(ig_steps), smoothgrad_samples=int(smoothgrad_samples),
                 smoothgrad_noise=float(smoothgrad_noise),
                 smoothgrad_seed=int(smoothgrad_seed), smoothgrad_session_seed=noise_seed,
                 gamma=float(gamma), ig_reference_sigma_mm=float(ig_reference_sigma_mm),
                 ig_reference_sigma_voxels=list(sigma), crop_box=box.to_dict(),
                 scenarios={})
    crop, full = {}, {}
    for n in scenarios:
        sc = lrp.SCENARIOS[n]
        arr = maps[n][0].detach().to("cpu", torch.float32).numpy()
        if arr.ndim == 4:                        # (L, D, H, W) -> (D, H, W, L)
            arr = np.moveaxis(arr, 0, -1)
        crop[n] = arr
        full[n] = uncrop(arr, box, full_shape + arr.shape[3:])
        facts["scenarios"][n] = dict(
            number=n, start=sc.start, method=sc.method, rule=sc.rule, kind=sc.kind,
            name=sc.name, composite=sc.composite, reference=sc.reference, volumes=list(model.contrasts) if arr.ndim == 4 else ["combined"],
            total_relevance=float(arr.sum(dtype=np.float64)))
        if n in record:
            facts["scenarios"][n]["conservation"] = conservation_facts(record[n],
                                                                      model.contrasts)
        log(f"scenario {n:2d} ({sc.name}): total {facts['scenarios'][n]['total_relevance']:.4g}"
            + (f", conservation error {record[n]['relative_error'][0]:.2e}"
               if n in record else ""))
    facts["volumes"] = save_stack(crop, affine, crop_output, model.contrasts)
    save_stack(full, full_affine, ndi_output, model.contrasts)
    return facts


def model_files(model_dir) -> list:
    """The files of a fold model (weights, metadata), as recorded in sidecars."""
    return [str(Path(model_dir) / MODEL_WEIGHTS), str(Path(model_dir) / MODEL_JSON)]


def run_explain_session(maps: Sequence, crop_box, model_dirs: Mapping, split_path,
                        crop_output, ndi_output, *, scenarios: Sequence, age: float,
                        ig_steps: int, smoothgrad_samples: int, smoothgrad_noise: float,
                        smoothgrad_seed: int, gamma: float, ig_reference_sigma_mm: float,
                        subject, session, log_file=None, threads: int = 1) -> None:
    """Rule explain_session: every requested scenario of one session, one forward pass.

    ``maps``: the network inputs (CONTRASTS order); ``model_dirs``: {fold: model folder};
    ``split_path``: the split table, None in frozen-model mode (the best fold's model
    explains every session); ``crop_output`` / ``ndi_output``: the scenario stacks of
    the cropped and the NDI grid; the settings by their config names
    (:class:`gamer_mril.settings.RelevanceSettings`)."""
    import logging

    from .jobs import step
    from .split import read_split

    log = logging.getLogger("gamer_mril")
    frozen = split_path is None
    scenarios = list(scenario_numbers(scenarios))
    inputs = {**dict(zip(CONTRASTS, maps)), "box": crop_box,
              **({} if frozen else {"split": split_path})}
    settings = dict(ig_steps=int(ig_steps), smoothgrad_samples=int(smoothgrad_samples),
                    smoothgrad_noise=float(smoothgrad_noise),
                    smoothgrad_seed=int(smoothgrad_seed), gamma=float(gamma),
                    ig_reference_sigma_mm=float(ig_reference_sigma_mm))
    with step("explain_session", inputs=inputs,
              params={"age": float(age), "scenarios": scenarios, **settings,
                      "frozen_models": frozen},
              outputs=[crop_output, ndi_output], log_file=log_file,
              threads=threads, subject=subject, session=session) as s:
        split = None if frozen else read_split(split_path)
        fold, model_dir = choose_model(model_dirs, subject, session, split)
        s.inputs["model"] = model_files(model_dir)
        s.params["fold"] = fold
        log.info("explained by the model of fold %d (%s)", fold, model_dir)
        facts = explain_session(list(maps), age, model_dir, crop_box, crop_output,
                                ndi_output, scenarios, **settings, subject=subject,
                                session=session, device="auto", log=log.info)
        for path in (crop_output, ndi_output):
            s.sidecar(path, dict(facts, fold=fold))


# ------------------------------------------------------------- conservation summary
CONSERVATION_COLUMNS = ("subject", "session", "scenario", "start_value", "total",
                        "relative_error")


def conservation_table(maps: Sequence) -> tuple:
    """The conservation records of the LRP maps, read from the sidecars of relevance map
    stacks.

    ``maps``: scenario stacks of relevance maps (subject and session from their names,
    the scenarios from the sidecar). Returns ``(per_map, summary)``: one row per session
    and LRP scenario (:data:`CONSERVATION_COLUMNS`), and per scenario the number of maps,
    the median and the largest relative error and the session with the largest. An LRP
    scenario without a record is an error naming the file.
    """
    import pandas as pd

    from .io import sidecar_path
    from .layout import LRP_SCENARIOS, session_of

    rows = []
    for path in maps:
        subject, session = session_of(path)
        facts = json.loads(sidecar_path(path).read_text()).get("Facts", {})
        for key, scenario in sorted((facts.get("scenarios") or {}).items(),
                                    key=lambda kv: int(kv[0])):
            n = int(key)
            record = scenario.get("conservation")
            if record is None:
                if n in LRP_SCENARIOS:
                    raise ValueError(f"{path}: its sidecar has no conservation record for "
                                     f"scenario {n} (an LRP scenario) of sub-{subject} "
                                     f"ses-{session}; made before the record existed?")
                continue
            rows.append(dict(subject=subject, session=session, scenario=n,
                             start_value=record["start_value"], total=record["total"],
                             relative_error=record["relative_error"]))
    per_map = pd.DataFrame(rows, columns=list(CONSERVATION_COLUMNS)).sort_values(
        ["scenario", "subject", "session"], ignore_index=True)
    summary = []
    for n, df in per_map.groupby("scenario", sort=True):
        worst = df.loc[df["relative_error"].idxmax()]
        summary.append(dict(scenario=int(n), n_maps=len(df),
                            median_relative_error=float(df["relative_error"].median()),
                            max_relative_error=float(worst["relative_error"]),
                            worst_session=f"sub-{worst['subject']} ses-{worst['session']}"))
    return per_map, pd.DataFrame(summary, columns=["scenario", "n_maps",
                                                   "median_relative_error",
                                                   "max_relative_error", "worst_session"])


def run_relevance_conservation(maps: Sequence, per_map_out, summary_out, *, log_file=None,
                               threads: int = 1) -> None:
    """Rule relevance_conservation: every LRP map's conservation record in one table, and
    per scenario the median and largest relative error over the cohort."""
    from .io import atomic_write_text
    from .jobs import step

    with step("relevance_conservation",
              inputs={Path(p).name: p for p in maps},
              outputs=[per_map_out, summary_out], log_file=log_file, threads=threads):
        per_map, summary = conservation_table(maps)
        atomic_write_text(per_map_out, per_map.to_csv(sep="\t", index=False))
        atomic_write_text(summary_out, summary.to_csv(sep="\t", index=False))

