"""The relevance and assessment settings read once from the config (gamer_mril.settings)."""

import pytest
import yaml

from gamer_mril.settings import AssessmentSettings, RelevanceSettings, scenario_numbers


def _assessment(**over):
    section = dict(levels=[30, 10, 50], heatmap_level=40, n_permutations=99, seed=3,
                   random_masks=2, n_bootstrap=10)
    section.update(over)
    return section


def test_levels_gain_the_heatmap_level_and_controls_default_to_all():
    s = AssessmentSettings.from_config(_assessment())
    assert s.levels == (10, 30, 40, 50) and s.heatmap_level == 40
    assert s.control_levels == (10, 30, 40, 50)
    assert (s.random_masks, s.n_permutations, s.n_bootstrap, s.seed) == (2, 99, 10, 3)
    s = AssessmentSettings.from_config(_assessment(control_levels=[50, 40]))
    assert s.control_levels == (40, 50)


def test_a_control_level_must_be_a_level():
    with pytest.raises(ValueError, match=r"control_levels \[20\] must be among"):
        AssessmentSettings.from_config(_assessment(control_levels=[20]))


def test_scenarios_sorted_once_and_known():
    assert RelevanceSettings.from_config({"scenarios": [7, 3, 3], "ig_steps": 4}) == \
        RelevanceSettings(scenarios=(3, 7), ig_steps=4)
    with pytest.raises(ValueError, match="unknown scenarios"):
        scenario_numbers([0, 5])
    with pytest.raises(ValueError, match="no scenario"):
        scenario_numbers([])


def test_unknown_scenarios_are_listed_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown scenarios \[21\]; known: 1-20 \(\[1, 2, "):
        scenario_numbers([3, 21])
    assert scenario_numbers(range(20, 0, -1)) == tuple(range(1, 21))


def test_the_settings_of_the_scenarios_beyond_the_paper():
    s = RelevanceSettings.from_config({"scenarios": [20, 13], "ig_steps": 8,
                                       "smoothgrad_samples": 24, "smoothgrad_noise": 0.1,
                                       "smoothgrad_seed": 7, "gamma": 0.5,
                                       "ig_reference_sigma_mm": 6})
    assert s == RelevanceSettings(scenarios=(13, 20), ig_steps=8, smoothgrad_samples=24,
                                  smoothgrad_noise=0.1, smoothgrad_seed=7, gamma=0.5,
                                  ig_reference_sigma_mm=6.0)
    assert isinstance(s.ig_reference_sigma_mm, float) and isinstance(s.smoothgrad_samples, int)
    for key, bad in (("smoothgrad_samples", 0), ("smoothgrad_noise", 0.0),
                     ("smoothgrad_noise", 1.5), ("gamma", -0.1),
                     ("ig_reference_sigma_mm", 0), ("smoothgrad_seed", -1)):
        with pytest.raises(ValueError, match=f"relevance.{key}"):
            RelevanceSettings.from_config({"scenarios": [1], "ig_steps": 1, key: bad})


def test_defaults_of_the_new_settings_are_the_schemas_and_the_configs():
    """One default per setting: the schema's, the dataclass's and config.yaml's agree."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    schema = yaml.safe_load((root / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["relevance"]["properties"]
    config = yaml.safe_load((root / "config.yaml").read_text())["relevance"]
    fields = RelevanceSettings.__dataclass_fields__
    assert set(props) == set(fields)
    for name in ("smoothgrad_samples", "smoothgrad_noise", "smoothgrad_seed", "gamma",
                 "ig_reference_sigma_mm"):
        assert props[name]["default"] == fields[name].default == config[name], name
        assert props[name]["description"]
    assert props["scenarios"]["default"] == config["scenarios"] == list(range(1, 21))
    assert props["scenarios"]["items"]["maximum"] == 20


def test_every_field_is_a_config_entry():
    """One name per setting: each field of the objects is an entry of config.yaml's
    section (the derived ones included)."""
    from pathlib import Path

    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    for cls, section in ((AssessmentSettings, "assessment"), (RelevanceSettings, "relevance")):
        fields = set(cls.__dataclass_fields__)
        documented = set(config[section]) | {"control_levels"}   # commented out: unset
        assert fields <= documented, (section, fields - documented)
