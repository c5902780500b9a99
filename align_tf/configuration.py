"""ALIGN configurations with Hugging Face field names; defaults equal `kakaobrain/align-base`."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from typing import ClassVar

from align_tf.errors import ArgumentTypeError, ConfigError

CONFIG_NAME = "config.json"

# `hidden_act` names both towers accept: transformers' ACT2FN names, except the two with learned
# parameters (prelu, xielu), plus "selu" (documented for the vision tower by the reference).
ACTIVATIONS = (
    "gelu", "gelu_python", "gelu_10", "gelu_fast", "gelu_new", "gelu_pytorch_tanh",
    "gelu_python_tanh", "gelu_accurate", "quick_gelu", "hardswish", "laplace", "leaky_relu",
    "linear", "mish", "relu", "relu2", "relu6", "sigmoid", "silu", "swish", "selu",
    "sqrtsoftplus", "tanh",
)


def config_class(cls):
    """Make `cls` a dataclass whose fields are the config's fields, listed once (name, type,
    default), whose constructor also takes the fields HF writes but the model never reads
    (torch_dtype, transformers_version, id2label, ...): they are kept in `extra`, so a config read
    from HF is written back unchanged. `__post_init__` normalises and validates."""
    cls = dataclasses.dataclass(eq=False, repr=False)(cls)
    cls._fields = tuple(f.name for f in dataclasses.fields(cls))
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self.extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in self._fields}
        self.extra.pop("model_type", None)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


class _ConfigBase:
    """Shared behaviour: dict / JSON round-trips that keep unknown HF fields untouched."""

    model_type: ClassVar[str] = ""
    _fields: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for name in self._fields:
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, _ConfigBase) else copy.deepcopy(value)
        out["model_type"] = self.model_type
        return out

    def get_config(self) -> dict:
        return self.to_dict()

    @classmethod
    def from_dict(cls, data: dict):
        return cls(**data)

    @classmethod
    def coerce(cls, value):
        """`value` as this config: None gives the defaults, a dict is read, a config is kept."""
        if value is None:
            return cls()
        if isinstance(value, dict):
            return cls.from_dict(value)
        if not isinstance(value, cls) and callable(getattr(value, "to_dict", None)):
            return cls.from_dict(value.to_dict())  # a transformers config object (duck-typed)
        if not isinstance(value, cls):
            raise ArgumentTypeError(f"expected a {cls.__name__}, a dict or a config with to_dict(), "
                            f"got {type(value).__name__}")
        return value

    @classmethod
    def from_config(cls, data: dict):
        return cls.from_dict(data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save_pretrained(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, CONFIG_NAME)
        self.to_json_file(path)
        return path

    @classmethod
    def from_pretrained(cls, path: str):
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        return cls.from_json_file(path)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _positive(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = "a non-negative number" if allow_zero else "a positive number"
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


def _check_activation(name) -> None:
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_act {name!r} is not supported; supported: {', '.join(ACTIVATIONS)} "
                          "(transformers' prelu and xielu have learned parameters and are not)")


def _probability(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value!r}")


@config_class
class AlignTextConfig(_ConfigBase):
    """BERT text tower. Also reads a plain HF `BertConfig` (model_type "bert")."""

    model_type: ClassVar[str] = "align_text_model"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                     "layer_norm_eps", "initializer_range"):
            _positive(name, getattr(self, name))
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            _probability(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        _check_activation(self.hidden_act)
        if self.position_embedding_type != "absolute":
            raise ConfigError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported: only "
                "'absolute' (learned absolute positions, what ALIGN and transformers' AlignTextModel "
                "use); 'relative_key' / 'relative_key_query' are not implemented"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@config_class
class AlignVisionConfig(_ConfigBase):
    """EfficientNet image tower (B7 trunk for align-base)."""

    model_type: ClassVar[str] = "align_vision_model"
    _list_fields: ClassVar[tuple[str, ...]] = ("kernel_sizes", "in_channels", "out_channels",
                                               "strides", "num_block_repeats", "expand_ratios")

    num_channels: int = 3
    image_size: int = 289
    width_coefficient: float = 2.0
    depth_coefficient: float = 3.1
    depth_divisor: int = 8
    kernel_sizes: list[int] = (3, 3, 5, 3, 5, 5, 3)
    in_channels: list[int] = (32, 16, 24, 40, 80, 112, 192)
    out_channels: list[int] = (16, 24, 40, 80, 112, 192, 320)
    depthwise_padding: list[int] = ()
    strides: list[int] = (1, 2, 2, 2, 1, 2, 1)
    num_block_repeats: list[int] = (1, 2, 2, 3, 3, 4, 1)
    expand_ratios: list[int] = (1, 6, 6, 6, 6, 6, 6)
    squeeze_expansion_ratio: float = 0.25
    hidden_act: str = "swish"
    hidden_dim: int = 640
    pooling_type: str = "mean"
    initializer_range: float = 0.02
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.99
    drop_connect_rate: float = 0.2

    def __post_init__(self):
        for name in self._list_fields + ("depthwise_padding",):  # tuples (defaults, JSON) -> lists
            setattr(self, name, list(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        for name in ("num_channels", "image_size", "width_coefficient", "depth_coefficient",
                     "depth_divisor", "squeeze_expansion_ratio", "batch_norm_eps",
                     "initializer_range", "hidden_dim"):
            _positive(name, getattr(self, name))
        _probability("drop_connect_rate", self.drop_connect_rate)
        _probability("batch_norm_momentum", self.batch_norm_momentum)
        lengths = {name: len(getattr(self, name)) for name in self._list_fields}
        if len(set(lengths.values())) != 1:
            raise ConfigError(
                "kernel_sizes, in_channels, out_channels, strides, num_block_repeats and "
                f"expand_ratios must have the same length, got {lengths}"
            )
        if not lengths["kernel_sizes"]:
            raise ConfigError("kernel_sizes (and the other per-stage lists) must not be empty")
        for name in self._list_fields:
            for i, value in enumerate(getattr(self, name)):
                _positive(f"{name}[{i}]", value)
        for i, s in enumerate(self.strides):
            if s not in (1, 2):
                raise ConfigError(f"strides[{i}] must be 1 or 2, got {s}")
        if self.pooling_type not in ("mean", "max"):
            raise ConfigError(f"pooling_type must be 'mean' or 'max', got {self.pooling_type!r}")
        _check_activation(self.hidden_act)

    def round_filters(self, num_channels: int) -> int:
        """Channel count scaled by the width coefficient, rounded as EfficientNet does."""
        divisor = self.depth_divisor
        scaled = num_channels * self.width_coefficient
        new_dim = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if new_dim < 0.9 * scaled:
            new_dim += divisor
        return int(new_dim)

    def round_repeats(self, repeats: int) -> int:
        import math

        return int(math.ceil(self.depth_coefficient * repeats))

    @property
    def num_blocks(self) -> int:
        return sum(self.round_repeats(n) for n in self.num_block_repeats)

    @property
    def output_channels(self) -> int:
        return self.round_filters(self.out_channels[-1])


@config_class
class AlignConfig(_ConfigBase):
    """The joint model: both towers, the text projection and the temperature."""

    model_type: ClassVar[str] = "align"

    text_config: AlignTextConfig | dict | None = None
    vision_config: AlignVisionConfig | dict | None = None
    projection_dim: int = 640
    temperature_init_value: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self):
        self.text_config = AlignTextConfig.coerce(self.text_config)
        self.vision_config = AlignVisionConfig.coerce(self.vision_config)
        _positive("projection_dim", self.projection_dim)
        _positive("temperature_init_value", self.temperature_init_value)
        if self.vision_config.output_channels != self.projection_dim:
            # The image embedding is the pooled trunk output: it has no projection, so its
            # width must equal the text projection's for the dot product to exist.
            raise ConfigError(
                f"projection_dim ({self.projection_dim}) must equal the vision tower's output "
                f"width ({self.vision_config.output_channels} = round_filters(out_channels[-1]))"
            )

    @classmethod
    def from_text_vision_configs(cls, text_config, vision_config, **kwargs):
        """From the two towers' configs: ours, dicts, or transformers' config objects."""
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)


def load_config(path: str):
    """Read any config.json we understand: align, align_text_model / bert, align_vision_model."""
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_NAME)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    model_type = data.get("model_type", "align")
    if model_type == "align":
        return AlignConfig.from_dict(data)
    if model_type in ("align_text_model", "bert"):
        return AlignTextConfig.from_dict(data)
    if model_type == "align_vision_model":
        return AlignVisionConfig.from_dict(data)
    raise ConfigError(
        f"{path}: model_type {model_type!r} is not an ALIGN, ALIGN text/vision or BERT config"
    )
