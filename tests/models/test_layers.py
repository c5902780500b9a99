"""Every layer and model goes through the same checks (tests/layer_checks.py): complete
`get_config`, dtype policies, `.keras` saving; and `.keras` files written by align-tf 0.1.0
before the package was restructured still load, with the same outputs."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from layer_checks import check_config_round_trip, check_dtype_policies, check_keras_saving
from support import pixel_batch, text_batch, tiny_align_config, tiny_text_config, tiny_vision_config

from align_tf import AlignModel, AlignTextModel, AlignVisionModel
from align_tf.models import bert, efficientnet

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
IMAGES = pixel_batch(2, 16)
FEATURES = np.random.default_rng(1).normal(size=(2, 8, 8, 16)).astype("float32")
HIDDEN = np.random.default_rng(2).normal(size=(2, 5, 32)).astype("float32")
IDS = np.array([[1, 7, 9, 2, 0], [1, 4, 2, 0, 0]], "int32")
MASK = (IDS > 0).astype("int32")

LAYERS = {
    "vision embeddings": (lambda **kw: efficientnet.AlignVisionEmbeddings(8, **kw), (IMAGES,)),
    "squeeze-excite": (lambda **kw: efficientnet.AlignVisionSqueezeExcite(16, 4, **kw), (FEATURES,)),
    "MBConv block": (lambda **kw: efficientnet.AlignVisionBlock(
        16, 24, 2, 5, 6, 0.0, id_skip=True, **kw), (FEATURES,)),
    "text embeddings": (lambda **kw: bert.AlignTextEmbeddings(50, 32, 16, 2, **kw),
                        (IDS, np.zeros_like(IDS))),
    "text encoder layer": (lambda **kw: bert.AlignTextLayer(32, 4, 37, **kw), (HIDDEN, MASK)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_config_and_dtype_policies(name):
    make, args = LAYERS[name]
    check_config_round_trip(make, args)
    check_dtype_policies(make, args)


def model_inputs():
    inputs = text_batch(1000, lengths=(4, 6), max_len=6)
    inputs["pixel_values"] = pixel_batch(2, 64)
    return inputs


@pytest.mark.parametrize("make, pick", [
    (lambda **kw: AlignModel(tiny_align_config(), **kw), None),
    (lambda **kw: AlignTextModel(tiny_text_config(), **kw),
     ("input_ids", "attention_mask", "token_type_ids")),
    (lambda **kw: AlignVisionModel(tiny_vision_config(), **kw), ("pixel_values",)),
])
def test_models_config_dtype_policies_and_keras_saving(make, pick, tmp_path):
    inputs = model_inputs()
    if pick:
        inputs = {k: inputs[k] for k in pick}
    check_config_round_trip(make, (inputs,), dict(training=False))
    check_dtype_policies(make, (inputs,), dict(training=False), policies=("mixed_bfloat16",))
    check_keras_saving(make(), inputs, tmp_path)


def test_keras_file_from_before_the_restructuring_loads_with_the_same_outputs():
    """tests/models/data/align_tiny_v0.1.keras was written by align-tf at commit 56656e2 (before
    align_tf/ was reorganised): a tiny AlignModel and the logits it gave on the stored inputs."""
    stored = np.load(os.path.join(DATA, "align_tiny_v0.1_outputs.npz"))
    model = keras.saving.load_model(os.path.join(DATA, "align_tiny_v0.1.keras"))
    assert isinstance(model, AlignModel)
    out = model({"pixel_values": stored["px"], "input_ids": stored["ids"],
                 "attention_mask": stored["mask"], "token_type_ids": np.zeros_like(stored["ids"])})
    np.testing.assert_allclose(np.asarray(out["logits_per_image"]), stored["logits"], rtol=0, atol=1e-6)
