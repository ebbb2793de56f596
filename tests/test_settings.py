"""The stages' settings read once from the config (gamer_mril.settings), and one name per
setting from config.yaml through the rules' params."""

import pytest
import yaml

import re
from pathlib import Path

from gamer_mril.settings import (
    AssessmentSettings,
    PreprocessingSettings,
    QcSettings,
    RelevanceSettings,
    TrainingSettings,
    scenario_numbers,
)

ROOT = Path(__file__).parents[1]
#: Each settings object, its config section and its name in rules/common.smk.
OBJECTS = ((PreprocessingSettings, "preprocessing", "PP"), (QcSettings, "qc", "QC"),
           (TrainingSettings, "training", "TR"), (RelevanceSettings, "relevance", "REL"),
           (AssessmentSettings, "assessment", "ASM"))


def _schema():
    return yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())


def _assessment(**over):
    section = dict(levels=[30, 10, 50], heatmap_level=40, n_permutations=99, seed=3,
                   random_masks=2, n_bootstrap=10, choice_levels=[10])
    section.update(over)
    return section


def test_levels_gain_the_heatmap_level_and_controls_default_to_all():
    s = AssessmentSettings.from_config(_assessment())
    assert s.levels == (10, 30, 40, 50) and s.heatmap_level == 40
    assert s.control_levels == (10, 30, 40, 50)
    assert (s.random_masks, s.n_permutations, s.n_bootstrap, s.seed) == (2, 99, 10, 3)
    s = AssessmentSettings.from_config(_assessment(control_levels=[50, 40], choice_levels=[40]))
    assert s.control_levels == (40, 50)


def test_a_control_level_must_be_a_level():
    with pytest.raises(ValueError, match=r"control_levels \[20\] must be among"):
        AssessmentSettings.from_config(_assessment(control_levels=[20]))


def test_the_choice_and_its_levels():
    """choice_levels must be levels and control levels (the AOPC needs the controls
    there); choice aopc needs two random masks (its band); unset, the defaults."""
    s = AssessmentSettings.from_config(_assessment(choice_levels=[30, 10, 10]))
    assert (s.choice, s.choice_levels) == ("aopc", (10, 30))
    section = _assessment(levels=[5, 10, 20, 30, 50])
    del section["choice_levels"]
    s = AssessmentSettings.from_config(section)
    assert s.choice_levels == (5, 10, 20) and s.choice == "aopc"
    with pytest.raises(ValueError, match=r"assessment.choice_levels \[10, 20\]: \[20\] "
                                         r"not in assessment.levels \[10, 30, 40, 50\]"):
        AssessmentSettings.from_config(_assessment(choice_levels=[20, 10]))
    with pytest.raises(ValueError, match=r"assessment.choice_levels \[10, 30\]: \[10\] "
                                         r"not in assessment.control_levels \[30, 40\]"):
        AssessmentSettings.from_config(_assessment(choice_levels=[10, 30],
                                                   control_levels=[30, 40]))
    with pytest.raises(ValueError, match=r"assessment.choice = aopc needs "
                                         r"assessment.random_masks >= 2"):
        AssessmentSettings.from_config(_assessment(random_masks=1))
    s = AssessmentSettings.from_config(_assessment(random_masks=0, choice="paper"))
    assert s.choice == "paper"
    with pytest.raises(ValueError, match="assessment.choice = 'best' must be one of"):
        AssessmentSettings.from_config(_assessment(choice="best"))


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


def test_every_field_is_a_schema_entry_and_config_yaml_builds_them():
    """One name per setting: each field of the objects is an entry of its section in the
    schema (the derived ones included), and config.yaml, with the schema's defaults
    filled in where it leaves an entry out, builds every object."""
    schema = _schema()["properties"]
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for cls, section, _ in OBJECTS:
        props = schema[section]["properties"]
        fields = set(cls.__dataclass_fields__)
        assert fields <= set(props), (section, fields - set(props))
        filled = {k: v["default"] for k, v in props.items() if "default" in v}
        cls.from_config({**filled, **config[section]})


def test_a_missing_entry_names_the_section_and_key():
    section = {"skullstrip": "template", "coregistration": "rigid"}
    with pytest.raises(ValueError, match=r"preprocessing: missing crop_shape, "):
        PreprocessingSettings.from_config(section)


def test_training_jobs_get_every_training_setting_but_the_workflow_ones():
    props = _schema()["properties"]["training"]["properties"]
    t = TrainingSettings.from_config({k: v["default"] for k, v in props.items()
                                      if "default" in v})
    assert set(t.job_settings()) == set(props) - {"gpu", "frozen_models"}


def test_rule_params_keep_the_config_names():
    """A rule param read from a settings object (``name=PP.field``) or from the config
    (``name=config["section"]["key"]``) is called by that field's or key's name, so the
    job's keyword and its sidecar's Parameters keep the config.yaml name."""
    seen = 0
    for path in sorted((ROOT / "rules").glob("*.smk")):
        text = path.read_text()
        for name, obj, field in re.findall(r"^\s+(\w+)=(PP|QC|TR|REL|ASM)\.(\w+),?$", text,
                                           re.M):
            assert name == field, (path.name, f"{name}={obj}.{field}")
            seen += 1
        for name, key in re.findall(r'^\s+(\w+)=config\["\w+"\]\["(\w+)"\],?$', text, re.M):
            assert name == key, (path.name, f"{name}= ... {key}")
            seen += 1
    assert seen >= 15          # the pattern still matches the rules' params
