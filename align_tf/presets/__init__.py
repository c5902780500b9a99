"""Named configurations: the released align-base architecture and the small demo model.

`align-base` is a folder of the `kakaobrain/align-base` configuration files vendored into the
package (config.json, preprocessor_config.json, tokenizer_config.json; see `SOURCE`): a config to
build the architecture from, or to train from scratch, without reaching the hub. Weights are not
bundled; `AlignModel.from_pretrained("kakaobrain/align-base")` fetches them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from align_tf.configuration import AlignConfig, AlignTextConfig, AlignVisionConfig, load_config
from align_tf.errors import ConfigError

PRESETS_DIR = os.path.dirname(os.path.abspath(__file__))
ALIGN_BASE_DIR = os.path.join(PRESETS_DIR, "align-base")
SOURCE = ("Hugging Face kakaobrain/align-base, main revision: config.json (top level and "
          "text_config as published; vision_config rebuilt from its conversion recipe, see the "
          "file's _note), preprocessor_config.json and tokenizer_config.json as published.")


def align_base_config() -> AlignConfig:
    """The align-base architecture, read from the vendored config.json."""
    return load_config(ALIGN_BASE_DIR)


def demo_config() -> AlignConfig:
    """The demo model (shapes x colours, 64x64 images): EfficientNet at width 0.5 / depth 0.5
    (10 blocks, 160-d output, BatchNorm momentum 0.9 for a short run) and a 2-layer BERT of
    width 64 on the real bert-base-uncased vocabulary (its embedding table is most of the
    ~2.5M weights). The temperature starts at 0.05: from 1.0 a short run spends its first
    hundreds of steps just sharpening the logits."""
    vision = AlignVisionConfig(image_size=64, width_coefficient=0.5, depth_coefficient=0.5,
                               drop_connect_rate=0.1, batch_norm_momentum=0.9)
    text = AlignTextConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=128, max_position_embeddings=32)
    return AlignConfig(text_config=text, vision_config=vision, projection_dim=vision.output_channels,
                       temperature_init_value=0.05)


@dataclass(frozen=True)
class Preset:
    """A configuration to build or train from scratch, with the preprocessing it expects."""

    name: str
    config: Callable[[], AlignConfig]
    image_size: tuple[int, int] | None  # (resize, crop); None: the reference's 346 -> 289
    max_length: int
    folder: str | None = None  # HF-style files (config + preprocessor + tokenizer) when vendored


PRESETS = {
    "demo-config": Preset("demo-config", demo_config, (64, 64), 16),
    "align-base-config": Preset("align-base-config", align_base_config, None, 64, ALIGN_BASE_DIR),
}
ALIASES = {"align-base": "align-base-config", "demo": "demo-config"}


def get_preset(name: str) -> Preset:
    """The preset called `name` ("align-base", "align-base-config", "demo-config")."""
    preset = PRESETS.get(ALIASES.get(name, name))
    if preset is None:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))} "
                          f"(also {', '.join(sorted(ALIASES))})")
    return preset
