"""The settings of each stage, read once from the validated config into small typed
objects: preprocessing (docs/method.md#2-preprocessing), quality control
(docs/method.md#28-quality-control-numbers), training (docs/method.md#5-training),
relevance (docs/method.md#6-layer-wise-relevance-propagation) and assessment
(docs/method.md#7-assessment).

``config.yaml`` is validated against ``schemas/config.schema.yaml`` first; what the schema
cannot say (the levels that follow from others, a control level that must be a level) is
derived and checked here, once, and every rule reads the result. Each field keeps the name
of its ``config.yaml`` entry, and the job functions and sidecars use the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

#: The scenarios of the paper's Table I (docs/method.md#67-the-twelve-scenarios).
PAPER_SCENARIOS = tuple(range(1, 13))
#: Every scenario: the paper's twelve, then 13-20 beyond the paper
#: (docs/method.md#68-beyond-the-paper-scenarios-13-to-20).
ALL_SCENARIOS = tuple(range(1, 21))

#: Defaults of the settings of the scenarios beyond the paper (the schema's, tested):
#: SmoothGrad's copies, the sd of its noise as a fraction of the [0, 1] range and the
#: seed of the noise (13, 14); the gamma rule's gamma (15-18); the sd in mm of the
#: Gaussian that smooths integrated gradients' reference (19, 20).
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_NOISE = 0.15
SMOOTHGRAD_SEED = 0
GAMMA = 0.25
IG_REFERENCE_SIGMA_MM = 10.0


def scenario_numbers(numbers) -> tuple:
    """The scenario numbers asked for, ascending and once each; ``ValueError`` for an empty
    list or a number outside :data:`ALL_SCENARIOS` (1-20)."""
    out = tuple(sorted({int(n) for n in numbers}))
    if not out:
        raise ValueError("no scenario asked for")
    unknown = [n for n in out if n not in ALL_SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {ALL_SCENARIOS[0]}-"
                         f"{ALL_SCENARIOS[-1]} ({list(ALL_SCENARIOS)})")
    return out


def _from_section(cls, section: Mapping, name: str):
    """``cls`` built from a config section that the schema validated (and filled with its
    defaults): every field is required, a missing one names the section and the key."""
    missing = [f.name for f in fields(cls) if f.name not in section]
    if missing:
        raise ValueError(f"{name}: missing {', '.join(missing)}")
    return cls(**{f.name: section[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class PreprocessingSettings:
    """``preprocessing:`` of the config (steps 2-7); each rule passes the fields it uses
    under these names, and the job writes them so in its sidecar's Parameters."""
    skullstrip: str
    coregistration: str
    crop_shape: tuple
    skullstrip_template_resolution: int
    template_transform: str
    template_resolution: int
    cerebellum_margin_mm: float
    seed: int
    max_centre_distance_mm: float
    max_crop_cut_share_stop: float

    @classmethod
    def from_config(cls, section: Mapping) -> PreprocessingSettings:
        s = _from_section(cls, section, "preprocessing")
        return replace(s, crop_shape=tuple(int(n) for n in s.crop_shape))


@dataclass(frozen=True)
class QcSettings:
    """``qc:`` of the config: the flag thresholds, the reportlets' cuts, the sessions
    excluded by hand ({session key: reason}, as the config gives it) and the kinds of QC
    flag that leave a session out (the schema lists them: gamer_mril.qc.FLAG_KINDS),
    once each."""
    min_dice: float
    mad_limit: float
    reportlet_cuts: int
    exclude: object
    max_clipped_share: float
    max_crop_cut_share: float
    exclude_flagged: tuple

    @classmethod
    def from_config(cls, section: Mapping) -> QcSettings:
        s = _from_section(cls, section, "qc")
        return replace(s, exclude_flagged=tuple(dict.fromkeys(s.exclude_flagged)))


@dataclass(frozen=True)
class TrainingSettings:
    """``training:`` of the config. :meth:`job_settings` is what a training job gets (and
    records): every setting but those of the workflow (``gpu``, ``frozen_models``)."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    growth: int
    selection: str
    selection_window: int
    precision: str
    lr_schedule: str
    patience: int
    restarts: int
    augment: Mapping
    gpu: bool
    frozen_models: object

    @classmethod
    def from_config(cls, section: Mapping) -> TrainingSettings:
        section = {"frozen_models": None, **section}
        return _from_section(cls, section, "training")

    def job_settings(self) -> dict:
        """The settings of a training job, a plain mapping under the config's names."""
        out = asdict(self)
        for k in ("gpu", "frozen_models"):
            out.pop(k)
        return out


def _bounded(section, key, default, kind, low, high, low_open=False):
    value = kind(section.get(key, default))
    if value < low or (low_open and value == low) or value > high:
        raise ValueError(f"relevance.{key} = {value} must lie in "
                         f"{'(' if low_open else '['}{low}, {high}]")
    return value


@dataclass(frozen=True)
class RelevanceSettings:
    """``relevance:`` of the config: the scenarios to compute (ascending), the points of
    the integrated-gradients path (scenarios 10, 12, 19, 20), SmoothGrad's copies, noise
    and seed (13, 14), the gamma rule's gamma (15-18) and the sd in mm of the smoothed
    reference of integrated gradients (19, 20)."""
    scenarios: tuple
    ig_steps: int
    smoothgrad_samples: int = SMOOTHGRAD_SAMPLES
    smoothgrad_noise: float = SMOOTHGRAD_NOISE
    smoothgrad_seed: int = SMOOTHGRAD_SEED
    gamma: float = GAMMA
    ig_reference_sigma_mm: float = IG_REFERENCE_SIGMA_MM

    @classmethod
    def from_config(cls, section: Mapping) -> RelevanceSettings:
        """Missing keys of the scenarios beyond the paper take the defaults above (the
        schema fills them in for the workflow); out-of-range values are a ValueError."""
        return cls(scenarios=scenario_numbers(section["scenarios"]),
                   ig_steps=int(section["ig_steps"]),
                   smoothgrad_samples=_bounded(section, "smoothgrad_samples",
                                               SMOOTHGRAD_SAMPLES, int, 1, 1000),
                   smoothgrad_noise=_bounded(section, "smoothgrad_noise", SMOOTHGRAD_NOISE,
                                             float, 0.0, 1.0, low_open=True),
                   smoothgrad_seed=_bounded(section, "smoothgrad_seed", SMOOTHGRAD_SEED,
                                            int, 0, 2**32 - 1),
                   gamma=_bounded(section, "gamma", GAMMA, float, 0.0, 100.0),
                   ig_reference_sigma_mm=_bounded(section, "ig_reference_sigma_mm",
                                                  IG_REFERENCE_SIGMA_MM, float, 0.0, 100.0,
                                                  low_open=True))


def _at_least(section, key, default, low):
    value = int(section.get(key, default))
    if value < low:
        raise ValueError(f"assessment.{key} = {value} must be at least {low}")
    return value


#: How the workflow chooses its scenario (docs/method.md#74-controls-and-uncertainty-of-voxel-inverting)
#: and the levels of the AOPC behind the default choice.
CHOICES = ("aopc", "paper")
CHOICE_LEVELS = (5, 10, 20)


@dataclass(frozen=True)
class AssessmentSettings:
    """``assessment:`` of the config. ``levels``: the configured top-N levels and
    ``heatmap_level`` (the level of Table IV, the chosen scenario and the group heatmaps),
    ascending; ``control_levels``: the levels of the LeRF and random controls (unset in
    the config: every level), each one of ``levels``; ``choice``: how the workflow
    chooses its scenario (``aopc``: the largest AOPC over ``choice_levels`` that clears
    its random band; ``paper``: the largest AUC drop at ``heatmap_level``); each of
    ``choice_levels`` must be a level and a control level."""
    levels: tuple
    heatmap_level: int
    control_levels: tuple
    random_masks: int
    n_permutations: int
    n_bootstrap: int
    seed: int
    choice: str = "aopc"
    choice_levels: tuple = CHOICE_LEVELS
    #: Permutations of the voxelwise group tests in MNI152 (docs/method.md#77-group-statistics-in-mni152).
    group_permutations: int = 5000

    @classmethod
    def from_config(cls, section: Mapping) -> AssessmentSettings:
        heat = int(section["heatmap_level"])
        levels = tuple(sorted({int(n) for n in section["levels"]} | {heat}))
        control = tuple(sorted(int(n) for n in section.get("control_levels") or levels))
        if not set(control) <= set(levels):
            raise ValueError(f"assessment.control_levels {list(control)} must be among "
                             f"the levels {list(levels)}")
        choice, choice_levels = _choice(section, levels, control)
        return cls(levels=levels, heatmap_level=heat, control_levels=control,
                   random_masks=int(section["random_masks"]),
                   n_permutations=int(section["n_permutations"]),
                   n_bootstrap=int(section["n_bootstrap"]), seed=int(section["seed"]),
                   choice=choice, choice_levels=choice_levels,
                   group_permutations=_at_least(section, "group_permutations", 5000, 100))


def _choice(section: Mapping, levels: tuple, control: tuple) -> tuple:
    """``(choice, choice_levels)`` of ``assessment:``, checked against the levels, the
    control levels and the random masks the AOPC's band needs."""
    choice = str(section.get("choice", "aopc"))
    if choice not in CHOICES:
        raise ValueError(f"assessment.choice = {choice!r} must be one of {list(CHOICES)}")
    chosen = tuple(sorted({int(n) for n in section.get("choice_levels", CHOICE_LEVELS)}))
    if not chosen:
        raise ValueError("assessment.choice_levels is empty: give at least one level")
    for name, allowed in (("assessment.levels", levels),
                          ("assessment.control_levels", control)):
        missing = sorted(set(chosen) - set(allowed))
        if missing:
            raise ValueError(f"assessment.choice_levels {list(chosen)}: {missing} not in "
                             f"{name} {list(allowed)} (the AOPC needs the controls at "
                             f"every choice level)")
    if choice == "aopc" and int(section["random_masks"]) < 2:
        raise ValueError(f"assessment.choice = aopc needs assessment.random_masks >= 2 "
                         f"(the AOPC's random band), not {section['random_masks']}; or "
                         f"set assessment.choice: paper")
    return choice, chosen
