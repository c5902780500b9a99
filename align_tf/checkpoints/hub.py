"""Turn a hub id or a folder into a local folder of checkpoint files."""

from __future__ import annotations

import os

from align_tf.errors import PretrainedNotFoundError  # noqa: F401  (public here too)

# Files any of our loaders may read from a checkpoint folder.
CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "pytorch_model.bin",
    "model.weights.h5",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
]


def resolve_pretrained(name_or_path: str, revision: str | None = None) -> str:
    """A local folder for `name_or_path`: the folder itself, or a hub snapshot.

    Hub ids resolve with `huggingface_hub` (downloaded once, then from its cache; with
    `HF_HUB_OFFLINE=1` only the cache is used).
    """
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path):
        raise PretrainedNotFoundError(
            f"{name_or_path!r} is a file; pass the folder that holds config.json and the weights"
        )
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/")):
        raise PretrainedNotFoundError(
            f"{name_or_path!r} is not a folder, and not a hub id of the form 'org/name'"
        )
    try:
        import huggingface_hub
    except ImportError as exc:
        raise PretrainedNotFoundError(
            f"{name_or_path!r} is not a local folder, and resolving hub ids needs huggingface_hub: "
            "`pip install 'align-tf[convert]'`, or download the files yourself "
            f"(`huggingface-cli download {name_or_path}`) and pass the folder"
        ) from exc
    try:
        return huggingface_hub.snapshot_download(
            name_or_path, revision=revision, allow_patterns=CHECKPOINT_FILES
        )
    except Exception as exc:  # network errors, missing repo, missing cache when offline
        raise PretrainedNotFoundError(
            f"could not get {name_or_path!r} from the Hugging Face hub or its local cache "
            f"({type(exc).__name__}: {exc}). Download it where the hub is reachable "
            f"(`huggingface-cli download {name_or_path}`), then run with HF_HUB_OFFLINE=1 "
            "or pass the downloaded folder"
        ) from exc
