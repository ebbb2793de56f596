"""Names of the workflow's outputs: a BIDS-derivative dataset under one root folder.

Every session has two folders:

* ``<root>/sub-X/ses-Y/anat/`` -- preprocessing (docs/method.md#2-preprocessing): every
  step's maps, masks and transforms, each with its JSON provenance sidecar;
* ``<root>/sub-X/ses-Y/xai/`` -- relevance maps
  (docs/method.md#6-layer-wise-relevance-propagation) and their per-session assessment
  (docs/method.md#7-assessment): quantile masks, voxel inverting, top-N masks in MNI152.

File names follow ``sub-X_ses-Y[_key-value...]_<suffix><ext>``. The workflow's rules
(``Session(root, "{subject}", "{session}")`` gives the wildcard patterns), its scripts,
the audit and the tests all take the names from here: each name is defined once.
"""

from __future__ import annotations

import re

from .templates import TEMPLATE_SPACE as TPL

#: File suffix of each contrast.
SUFFIX = {"qT1": "T1map", "MWF": "MWFmap", "NDI": "NDImap"}
CONTRAST_OF = {v: k for k, v in SUFFIX.items()}
#: The transforms between a session and MNI152: the template registration of step 2b
#: (Session.template_xfm: affine, warp, inverse warp; an affine-only registration,
#: template_transform: Affine, has the affine alone) and, for the NDI and cropped grids,
#: the qT1 -> NDI co-registration of step 3 ("coreg").
TEMPLATE_XFM_KEYS = ("coreg", "affine", "warp", "inverse_warp")
#: The transforms each kind of template registration of step 2b writes
#: (``preprocessing.template_transform``; keys of Session.template_xfm): affine then SyN
#: writes the affine, the warp and its inverse, an affine-only registration the affine.
TEMPLATE_TRANSFORM_OUTPUTS = {"SyN": ("affine", "warp", "inverse_warp"),
                              "Affine": ("affine",)}


def template_transform_outputs(transform: str) -> tuple:
    """The keys of Session.template_xfm that a step-2b registration of kind ``transform``
    (SyN or Affine, :data:`TEMPLATE_TRANSFORM_OUTPUTS`) writes; the workflow's rules and
    the preprocessing step both ask here."""
    if transform not in TEMPLATE_TRANSFORM_OUTPUTS:
        raise ValueError(f"unknown template transform {transform!r}; expected one of "
                         f"{tuple(TEMPLATE_TRANSFORM_OUTPUTS)}")
    return TEMPLATE_TRANSFORM_OUTPUTS[transform]


#: The relevance scenarios made by LRP (docs/method.md#67-the-twelve-scenarios, 1-8, and
#: docs/method.md#68-beyond-the-paper-scenarios-13-to-20, 15-18), whose maps carry a
#: conservation record; the same as gamer_mril.lrp.SCENARIOS says (tested), here so that
#: the workflow can plan without importing torch.
LRP_SCENARIOS = tuple(range(1, 9)) + tuple(range(15, 19))

#: The preprocessing reportlets of a session (gamer_mril.reportlets): brain mask (step
#: 2c), co-registration of qT1 and MWF to NDI (steps 3-4), the session in MNI152 (step
#: 6), the cerebellum removed (step 7). The relevance reportlet comes after assessment.
REPORTLETS = ("brainmask", "coregT1map", "coregMWFmap", "template", "cerebellum")

XFM_CROP = {"from": "NDI", "to": "NDIcrop", "mode": "image"}
XFM_TPL = {"from": TPL, "to": "T1map", "mode": "image"}
XFM_TPL_INV = {"from": "T1map", "to": TPL, "mode": "image"}


#: The images of every map of the group statistics in MNI152 (docs/method.md#77-group-statistics-in-mni152):
#: the group means, the t of severe minus mild, its FWE and its uncorrected p.
GROUP_STATS = ("mean-severe", "mean-mild", "mean-all", "t", "pfwe", "p")


def group_stat(group_dir, stat, *, scenario=None, contrast=None) -> str:
    """One image of the group statistics in MNI152 under ``group_dir/stats``: of a
    scenario's normalised relevance (``desc-relnorm``) or of an input map (``contrast``,
    ``desc-screen``); ``stat`` one of :data:`GROUP_STATS`."""
    if stat not in GROUP_STATS:
        raise ValueError(f"unknown group statistic {stat!r}; expected one of {GROUP_STATS}")
    if (scenario is None) == (contrast is None):
        raise ValueError("a group statistic is of a scenario or of a contrast")
    label, desc = ((f"scenario-{int(scenario):02d}", "relnorm") if scenario is not None
                   else (f"map-{contrast}", "screen"))
    if stat.startswith("mean-"):
        return f"{group_dir}/stats/tpl-{TPL}_{label}_group-{stat[5:]}_desc-{desc}_mean.nii.gz"
    return f"{group_dir}/stats/tpl-{TPL}_{label}_desc-{desc}_stat-{stat}_statmap.nii.gz"


def bids(root, suffix, ext=".nii.gz", datatype="anat", subject="{subject}",
         session="{session}", **entities) -> str:
    """``<root>/sub-X/ses-Y/<datatype>/sub-X_ses-Y_<key-value...>_<suffix><ext>``."""
    name = "_".join([f"sub-{subject}", f"ses-{session}"]
                    + [f"{k}-{v}" for k, v in entities.items()] + [suffix])
    return f"{root}/sub-{subject}/ses-{session}/{datatype}/{name}{ext}"


_NAME = re.compile(r"(?:^|/)sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)_[^/]*$")


def session_of(path) -> tuple[str, str]:
    """``(subject, session)`` of a per-session output, read from its file name."""
    m = _NAME.search(str(path))
    if not m:
        raise ValueError(f"{path}: not a per-session file (sub-X_ses-Y_...)")
    return m["subject"], m["session"]


class Session:
    """The output names of one session under ``root``."""

    def __init__(self, root, subject, session):
        self.root, self.subject, self.session = str(root), str(subject), str(session)

    @property
    def key(self) -> str:
        return f"sub-{self.subject}_ses-{self.session}"

    def file(self, suffix, ext=".nii.gz", datatype="anat", **entities) -> str:
        return bids(self.root, suffix, ext, datatype, self.subject, self.session, **entities)

    # --------------------------------------------------------------- preprocessing
    def scaled(self, suffix) -> str:
        """Step 1: a map checked and scaled to [0, 1], in its own grid."""
        return self.file(suffix, desc="scaled")

    @property
    def skullstrip_mask(self) -> str:
        """Step 2a: the mask that strips the head before the template registration."""
        return self.file("mask", space="T1map", desc="skullstrip")

    @property
    def template_xfm(self) -> dict:
        """Step 2b: the registration of MNI152 to the stripped qT1 (the affine, the warp
        taking template images to the qT1 grid, and its inverse)."""
        return dict(affine=self.file("xfm", ext=".mat", **XFM_TPL, desc="affine"),
                    warp=self.file("xfm", **XFM_TPL, desc="warp"),
                    inverse_warp=self.file("xfm", **XFM_TPL_INV, desc="warp"))

    def template_xfm_of(self, transform: str) -> dict:
        """The part of :attr:`template_xfm` that a registration of kind ``transform``
        writes (:func:`template_transform_outputs`), in the same order."""
        keys = template_transform_outputs(transform)
        return {k: v for k, v in self.template_xfm.items() if k in keys}

    @property
    def native_brain_mask(self) -> str:
        """Step 2c: the brain mask on the qT1 grid."""
        return self.file("mask", space="T1map", desc="brain")

    def xfm_to_ndi(self, moving) -> str:
        """Step 3: the co-registration of ``moving`` (T1map or MWFmap) to NDI."""
        return self.file("xfm", ext=".mat", **{"from": moving, "to": "NDI", "mode": "image"})

    def ndi_grid(self, suffix) -> str:
        """Step 4: a masked map (or the mask) in the NDI grid."""
        return self.file(suffix, space="NDI", desc="brain")

    def crop_grid(self, suffix, desc="brain") -> str:
        """Steps 5 and 7: a map (or mask) in the cropped NDI grid."""
        return self.file(suffix, space="NDIcrop", desc=desc)

    @property
    def crop_box(self) -> str:
        """Step 5: the crop box (NDI grid -> cropped grid)."""
        return self.file("xfm", ext=".json", **XFM_CROP)

    def preproc(self, contrast) -> str:
        """Step 7: a network input (cropped grid, cerebellum removed)."""
        return self.crop_grid(SUFFIX[contrast], "preproc")

    @property
    def preproc_maps(self) -> dict:
        """{contrast: network input} in CONTRASTS order."""
        return {c: self.preproc(c) for c in SUFFIX}

    @property
    def cerebellum(self) -> str:
        return self.crop_grid("mask", "cerebellum")

    @property
    def cerebrum(self) -> str:
        return self.crop_grid("mask", "cerebrum")

    @property
    def region_means(self) -> str:
        """Mean of each network input over the cerebrum and each AAL3 region of it."""
        return self.file("means", ext=".tsv", space="NDIcrop", atlas="AAL3")

    @property
    def template_maps(self) -> str:
        """The three network inputs carried to MNI152 on the voxel screen's grid (one 4D
        image, contrasts in CONTRASTS order): the features of the screen baseline."""
        return self.file("maps", space=TPL, desc="screen")

    @property
    def template_brain_mask(self) -> str:
        """Quality control of the template registration: the brain mask (cropped grid)
        warped to MNI152."""
        return self.file("mask", space=TPL, desc="brain")

    @property
    def template_t1map(self) -> str:
        """Quality control of the template registration: the qT1 map (cropped grid,
        brain) carried to MNI152, for the MNI152 reportlet."""
        return self.file("T1map", space=TPL, desc="brain")

    def reportlet(self, name) -> str:
        """A visual quality-control figure (SVG, nireports) of the session: one of
        REPORTLETS or ``relevance``."""
        return self.file(name, ext=".svg", datatype="figures", desc="qc")

    @property
    def page(self) -> str:
        """The session's report page (gamer_mril.session_page), beside its session folder
        as NiPreps write theirs (``<root>/sub-X/sub-X_ses-Y.html``): it references the
        reportlets by relative path (``ses-Y/figures/...``)."""
        return f"{self.root}/sub-{self.subject}/{self.key}.html"

    # ------------------------------------------------------ relevance and assessment
    def relmaps(self, space) -> str:
        """Every requested scenario's relevance map as one scenario stack
        (gamer_mril.scenario_stack), in the cropped (NDIcrop) or the NDI grid."""
        return self.file("relmap", datatype="xai", space=space)

    @property
    def qmasks(self) -> str:
        """Every scenario's top-N quantile masks, one level image per scenario, as one
        scenario stack (cropped grid)."""
        return self.file("mask", datatype="xai", space="NDIcrop", desc="quantiles")

    def top_masks(self, level) -> str:
        """Every scenario's top-``level`` mask warped to MNI152, as one scenario stack."""
        return self.file("mask", datatype="xai", space=TPL, desc=f"top{int(level)}")

    @property
    def relnorm(self) -> str:
        """Every scenario's relevance, its positive part over the cerebrum divided by its
        sum there, warped to the voxel screen's MNI152 grid, as one scenario stack."""
        return self.file("relmap", datatype="xai", space=TPL, desc="relnorm")

    @property
    def mask_values(self) -> str:
        """Mean normalized value of each contrast in each scenario's top-N masks."""
        return self.file("maskvalues", ext=".tsv", datatype="xai", space="NDIcrop")

    @property
    def inverting(self) -> str:
        """The model's probability after voxel inverting, every scenario and N."""
        return self.file("inverting", ext=".tsv", datatype="xai", space="NDIcrop")
