"""The settings of the relevance and assessment stages, read once from the validated
config into small typed objects (docs/method.md#6-layer-wise-relevance-propagation,
docs/method.md#7-assessment).

``config.yaml`` is validated against ``schemas/config.schema.yaml`` first; what the schema
cannot say (the levels that follow from others, a control level that must be a level) is
derived and checked here, once, and every rule reads the result. Each field keeps the name
of its ``config.yaml`` entry, and the job functions and sidecars use the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: The scenarios of the paper's Table I.
ALL_SCENARIOS = tuple(range(1, 13))


def scenario_numbers(numbers) -> tuple:
    """The scenario numbers asked for, ascending and once each; ``ValueError`` for an empty
    list or a number outside 1-12."""
    out = tuple(sorted({int(n) for n in numbers}))
    if not out:
        raise ValueError("no scenario asked for")
    unknown = [n for n in out if n not in ALL_SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: 1-12")
    return out


@dataclass(frozen=True)
class RelevanceSettings:
    """``relevance:`` of the config: the scenarios to compute (ascending) and the points of
    the integrated-gradients path."""
    scenarios: tuple
    ig_steps: int

    @classmethod
    def from_config(cls, section: Mapping) -> RelevanceSettings:
        return cls(scenarios=scenario_numbers(section["scenarios"]),
                   ig_steps=int(section["ig_steps"]))


@dataclass(frozen=True)
class AssessmentSettings:
    """``assessment:`` of the config. ``levels``: the configured top-N levels and
    ``heatmap_level`` (the level of Table IV, the chosen scenario and the group heatmaps),
    ascending; ``control_levels``: the levels of the LeRF and random controls (unset in
    the config: every level), each one of ``levels``."""
    levels: tuple
    heatmap_level: int
    control_levels: tuple
    random_masks: int
    n_permutations: int
    n_bootstrap: int
    seed: int

    @classmethod
    def from_config(cls, section: Mapping) -> AssessmentSettings:
        heat = int(section["heatmap_level"])
        levels = tuple(sorted({int(n) for n in section["levels"]} | {heat}))
        control = tuple(sorted(int(n) for n in section.get("control_levels") or levels))
        if not set(control) <= set(levels):
            raise ValueError(f"assessment.control_levels {list(control)} must be among "
                             f"the levels {list(levels)}")
        return cls(levels=levels, heatmap_level=heat, control_levels=control,
                   random_masks=int(section["random_masks"]),
                   n_permutations=int(section["n_permutations"]),
                   n_bootstrap=int(section["n_bootstrap"]), seed=int(section["seed"]))
