"""The two per-session jobs: every step of a stage, for one session, in one process.

A cohort of thousands of sessions makes Snakemake's plan the bottleneck if every step is
its own job (about 1 ms per job and 0.1 ms per file name when the plan is built), so a
session has two jobs, each writing one folder (see :mod:`gamer_mril.layout`):

* :func:`preprocess_session` -> ``anat/``: METHOD.md 2, steps 1-7 and the QC warp;
* :func:`explain_session` -> ``xai/``: METHOD.md 6 (the twelve scenarios) and the
  per-session part of METHOD.md 7 (quantile masks, voxel inverting, top-N masks in
  MNI152).

Inside a job every step is still a step: it has a name (``scale_map``,
``coregister_to_ndi``, ... as in METHOD.md and the README), named inputs, outputs and
parameters, and every output gets its own provenance sidecar that records that step's
name, inputs (hashed) and parameters, so the audit walks the same chain as before. Each
step's seconds and the job's peak memory so far go to ``<folder>/..._timing.tsv``.
The steps' logic is in the stage modules; this module only wires files between them.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Mapping

import numpy as np

from . import CONTRASTS
from .errors import InputError
from .io import atomic_path
from .jobs import Job
from .layout import CONTRAST_OF, KEY, SUFFIX, Session

log = logging.getLogger("gamer_mril")


class Named(dict):
    """A dict whose keys are also attributes (the shape of Snakemake's named lists)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class StepRunner:
    """Runs the steps of one session's job in order and records their timing; as a
    context manager it writes the timing table when every step has succeeded."""

    def __init__(self, parent: Job, timing_path):
        self.parent, self.timing_path = parent, timing_path
        self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.write_timing()
        return False

    def run(self, rule: str, inputs: Mapping, outputs: Mapping, params: Mapping,
            body: Callable[[Job], object], label: str | None = None):
        """Run ``body`` as step ``rule`` (its sidecars name ``rule``, its inputs and params)."""
        smk = SimpleNamespace(rule=rule, input=Named(inputs), output=Named(outputs),
                              params=Named(params),
                              wildcards={"subject": self.parent.subject,
                                         "session": self.parent.session_id})
        workdir = self.parent.workdir / f"{rule}-{len(self.rows)}"
        workdir.mkdir(parents=True, exist_ok=True)
        name = rule if label is None else f"{rule} ({label})"
        log.info("step %s", name)
        start = time.perf_counter()
        try:
            result = body(Job(smk, workdir))
        except Exception as err:
            err.add_note(f"(in step {name} of {self.parent.session})")
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.rows.append((name, seconds, peak_mb))
        log.info("step %s done in %.1f s", name, seconds)
        return result

    def write_timing(self):
        with atomic_path(self.timing_path) as tmp:
            lines = ["step\tseconds\tpeak_rss_mb"]
            lines += [f"{n}\t{s:.3f}\t{m:.0f}" for n, s, m in self.rows]
            tmp.write_text("\n".join(lines) + "\n")


#: Keys of the three transforms between the cropped grid and MNI152 (Session.template_xfm).
XFM_KEYS = ("affine", "warp", "inverse_warp")


def _xfm(named) -> dict:
    """The template transforms among a step's named inputs."""
    return {k: named[k] for k in XFM_KEYS}


def _grid(name_of, mask) -> dict:
    """{t1map, mwfmap, ndimap: name_of(suffix)} plus the grid's brain mask."""
    return {**{KEY[c]: name_of(SUFFIX[c]) for c in CONTRASTS}, "mask": mask}


# ------------------------------------------------------------------ preprocessing
def preprocess_session(parent: Job, folder, raw: Mapping, cerebellum, params: Mapping,
                       given_mask=None) -> None:
    """METHOD.md 2 for one session, every output in ``folder`` (``<root>/sub-X/ses-Y/anat``).

    ``raw``: {contrast: raw map}; ``cerebellum``: the template cerebellum mask;
    ``params``: units ({contrast: unit}), skullstrip, template_resolution, seed,
    coregistration, crop_shape, template_transform (the config's preprocessing block)."""
    from . import preprocessing as P

    s = Session.of_dir(folder)
    p = params
    with StepRunner(parent, s.timing("anat")) as steps:
        # Every map is checked before the job stops on a bad one, so one run names every
        # problem of the session.
        bad = []
        for c in CONTRASTS:
            unit = p["units"].get(c, "fraction")

            def scale(j, c=c):
                facts = P.step_scale(j.smk.input.image, j.smk.output.image, c,
                                     j.params["unit"], j.session)
                j.sidecar(j.smk.output.image, facts)

            try:
                steps.run("scale_map", {"image": raw[c]}, {"image": s.scaled(SUFFIX[c])},
                          {"unit": unit}, scale, label=c)
            except InputError as err:
                log.error("%s", err)
                bad.append(str(err))
        if bad:
            raise InputError(f"{parent.session}: {len(bad)} bad input map(s):\n"
                             + "\n".join(bad))

        def brain_mask(j):
            i, o = j.smk.input, j.smk.output
            facts = P.step_brain_mask(i.t1map, o.mask, j.params["method"], j.workdir,
                                      j.params["template_resolution"],
                                      given_mask=i.given[0] if i.given else None)
            j.sidecar(o.mask, facts)

        steps.run("make_brain_mask",
                  {"t1map": s.scaled("T1map"), "given": [given_mask] if given_mask else []},
                  {"mask": s.native_brain_mask},
                  {"method": p["skullstrip"], "template_resolution": p["template_resolution"],
                   "seed": p["seed"]}, brain_mask)

        for moving in ("T1map", "MWFmap"):
            def coregister(j):
                i, o = j.smk.input, j.smk.output
                facts = P.step_coregister(i.fixed, i.moving, o.xfm, j.params["transform"],
                                          j.workdir)
                j.sidecar(o.xfm, facts)

            steps.run("coregister_to_ndi",
                      {"fixed": s.scaled("NDImap"), "moving": s.scaled(moving)},
                      {"xfm": s.xfm_to_ndi(moving)},
                      {"transform": p["coregistration"], "seed": p["seed"]}, coregister,
                      label=CONTRAST_OF[moving])

        def resample(j):
            i, o = j.smk.input, j.smk.output
            facts = P.step_resample_to_ndi(
                i.ndi, {"qT1": i.t1map, "MWF": i.mwfmap},
                {"qT1": i.xfm_t1map, "MWF": i.xfm_mwfmap}, i.mask,
                {"qT1": o.t1map, "MWF": o.mwfmap, "NDI": o.ndimap}, o.mask)
            for name in ("t1map", "mwfmap", "ndimap", "mask"):
                j.sidecar(o[name], facts)

        ndi = _grid(s.ndi_grid, s.ndi_grid("mask"))            # masked, NDI grid
        crop_grid = _grid(s.crop_grid, s.crop_grid("mask"))    # cropped
        steps.run("resample_to_ndi",
                  {"ndi": s.scaled("NDImap"), "t1map": s.scaled("T1map"),
                   "mwfmap": s.scaled("MWFmap"), "xfm_t1map": s.xfm_to_ndi("T1map"),
                   "xfm_mwfmap": s.xfm_to_ndi("MWFmap"), "mask": s.native_brain_mask},
                  ndi, {}, resample)

        names = tuple(KEY[c] for c in CONTRASTS)

        def crop(j):
            i, o = j.smk.input, j.smk.output
            facts = P.step_crop({n: i[n] for n in names}, i.mask, tuple(j.params["shape"]),
                                {n: o[n] for n in names}, o.mask, o.box, j.provenance())
            for name in names + ("mask",):
                j.sidecar(o[name], facts)

        steps.run("crop_to_brain", ndi, {"box": s.crop_box, **crop_grid},
                  {"shape": list(p["crop_shape"])}, crop)

        def register(j):
            i, o = j.smk.input, j.smk.output
            out = _xfm(o)
            facts = P.step_register_template(i.t1map, i.mask, j.params["template_resolution"],
                                             j.params["transform"], j.workdir, out)
            for path in out.values():
                j.sidecar(path, facts)

        steps.run("register_to_template",
                  {"t1map": s.crop_grid("T1map"), "mask": s.crop_grid("mask")},
                  s.template_xfm,
                  {"template_resolution": p["template_resolution"],
                   "transform": p["template_transform"], "seed": p["seed"]}, register)

        def remove(j):
            i, o = j.smk.input, j.smk.output
            facts = P.step_remove_cerebellum({n: i[n] for n in names}, i.mask, _xfm(i),
                                             i.cerebellum, {n: o[n] for n in names},
                                             o.cerebellum, o.cerebrum)
            for name in names + ("cerebellum", "cerebrum"):
                j.sidecar(o[name], facts)

        steps.run("remove_cerebellum",
                  {**crop_grid, "cerebellum": str(cerebellum), **s.template_xfm},
                  {**{KEY[c]: s.preproc(c) for c in CONTRASTS},
                   "cerebellum": s.cerebellum, "cerebrum": s.cerebrum}, {}, remove)

        def warp_mask(j):
            i, o = j.smk.input, j.smk.output
            facts = P.step_warp_mask_to_template(i.mask, _xfm(i),
                                                 j.params["template_resolution"], o.mask)
            j.sidecar(o.mask, facts)

        steps.run("warp_brain_mask_to_template",
                  {"mask": s.crop_grid("mask"), **s.template_xfm},
                  {"mask": s.template_brain_mask},
                  {"template_resolution": p["template_resolution"]}, warp_mask)


# ----------------------------------------------------- relevance and assessment
def explain_session(parent: Job, folder, anat_folder, model_dirs: Mapping, split_path,
                    age: float, params: Mapping) -> None:
    """METHOD.md 6 and the per-session part of 7 for one session, into ``folder``
    (``<root>/sub-X/ses-Y/xai``), from its ``anat`` folder.

    ``model_dirs``: {fold: model folder}; ``split_path``: the split table (None in
    frozen-model mode: the best fold's model explains every session); ``params``:
    scenarios, ig_steps, levels, heatmap_level, template_resolution."""
    from .explain import choose_model
    from .split import read_split

    s = Session.of_dir(folder)
    a = Session.of_dir(anat_folder)
    if (a.subject, a.session) != (s.subject, s.session):
        raise ValueError(f"{anat_folder} and {folder} are different sessions")
    p = params
    scenarios = [int(n) for n in p["scenarios"]]
    levels = [int(n) for n in p["levels"]]
    frozen = split_path is None
    split = None if frozen else read_split(split_path)
    fold, model_dir = choose_model(model_dirs, s.subject, s.session, split)
    log.info("explained and inverted by the model of fold %d (%s)", fold, model_dir)
    model_files = [str(Path(model_dir) / "model.safetensors"),
                   str(Path(model_dir) / "model.json")]
    maps = {KEY[c]: a.preproc(c) for c in CONTRASTS}
    relmaps = {n: s.relmap("NDIcrop", n) for n in scenarios}
    with StepRunner(parent, s.timing("xai")) as steps:
        steps.run("explain_session",
                  {**maps, "box": a.crop_box, **({} if frozen else {"split": split_path}),
                   "model": model_files},
                  {**{f"crop_{n:02d}": relmaps[n] for n in scenarios},
                   **{f"ndi_{n:02d}": s.relmap("NDI", n) for n in scenarios}},
                  {"age": age, "scenarios": scenarios, "ig_steps": p["ig_steps"],
                   "frozen_models": frozen, "fold": fold},
                  lambda j: _explain(j, model_dir, fold, scenarios))
        qmasks = {f"mask_{n:02d}": s.qmask(n) for n in scenarios}
        steps.run("quantile_masks",
                  {**maps, "cerebrum": a.cerebrum,
                   **{f"relmap_{n:02d}": relmaps[n] for n in scenarios}},
                  {**qmasks, "values": s.mask_values},
                  {"scenarios": scenarios, "levels": levels},
                  lambda j: _quantile_masks(j, scenarios, levels))
        steps.run("invert_session", {**maps, "model": model_files, **qmasks},
                  {"tsv": s.inverting},
                  {"age": age, "scenarios": scenarios, "levels": levels, "fold": fold},
                  lambda j: _invert(j, model_dir, fold, scenarios, levels))
        level = int(p["heatmap_level"])
        steps.run("warp_top_masks", {**qmasks, **a.template_xfm},
                  {f"top_{n:02d}": s.top_mask(n, level) for n in scenarios},
                  {"scenarios": scenarios, "levels": levels, "level": level,
                   "template_resolution": p["template_resolution"]},
                  lambda j: _warp_top_masks(j, scenarios, levels, level))


def _maps(j) -> list:
    return [j.smk.input[KEY[c]] for c in CONTRASTS]


def _explain(j: Job, model_dir, fold: int, scenarios) -> None:
    from .explain import explain_session as explain

    o, p = j.smk.output, j.params
    crop = {n: o[f"crop_{n:02d}"] for n in scenarios}
    ndi = {n: o[f"ndi_{n:02d}"] for n in scenarios}
    facts = explain(_maps(j), p["age"], model_dir, j.smk.input.box, crop, ndi,
                    ig_steps=p["ig_steps"], device="auto", log=log.info)
    common = {k: v for k, v in facts.items() if k != "scenarios"}
    for n in scenarios:
        scenario_facts = dict(common, scenario=facts["scenarios"][n], fold=fold)
        for path in (crop[n], ndi[n]):
            j.sidecar(path, scenario_facts)


def _quantile_masks(j: Job, scenarios, levels) -> None:
    """Every scenario's top-N masks as one level image; the mean normalized value of each
    contrast inside them."""
    import nibabel as nib

    from . import assessment as A
    from .explain import load_session_images
    from .io import save_nifti

    i, o = j.smk.input, j.smk.output
    images, affine = load_session_images(_maps(j))
    brain = np.asarray(nib.load(i.cerebrum).dataobj) > 0
    masks = {}
    for n in scenarios:
        path = i[f"relmap_{n:02d}"]
        img = nib.load(path)
        if not np.allclose(img.affine, affine, atol=1e-4):
            raise ValueError(f"{path}: grid differs from the session's maps")
        rel = np.asarray(img.dataobj, dtype=np.float32)
        kind = "individual" if rel.ndim == 4 else "combined"
        m = A.quantile_masks(np.moveaxis(rel, -1, 0) if kind == "individual" else rel,
                             brain, levels, kind=kind)
        masks[n] = m
        lvl = A.level_image(m, levels, kind)
        if kind == "individual":
            lvl = np.moveaxis(lvl, 0, -1)                 # (L, D, H, W) -> (D, H, W, L)
        save_nifti(lvl, affine, o[f"mask_{n:02d}"])
        counts = m.reshape(m.shape[:2] + (-1,)).sum(axis=-1)
        vols = list(A.CONTRASTS) if kind == "individual" else ["combined"]
        voxels = {v: {int(lv): int(counts[k, c]) for k, lv in enumerate(levels)}
                  for c, v in enumerate(vols)}
        empty = [v for v in vols if voxels[v][int(levels[-1])] == 0]
        log.info("scenario %2d (%s): top-%d mask %s voxels", n, kind, levels[-1],
                 {v: voxels[v][int(levels[-1])] for v in vols})
        j.sidecar(o[f"mask_{n:02d}"],
                  dict(scenario=int(n), kind=kind, volumes=vols, levels=list(levels),
                       encoding="value = smallest N whose top-N mask holds the voxel, 0 = "
                                "in no mask; top-N mask = (value > 0) & (value <= N)",
                       brain_voxels=int(brain.sum()), mask_voxels=voxels,
                       empty_volumes=empty),
                  inputs={"relmap": path, "cerebrum": i.cerebrum})
    df = A.session_mask_values(images, masks, levels)
    df.insert(0, "session", j.session_id)
    df.insert(0, "subject", j.subject)
    with atomic_path(o["values"]) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def _read_level_image(path):
    """(level image with one volume per contrast first, nibabel image)."""
    import nibabel as nib

    img = nib.load(path)
    lvl = np.asarray(img.dataobj)
    return (np.moveaxis(lvl, -1, 0) if lvl.ndim == 4 else lvl), img


def _invert(j: Job, model_dir, fold: int, scenarios, levels) -> None:
    """Voxel inverting: the model's probability after x -> 1 - x inside every scenario's
    top-N mask, and without inverting (scenario 0, N 0)."""
    import torch

    from . import assessment as A
    from .explain import load_session_images
    from .training import load_model, resolve_device

    device = resolve_device("auto")
    model = load_model(model_dir, device=device)
    images, _ = load_session_images(_maps(j), model.contrasts)
    # The network input of training and explanation: clipped to [0, 1], float16 values.
    images = np.clip(images, 0.0, 1.0).astype(np.float16).astype(np.float32)

    def predict(batch, ages):
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
            a = torch.from_numpy(np.asarray(ages, dtype=np.float32)).to(device)
            return model(x, a, return_details=True)["p"].double().cpu().numpy()

    one = {n: [A.masks_from_levels(_read_level_image(j.smk.input[f"mask_{n:02d}"])[0],
                                   levels)] for n in scenarios}          # one session
    _, probs = A.inverting_auc(predict, images[None], [j.params["age"]], [0], one, levels,
                               batch_size=1, return_probabilities=True)
    probs = probs.drop(columns="session")
    probs.insert(0, "fold", fold)
    probs.insert(0, "session", j.session_id)
    probs.insert(0, "subject", j.subject)
    log.info("baseline probability %.6f",
             float(probs.loc[probs["scenario"] == 0, "prob"].iloc[0]))
    with atomic_path(j.smk.output.tsv) as tmp:
        probs.to_csv(tmp, sep="\t", index=False)


def _warp_top_masks(j: Job, scenarios, levels, level: int) -> None:
    """Every scenario's top-``level`` mask to MNI152 (nearest neighbour, the session's
    saved transforms); one volume per contrast for individual maps."""
    from . import assessment as A
    from .io import save_nifti

    i, o = j.smk.input, j.smk.output
    xfm = _xfm(i)
    k = list(levels).index(int(level))
    for n in scenarios:
        lvl, img = _read_level_image(i[f"mask_{n:02d}"])
        individual = img.ndim == 4
        m = A.masks_from_levels(lvl if individual else lvl[None], levels)[k]   # (V, D, H, W)
        affine = img.affine
        warped, tpl_affine = A.warp_masks_to_template(m, affine, xfm,
                                                      j.params["template_resolution"])
        out = np.moveaxis(warped, 0, -1) if individual else warped[0]
        save_nifti(out.astype(np.uint8), tpl_affine, o[f"top_{n:02d}"])
        names = list(A.CONTRASTS) if individual else ["combined"]
        facts = dict(scenario=int(n), level=int(level), volumes=names,
                     interpolation="nearestNeighbor",
                     session_voxels={v: int(m[c].sum()) for c, v in enumerate(names)},
                     template_voxels={v: int(warped[c].sum()) for c, v in enumerate(names)})
        log.info("scenario %2d: %s", n, facts["template_voxels"])
        j.sidecar(o[f"top_{n:02d}"], facts, inputs={"mask": i[f"mask_{n:02d}"], **xfm})


