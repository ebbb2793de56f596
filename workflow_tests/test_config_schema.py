"""The config schema: the demo config validates, and defaults are the method's."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "schemas" / "config.schema.yaml")
MINIMAL = {"inputs": {"participants": "p.tsv", "maps": {
    c: f"{c}/sub-{{subject}}_ses-{{session}}.nii.gz" for c in ("qT1", "MWF", "NDI")}}}


def test_demo_config_validates():
    validate(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)


def _merged(base: dict, over: dict) -> dict:
    """Snakemake's merge of a second --configfile: nested mappings key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def test_quick_demo_config_validates_and_matches_its_cohort():
    """config.quick.yaml on top of config.yaml validates; its crop is the paper's 96 x 96 x
    112 at the quick cohort's voxel size (the Makefile's QUICK_SCALE), its maps the quick
    cohort's."""
    import re

    quick = yaml.safe_load((REPO / "config.quick.yaml").read_text())
    config = _merged(yaml.safe_load((REPO / "config.yaml").read_text()), quick)
    validate(config, SCHEMA)
    make = (REPO / "Makefile").read_text()
    scale = float(re.search(r"^QUICK_SCALE\s*\?=\s*(\S+)", make, re.M).group(1))
    paper = (96, 96, 112)
    assert all(abs(c - n / scale) <= 1 for c, n in zip(config["preprocessing"]["crop_shape"],
                                                        paper))
    assert all(path.startswith("demo/quick/") for path in config["inputs"]["maps"].values())
    assert config["inputs"]["participants"].startswith("demo/quick/")


def test_defaults_are_the_methods():
    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    validate(config, SCHEMA, set_default=True)
    pp = config["preprocessing"]
    assert pp["crop_shape"] == [96, 96, 112]  # docs/method.md#25-crop
    assert pp["coregistration"] == "rigid"  # docs/method.md#23-co-registration-to-ndi
    assert pp["template_resolution"] == 2 and pp["template_transform"] == "SyN"  # 2.6
    assert pp["skullstrip"] == "deepbet_template" and pp["cerebellum_margin_mm"] == 1
    assert config["inputs"]["units"] == {"qT1": "ms", "MWF": "fraction"}
    assert config["split"] == {"test_fraction": 0.2, "n_folds": 3, "seed": 0}  # docs/method.md#3-split
    tr = config["training"]
    assert (tr["lr"], tr["batch_size"], tr["weight_decay"]) == (5e-5, 70, 1e-2)  # docs/method.md#5-training


@pytest.mark.parametrize("bad", [
    {"preprocessing": {"coregistration": "syn"}},
    {"preprocessing": {"crop_shape": [96, 96]}},
    {"inputs": {"units": {"qT1": "us"}}},
    {"split": {"n_folds": 1}},
])
def test_bad_config_is_refused(bad):
    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for key, value in bad.items():
        config.setdefault(key, {}).update(value)
    with pytest.raises(WorkflowError):
        validate(config, SCHEMA)


def test_schema_requires_the_levels_the_tables_use():
    """The schema's copy of the levels Table III needs is the package's (Table IV's,
    assessment.heatmap_level, is added to the levels by the workflow)."""
    from gamer_mril.assessment.correlation import TABLE_III_LEVELS

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    levels = schema["properties"]["assessment"]["properties"]["levels"]
    required = {c["contains"]["const"] for c in levels["allOf"]}
    assert required == set(TABLE_III_LEVELS)
    for missing in sorted(required):
        config = yaml.safe_load(yaml.safe_dump(MINIMAL))
        config["assessment"] = {"levels": [n for n in range(10, 100, 10) if n != missing]}
        with pytest.raises(WorkflowError):
            validate(config, SCHEMA)
    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    config["assessment"] = {"levels": [90, 50, 40, 30]}          # any order
    validate(config, SCHEMA)


# ------------------------------------------- config problems a user can act on


def _check(config, sources=()):
    from gamer_mril.configcheck import check_config

    return check_config(config, SCHEMA, sources)


def _sources(tmp_path, config, command_line=None):
    from gamer_mril.configcheck import config_sources

    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(config))
    return config_sources([str(path)], command_line), str(path)


def test_a_typo_names_the_file_the_key_and_the_nearest_key_without_the_schema(tmp_path):
    from gamer_mril.errors import ConfigError

    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    config["trainig"] = {"epochs": 3}
    config["preprocessing"] = {"corgeistration": "rigid"}
    sources, path = _sources(tmp_path, config)
    with pytest.raises(ConfigError) as e:
        _check(config, sources)
    msg = str(e.value)
    assert path in msg.splitlines()[0]
    assert f"trainig (in {path}): unknown key 'trainig' at the top level; did you mean " \
           f"'training'?" in msg
    assert "preprocessing.corgeistration" in msg and "did you mean 'coregistration'?" in msg
    assert len(msg.splitlines()) == 3                     # the head line and one per key
    assert "$schema" not in msg and "properties" not in msg and "additionalProperties" \
        not in msg


def test_command_line_numbers_are_read_as_numbers(tmp_path):
    """--config 'training={restarts: 3}' gives the text '3' (Snakemake reads nested
    command-line values as text); it is read as the integer the schema wants."""
    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    config["training"] = {"restarts": "3", "lr": "1e-4", "gpu": "false"}
    config["preprocessing"] = {"crop_shape": ["48", "48", "56"]}
    notes = _check(config, _sources(tmp_path, MINIMAL, {"training": {"restarts": "3"}})[0])
    assert config["training"] == {"restarts": 3, "lr": 1e-4, "gpu": False}
    assert config["preprocessing"]["crop_shape"] == [48, 48, 56]
    assert "training.restarts: '3' read as 3" in notes
    validate(config, SCHEMA)


def test_a_non_number_for_an_integer_is_named_with_how_to_set_it(tmp_path):
    from gamer_mril.errors import ConfigError

    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    config["training"] = {"restarts": "three"}
    sources, path = _sources(tmp_path, MINIMAL, {"training": {"restarts": "three"}})
    with pytest.raises(ConfigError) as e:
        _check(config, sources)
    msg = str(e.value)
    assert "training.restarts (in --config on the command line) is 'three', but must be " \
           "a whole number" in msg
    assert "--config 'training={restarts: 3}'" in msg and "`restarts: 3`" in msg


def test_a_maps_pattern_without_session_says_how_to_describe_single_session_data(tmp_path):
    from gamer_mril.errors import ConfigError

    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    config["inputs"]["maps"]["qT1"] = "qT1/sub-{subject}_T1map.nii.gz"
    sources, path = _sources(tmp_path, config)
    with pytest.raises(ConfigError) as e:
        _check(config, sources)
    msg = str(e.value)
    assert f"inputs.maps.qT1 (in {path}) is 'qT1/sub-{{subject}}_T1map.nii.gz', which " \
           f"lacks the placeholder {{session}}" in msg
    assert "same session" in msg and "ses-1" in msg


def test_new_settings_have_their_defaults():
    config = yaml.safe_load(yaml.safe_dump(MINIMAL))
    validate(config, SCHEMA, set_default=True)
    from gamer_mril.alignment import MAX_CENTRE_DISTANCE_MM
    from gamer_mril.qc import MAX_CLIPPED_SHARE

    assert config["preprocessing"]["max_centre_distance_mm"] == MAX_CENTRE_DISTANCE_MM == 50
    assert config["qc"]["max_clipped_share"] == MAX_CLIPPED_SHARE == 0.01
