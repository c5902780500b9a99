"""Training options are defined once: `align-tf train`'s flags are `TrainingConfig`'s fields (names,
defaults, choices, help), and wrong values are refused by the config itself, naming the flag."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from align_tf.errors import ConfigError
from align_tf.training.options import TrainingConfig, add_training_arguments, config_from_args


def parser():
    p = argparse.ArgumentParser()
    add_training_arguments(p)
    return p


def test_every_field_is_a_flag_with_the_fields_default():
    p = parser()
    flags = {a.dest: a for a in p._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert len(flags) == len(fields)
    assert config_from_args(p.parse_args([])) == TrainingConfig()
    for f in dataclasses.fields(TrainingConfig):
        action = flags[f.metadata["argparse"].get("dest", f.name)]
        assert action.help == f.metadata["help"] and action.help
        if f.metadata["choices"]:
            assert tuple(action.choices) == f.metadata["choices"]


def test_command_line_values_reach_the_config():
    args = parser().parse_args([
        "--data", "x.tsv", "--model", "demo-config", "--steps", "7", "--freeze", "text",
        "--freeze", "vision", "--augment", "--precision", "mixed_bfloat16", "--quiet",
        "--min-temperature", "0.01", "--learning-rate", "2e-4"])
    config = config_from_args(args)
    assert (config.data, config.model, config.steps, config.freeze, config.augment) == (
        "x.tsv", "demo-config", 7, ["text", "vision"], True)
    assert config.precision == "mixed_bfloat16" and config.verbose == 0
    assert config.min_temperature == 0.01 and config.learning_rate == 2e-4
    # The default list is not shared between parses.
    assert config_from_args(parser().parse_args([])).freeze == []


@pytest.mark.parametrize("values, named", [
    (dict(global_batch_size=0), "--global-batch-size must be >= 1"),
    (dict(precision="float64"), "--precision must be one of float32, mixed_float16, mixed_bfloat16"),
    (dict(freeze=["both"]), "--freeze must be one of vision, text"),
    (dict(steps=3, epochs=1.0), "--steps or --epochs, not both"),
    (dict(data="pairs.tsv"), "--model: give a checkpoint"),
    (dict(optimizer="sgd"), "--optimizer must be one of lamb, adamw"),
])
def test_wrong_values_name_the_flag(values, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        TrainingConfig(**values)
    with pytest.raises(ValueError):  # still a ValueError for code written before
        TrainingConfig(**values)


def test_model_names_a_preset_by_its_name_or_short_name(tmp_path, monkeypatch):
    """`align-tf train --model align-base` builds the align-base architecture, as
    `get_preset("align-base")` (shown in the README) names it; a folder of that name wins."""
    from align_tf.training.recipe import preset_named

    assert preset_named("align-base").name == "align-base-config"
    assert preset_named("align-base-config").name == "align-base-config"
    assert preset_named("demo-config").name == "demo-config"
    assert preset_named("kakaobrain/align-base") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "align-base").mkdir()
    assert preset_named("align-base") is None  # the local checkpoint folder, not the preset
