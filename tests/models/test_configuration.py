"""Configurations: HF field names, align-base defaults, JSON round-trips, validation."""

import json
import os

import pytest

from align_tf.configuration import AlignConfig, AlignTextConfig, AlignVisionConfig, load_config
from align_tf.presets import ALIGN_BASE_DIR

ALIGN_BASE_CONFIG = os.path.join(ALIGN_BASE_DIR, "config.json")


def test_defaults_equal_align_base():
    with open(ALIGN_BASE_CONFIG) as f:
        published = json.load(f)
    ours = AlignConfig().to_dict()
    for key in ("projection_dim", "temperature_init_value"):
        assert ours[key] == published[key]
    for section in ("text_config", "vision_config"):
        for key, value in published[section].items():
            assert ours[section][key] == value, (section, key)


def test_reads_hf_config_and_writes_it_back(tmp_path):
    config = load_config(ALIGN_BASE_CONFIG)
    assert isinstance(config, AlignConfig)
    config.save_pretrained(tmp_path)
    again = AlignConfig.from_pretrained(tmp_path)
    assert again == config
    # Unknown HF fields (architectures, _note) survive the round trip.
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["AlignModel"]
    assert AlignConfig.from_config(config.get_config()) == config


def test_transformers_reads_our_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    AlignConfig().save_pretrained(tmp_path)
    hf = transformers.AlignConfig.from_pretrained(tmp_path)
    assert hf.vision_config.depth_coefficient == 3.1
    assert hf.text_config.hidden_size == 768
    assert hf.projection_dim == 640


def test_bert_config_reads_as_text_config():
    from support import minilm_folder

    config = load_config(minilm_folder())
    assert isinstance(config, AlignTextConfig)
    assert (config.hidden_size, config.num_hidden_layers) == (384, 6)


def test_vision_geometry_matches_b7():
    config = AlignVisionConfig()
    assert config.num_blocks == 55
    assert config.round_filters(32) == 64
    assert [config.round_filters(c) for c in config.out_channels] == [32, 48, 80, 160, 224, 384, 640]


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (AlignTextConfig, dict(hidden_size=100, num_attention_heads=12), "num_attention_heads"),
        (AlignTextConfig, dict(num_hidden_layers=0), "num_hidden_layers"),
        (AlignTextConfig, dict(vocab_size=-3), "vocab_size"),
        (AlignTextConfig, dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (AlignVisionConfig, dict(kernel_sizes=[3, 3]), "kernel_sizes"),
        (AlignVisionConfig, dict(strides=[1, 3, 2, 2, 1, 2, 1]), "strides[1]"),
        (AlignVisionConfig, dict(width_coefficient=0), "width_coefficient"),
        (AlignVisionConfig, dict(pooling_type="median"), "pooling_type"),
        (AlignConfig, dict(projection_dim=512), "projection_dim"),
    ],
)
def test_invalid_values_name_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        cls(**kwargs)
