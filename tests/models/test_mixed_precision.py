"""Mixed precision: the model runs under mixed_float16 / mixed_bfloat16 with float32 outputs
and embeddings close to the float32 model's (same weights)."""

import keras
import numpy as np
import pytest

from align_tf.models.align import AlignModel
from support import pixel_batch, text_batch, tiny_align_config


@pytest.fixture
def policy():
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("name, tolerance", [("mixed_float16", 2e-2), ("mixed_bfloat16", 8e-2)])
def test_mixed_precision_matches_float32(tmp_path, policy, name, tolerance):
    reference = AlignModel(tiny_align_config())
    reference.save_pretrained(str(tmp_path))
    inputs = {"pixel_values": pixel_batch(2, 40), **text_batch(1000, lengths=(4, 7), max_len=7)}
    expected = reference(inputs)
    policy(name)
    model = AlignModel.from_pretrained(str(tmp_path))
    assert model.text_model.encoder_layers[0].query.compute_dtype == name.split("_")[1]
    out = model(inputs)
    for key in ("image_embeds", "text_embeds", "logits_per_text"):
        assert out[key].dtype == "float32", key
        diff = float(np.max(np.abs(np.asarray(out[key]) - np.asarray(expected[key]))))
        assert diff < tolerance * (10 if key == "logits_per_text" else 1), (key, diff)
    # The compiled inference path too.
    features = np.asarray(model.get_text_features(**{k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}))
    assert np.isfinite(features).all()
