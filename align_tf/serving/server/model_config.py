"""The configuration files tensorflow_model_server reads: `--model_config_file` (a text-format
ModelServerConfig) and the small text protos whose Python classes are not shipped
(BatchingParameters, MonitoringConfig)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from align_tf.errors import ServerConfigError


@dataclass
class ModelConfig:
    """One entry of `model_config_list` (TF Serving's ModelConfig)."""

    name: str
    base_path: str
    policy: str = "latest"            # latest | all | specific
    num_versions: int = 1             # for latest
    versions: tuple[int, ...] = ()    # for specific
    version_labels: dict[str, int] = field(default_factory=dict)


def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ServerConfigError(f"{what} {path}: {getattr(e, 'strerror', None) or e}") from None


def read_model_config_file(path: str) -> list[ModelConfig]:
    """Parse a `--model_config_file` (text-format ModelServerConfig)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = read_text(path, "--model_config_file")
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        # Protobuf's TextFormat error, as tensorflow_model_server prints it (ParseProtoTextFile),
        # then the status it fails with.
        raise ServerConfigError(f"Error parsing text-format tensorflow.serving.ModelServerConfig: {e}\n"
                                f"Invalid protobuf file: '{path}' (--model_config_file)") from None
    return model_configs_from_proto(proto)


def model_configs_from_proto(proto) -> list[ModelConfig]:
    if proto.WhichOneof("config") != "model_config_list":
        raise ServerConfigError("only model_config_list is supported (not custom_model_config)")
    configs = []
    for c in proto.model_config_list.config:
        if c.model_platform not in ("", "tensorflow"):
            raise ServerConfigError(f"model {c.name!r}: model_platform {c.model_platform!r}; only 'tensorflow'")
        policy = c.model_version_policy.WhichOneof("policy_choice") or "latest"
        configs.append(ModelConfig(  # a relative base_path is relative to the working directory
            name=c.name, base_path=c.base_path, policy=policy,
            num_versions=max(1, c.model_version_policy.latest.num_versions or 1),
            versions=tuple(c.model_version_policy.specific.versions),
            version_labels=dict(c.version_labels)))
    return configs


def read_text_proto(path: str, what: str = "text proto") -> dict:
    """A small reader for the text protos TF Serving takes whose Python classes are not shipped
    (BatchingParameters, MonitoringConfig): nested `name { ... }` blocks and `name: value`."""
    text = re.sub(r"#[^\n]*", "", read_text(path, what))
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', text)
    pos = 0

    def value(token: str):
        if token.startswith('"'):
            return json.loads(token)
        if token in ("true", "false"):
            return token == "true"
        try:
            return int(token)
        except ValueError:
            try:
                return float(token)
            except ValueError:
                return token

    def block() -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != "}":
            name = tokens[pos]
            pos += 1
            if pos < len(tokens) and tokens[pos] == ":":
                pos += 1
            if pos < len(tokens) and tokens[pos] == "{":
                pos += 1
                item = block()
                pos += 1  # the closing brace
            else:
                item = value(tokens[pos])
                pos += 1
            if name in out:  # repeated field
                out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [item]
            else:
                out[name] = item
        return out

    return block()


def unwrap(value):
    """BatchingParameters wraps numbers as `{ value: N }`."""
    return value.get("value") if isinstance(value, dict) else value
