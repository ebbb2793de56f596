"""The jobs of the preprocessing rules (docs/method.md#2-preprocessing): one ``run_*``
function per rule in rules/preprocessing.smk, and each opens the job
(:func:`gamer_mril.jobs.step`), runs its step (:mod:`gamer_mril.preprocessing`) and
writes every output's provenance sidecar. ``maps`` and ``out`` dictionaries are keyed by
contrast (qT1, MWF, NDI), as the rules' named inputs and the sidecars' roles are. Each
setting keeps its config.yaml name (``preprocessing.<name>``) as keyword and in the
sidecar's Parameters."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from . import CONTRASTS
from . import templates
from .alignment import MAX_CENTRE_DISTANCE_MM, ants_errors, check_alignment
from .errors import InputError
from .geometry import MAX_CROP_CUT_SHARE_STOP
from .jobs import step
from .preprocessing import (step_brain_mask, step_coregister, step_crop,
                            step_register_template, step_remove_cerebellum,
                            step_resample_to_ndi, step_scale, step_skull_strip,
                            step_template_cerebellum, step_warp_mask_to_template)

log = logging.getLogger("gamer_mril")


def run_make_template_cerebellum(out, *, cerebellum_margin_mm: float, log_file=None,
                                 threads: int = 1) -> None:
    """Rule make_template_cerebellum: the MNI152 cerebellum mask, made once."""
    with step("make_template_cerebellum", inputs={},
              params={"cerebellum_margin_mm": cerebellum_margin_mm},
              outputs=[out], log_file=log_file, threads=threads) as s:
        s.sidecar(out, step_template_cerebellum(cerebellum_margin_mm, out))


def run_template_images(resolution: int, t1w_out, mask_out, *, log_file=None,
                        threads: int = 1) -> None:
    """Rule template_images: the MNI152 T1w image and brain mask at ``resolution`` mm,
    made once for every session's jobs."""
    with step("template_images", inputs={}, params={"resolution": int(resolution)},
              outputs=[t1w_out, mask_out], log_file=log_file, threads=threads) as s:
        facts = templates.write_template_images(resolution, t1w_out, mask_out)
        s.sidecar(t1w_out, {**facts, "Image": "T1w, intensities in [0, 1]"})
        s.sidecar(mask_out, {**facts, "Image": "brain mask"})


def run_scale_map(raw: Mapping, out: Mapping, units: Mapping, *, subject, session,
                  log_file=None, threads: int = 1) -> None:
    """Rule scale_map (step 1) for the three maps of a session. Every map is checked
    before a bad one stops the job, so one log names every problem of the session."""
    with step("scale_map", inputs=dict(raw), params={"units": dict(units)},
              outputs=list(out.values()), log_file=log_file, threads=threads,
              subject=subject, session=session) as s:
        bad = []
        for c in CONTRASTS:
            unit = units.get(c, "fraction")
            try:
                facts = step_scale(raw[c], out[c], c, unit, s.session)
            except InputError as err:
                log.error("%s", err)
                bad.append(str(err))
                continue
            s.sidecar(out[c], facts, inputs={"image": raw[c]}, params={"unit": unit})
        if bad:
            raise InputError(f"{s.session}: {len(bad)} bad input map(s):\n" + "\n".join(bad))


def run_skull_strip(qt1, out, *, skullstrip: str, given_mask=None, subject=None,
                    session=None, log_file=None, threads: int = 1) -> None:
    """Rule skull_strip (step 2a): the mask that strips the head, on the qT1 grid."""
    with step("skull_strip",
              inputs={"qT1": qt1, "given": [given_mask] if given_mask else []},
              params={"skullstrip": skullstrip}, outputs=[out], log_file=log_file,
              threads=threads, subject=subject, session=session) as s:
        s.sidecar(out, step_skull_strip(qt1, out, skullstrip, given_mask=given_mask))


def run_register_to_template(qt1, strip, template, out: Mapping, *, template_transform: str,
                             seed: int, subject=None, session=None, log_file=None,
                             threads: int = 1) -> None:
    """Rule register_to_template (step 2b): ``template`` the file of the MNI152 T1w image
    (rule template_images); ``out`` keys affine, warp, inverse_warp (SyN) or affine
    (Affine)."""
    with step("register_to_template",
              inputs={"qT1": qt1, "strip": strip, "template": template},
              params={"template_transform": template_transform, "seed": seed},
              outputs=list(out.values()), log_file=log_file, threads=threads, seed=seed,
              subject=subject, session=session) as s:
        facts = step_register_template(qt1, strip, template, template_transform, s.workdir,
                                       dict(out))
        for path in out.values():
            s.sidecar(path, facts)


def run_make_brain_mask(strip, xfm: Mapping, template_mask, out, *, skullstrip: str,
                        given: bool = False, subject=None, session=None, log_file=None,
                        threads: int = 1) -> None:
    """Rule make_brain_mask (step 2c): the brain mask on the qT1 grid; ``template_mask``
    the file of the MNI152 brain mask (rule template_images)."""
    with step("make_brain_mask",
              inputs={"strip": strip, "template_mask": template_mask, **dict(xfm)},
              params={"skullstrip": skullstrip, "given": bool(given)},
              outputs=[out], log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        s.sidecar(out, step_brain_mask(strip, dict(xfm), out, skullstrip, template_mask,
                                       given=given))


def run_coregister_to_ndi(ndi, moving: Mapping, out: Mapping, *, coregistration: str,
                          seed: int,
                          subject=None, session=None, log_file=None,
                          threads: int = 1,
                          max_centre_distance_mm: float = MAX_CENTRE_DISTANCE_MM) -> None:
    """Rule coregister_to_ndi (step 3): qT1 and MWF each registered to NDI.

    ``moving`` / ``out``: {contrast: scaled map} / {contrast: transform file}. Each pair is
    checked first (:func:`gamer_mril.alignment.check_alignment`), and an error of ANTs is
    re-raised naming the session and the pair."""
    with step("coregister_to_ndi", inputs={"fixed": ndi, **dict(moving)},
              params={"coregistration": coregistration, "seed": seed,
                      "max_centre_distance_mm": max_centre_distance_mm},
              outputs=list(out.values()),
              log_file=log_file, threads=threads, seed=seed, subject=subject,
              session=session) as s:
        # qT1 first, from the centres and a rotation search; its transform is MWF's
        # second start
        for c in sorted(moving, key=lambda c: c != "qT1"):
            start = out["qT1"] if c != "qT1" and "qT1" in out else None
            check_alignment(ndi, moving[c], c, s.session, max_centre_distance_mm)
            with ants_errors(f"the co-registration of {c} to NDI (rule coregister_to_ndi)",
                             s.session, {c: moving[c], "NDI": ndi}):
                facts = step_coregister(ndi, moving[c], out[c], coregistration,
                                        s.workdir / c, start, search=c == "qT1")
            s.sidecar(out[c], facts, inputs={"fixed": ndi, "moving": moving[c]})


def run_resample_to_ndi(ndi, moving: Mapping, xfms: Mapping, mask, out: Mapping, out_mask, *,
                        subject=None, session=None, log_file=None, threads: int = 1) -> None:
    """Rule resample_to_ndi (step 4): qT1 and MWF into the NDI grid, the mask applied.

    ``moving`` / ``xfms``: {qT1, MWF: scaled map / transform}; ``out``: all three."""
    inputs = {"ndi": ndi, **dict(moving), **{f"xfm_{c}": p for c, p in xfms.items()}, "mask": mask}
    with step("resample_to_ndi", inputs=inputs, outputs=[*out.values(), out_mask],
              log_file=log_file, threads=threads, subject=subject, session=session) as s:
        facts = step_resample_to_ndi(ndi, dict(moving), dict(xfms), mask, dict(out), out_mask)
        nmi = facts.pop("NormalizedMutualInformationWithNDI")
        for c, value in nmi.items():
            log.info("%s: normalized mutual information with NDI %.3f", c, value)
        for c, path in [*out.items(), (None, out_mask)]:
            s.sidecar(path, {**facts, **({"NormalizedMutualInformationWithNDI": nmi[c]}
                                         if c in nmi else {})})


def run_crop_to_brain(maps: Mapping, mask, out: Mapping, out_mask, out_box, *, crop_shape,
                      subject=None, session=None, log_file=None, threads: int = 1,
                      max_crop_cut_share_stop: float = MAX_CROP_CUT_SHARE_STOP) -> None:
    """Rule crop_to_brain (step 5): a fixed matrix centred on the brain, box recorded."""
    with step("crop_to_brain", inputs={**dict(maps), "mask": mask},
              params={"crop_shape": [int(n) for n in crop_shape],
                      "max_crop_cut_share_stop": max_crop_cut_share_stop},
              outputs=[*out.values(), out_mask, out_box], log_file=log_file, threads=threads,
              subject=subject, session=session) as s:
        facts = step_crop(dict(maps), mask, tuple(int(n) for n in crop_shape), dict(out), out_mask,
                          out_box, s.provenance(), s.session, max_crop_cut_share_stop)
        if facts["BrainCutShare"] > 0:
            log.warning("%s: the crop cuts %.1f%% of the brain (bounding box %s voxels, "
                        "crop_shape %s)", s.session, 100 * facts["BrainCutShare"],
                        facts["BrainBoundingBox_vox"], list(crop_shape))
        for path in [*out.values(), out_mask]:
            s.sidecar(path, facts)


def run_remove_cerebellum(maps: Mapping, mask, xfm: Mapping, cerebellum, out: Mapping,
                          out_cerebellum, out_cerebrum, *, subject=None, session=None,
                          log_file=None, threads: int = 1) -> None:
    """Rule remove_cerebellum (step 7): the network's inputs."""
    outputs = [*out.values(), out_cerebellum, out_cerebrum]
    with step("remove_cerebellum",
              inputs={**dict(maps), "mask": mask, "cerebellum": cerebellum, **dict(xfm)},
              outputs=outputs, log_file=log_file, threads=threads, subject=subject,
              session=session) as s:
        facts = step_remove_cerebellum(dict(maps), mask, dict(xfm), cerebellum, dict(out),
                                       out_cerebellum, out_cerebrum)
        for path in outputs:
            s.sidecar(path, facts)


def run_warp_brain_mask_to_template(mask, xfm: Mapping, template_mask, out, *, qt1=None,
                                    out_qt1=None, subject=None, session=None,
                                    log_file=None, threads: int = 1) -> None:
    """Rule warp_brain_mask_to_template: quality control of the template registration,
    the brain mask (and the qT1 map, for the reportlet) carried to MNI152, onto the grid
    of ``template_mask`` (the file of the MNI152 brain mask, rule template_images)."""
    inputs = {"mask": mask, **({"qT1": qt1} if qt1 else {}),
              "template_mask": template_mask, **dict(xfm)}
    outputs = [out] + ([out_qt1] if out_qt1 else [])
    with step("warp_brain_mask_to_template", inputs=inputs, params={}, outputs=outputs,
              log_file=log_file, threads=threads, subject=subject, session=session) as s:
        facts = step_warp_mask_to_template(mask, dict(xfm), template_mask, out,
                                           s.workdir, qt1, out_qt1)
        s.sidecar(out, facts)
        if out_qt1:
            s.sidecar(out_qt1)
