"""Files bundled with align-tf: the small demo model (shapes x colours) and example images."""

from __future__ import annotations

import os

ASSETS_DIR = os.path.dirname(os.path.abspath(__file__))
DEMO_MODEL_DIR = os.path.join(ASSETS_DIR, "demo_model")
EXAMPLES_DIR = os.path.join(ASSETS_DIR, "examples")

# How the committed demo model was made (docs/training.md explains the choices).
DEMO_TRAIN_COMMAND = (
    "align-tf train --data demo:8000 --model demo-config --steps 1400 --global-batch-size 64 "
    "--optimizer adamw --learning-rate 4e-3 --warmup-steps 100 --save-dtype float16 "
    "--keep-checkpoints 0 --logdir runs/demo-logs --output align_tf/assets/demo_model"
)


def demo_model_path() -> str:
    """Folder of the bundled demo model: config.json, model.weights.h5, vocab.txt,
    tokenizer_config.json, preprocessor_config.json. It knows shapes and colours only."""
    if not os.path.isfile(os.path.join(DEMO_MODEL_DIR, "model.weights.h5")):
        from align_tf.errors import AssetNotFoundError

        raise AssetNotFoundError(
            f"the demo model is missing from {DEMO_MODEL_DIR}; rebuild it with: {DEMO_TRAIN_COMMAND}")
    return DEMO_MODEL_DIR


DEMO_MODEL = "demo"


def resolve_model(name: str | None) -> tuple[str, bool]:
    """`--model` as every command reads it: (folder or hub id, whether it is the demo model).
    None, "" or "demo" mean the bundled demo model."""
    if name in (None, "", DEMO_MODEL):
        return demo_model_path(), True
    return str(name), False


def example_images_path() -> str:
    """Folder of a few bundled example images (coloured shapes) for a first `align-tf classify`."""
    return EXAMPLES_DIR
