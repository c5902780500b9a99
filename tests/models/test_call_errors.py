"""A model called with an input it does not take (or one given twice) raises our
ArgumentTypeError itself, whose first line names the key: not Keras's copy of it under an
"Exception encountered when calling AlignModel.call()" banner."""

from __future__ import annotations

import pytest

from align_tf.errors import ArgumentTypeError, ConfigError
from align_tf.models.align import AlignModel
from support import pixel_batch, text_batch, tiny_align_config


@pytest.fixture(scope="module")
def model_and_inputs():
    config = tiny_align_config()
    model = AlignModel(config)
    text = text_batch(config.text_config.vocab_size, lengths=(3, 5), max_len=5, seed=1)
    return model, text, pixel_batch(2, 33, seed=1)


def first_line(raised) -> str:
    return str(raised.value).splitlines()[0]


def test_unknown_and_doubled_keys_name_the_key_on_the_first_line(model_and_inputs):
    model, text, pixels = model_and_inputs
    with pytest.raises(ArgumentTypeError) as raised:
        model({"pixel_values": pixels, "positions": text["input_ids"], **text})
    assert first_line(raised).startswith("AlignModel got input(s) it does not take: positions;")
    with pytest.raises(ArgumentTypeError) as raised:
        model(text, attention_mask=text["attention_mask"])
    assert first_line(raised) == "AlignModel got attention_mask both in the input dict and as keyword(s)"
    with pytest.raises(ArgumentTypeError) as raised:
        model.text_model({"pixel_values": pixels, **text})
    assert first_line(raised).startswith("AlignTextModel got input(s) it does not take: pixel_values;")
    with pytest.raises(ArgumentTypeError) as raised:
        model.vision_model({"pixel_values": pixels, "input_ids": text["input_ids"]})
    assert first_line(raised).startswith("AlignVisionModel got input(s) it does not take: input_ids;")
    assert "Exception encountered" not in str(raised.value)


def test_a_config_error_inside_a_call_is_not_wrapped_either(model_and_inputs):
    model, text, _ = model_and_inputs
    with pytest.raises(ConfigError) as raised:
        model.text_model(text["input_ids"], inputs_embeds=text["input_ids"])
    assert "exactly one of input_ids" in first_line(raised)
