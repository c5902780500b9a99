"""Called like transformers: the documented examples (docs/porting.md, run here), every forward
argument of the reference, outputs as mappings with attribute access, keyword calls in
tf.function and fit(); each against `transformers` with random weights and randomised BatchNorm."""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from align_tf.configuration import AlignConfig, AlignTextConfig, AlignVisionConfig  # noqa: E402
from align_tf.errors import ConfigError  # noqa: E402
from align_tf.models.align import AlignModel  # noqa: E402
from align_tf.models.bert import AlignTextModel  # noqa: E402
from align_tf.models.efficientnet import AlignVisionModel  # noqa: E402
from support import (REPO_ROOT, hf_align_model, pixel_batch, randomize_reference,  # noqa: E402
                     save_hf_checkpoint, text_batch, tiny_align_config, tiny_text_config,
                     tiny_vision_config, write_processor_files)

TOL = 1e-5


def np_of(value):
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, tf.RaggedTensor):
        return value.to_tensor().numpy()
    return np.asarray(value)


def max_diff(ours, reference):
    return float(np.max(np.abs(np_of(ours) - np_of(reference))))


def nhwc(t):
    return t.permute(0, 2, 3, 1)


def torch_inputs(batch):
    return {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in batch.items()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny ALIGN with the real bert-base-uncased vocabulary, saved as an HF checkpoint with
    align-base's tokenizer and preprocessor files; ours loaded from it."""
    config = tiny_align_config(text_config=tiny_text_config(vocab_size=30522))
    reference = hf_align_model(config, seed=4)
    folder = str(tmp_path_factory.mktemp("align_hf"))
    save_hf_checkpoint(reference, folder)
    write_processor_files(folder)
    return config, reference, AlignModel.from_pretrained(folder), folder


@pytest.fixture(scope="module")
def batch(pair):
    config = pair[0]
    text = text_batch(config.text_config.vocab_size, lengths=(7, 12, 3), max_len=12, seed=2)
    return text, pixel_batch(3, 33, seed=5)


# -- the documented examples, run from docs/porting.md ---------------------------------------
def porting_examples():
    with open(os.path.join(REPO_ROOT, "docs", "porting.md"), encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(r"<!-- example: (.*?); compare: (.*?) -->\s*```python\n(.*?)```\s*```python\n(.*?)```",
                         re.S)
    return [pytest.param(m.group(3), m.group(4), [n.strip() for n in m.group(2).split(",")],
                         id=m.group(1)) for m in pattern.finditer(text)]


def test_porting_guide_has_the_four_documented_examples():
    assert [p.id for p in porting_examples()] == [
        "similarity", "text features", "image features", "processor options"]


@pytest.mark.parametrize("reference_code, our_code, names", porting_examples())
def test_documented_example_gives_the_reference_numbers(pair, tmp_path, monkeypatch, reference_code,
                                                         our_code, names):
    from PIL import Image

    data = pytest.importorskip("skimage.data")
    folder = pair[3]
    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.chelsea()).save("000000039769.jpg", quality=95)  # two cats would do too

    def run(code):
        code = code.replace('"kakaobrain/align-base"', repr(folder))
        code = code.replace('"http://images.cocodataset.org/val2017/000000039769.jpg"', '"000000039769.jpg"')
        namespace = {}
        exec(compile(code, "docs/porting.md", "exec"), namespace)
        return namespace

    reference, ours = run(reference_code), run(our_code)  # both load `pair`'s checkpoint
    for name in names:
        expected, got = reference[name], ours[name]
        if hasattr(expected, "pooler_output") and not hasattr(got, "pooler_output"):
            expected = expected.pooler_output  # transformers 5 returns the tower's output
        expected, got = np_of(expected), np_of(got)
        if expected.ndim == 4 and expected.shape != got.shape:
            expected = expected.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        assert got.shape == expected.shape, name
        assert np.max(np.abs(got - expected)) < TOL, (name, np.max(np.abs(got - expected)))


# -- every forward argument ------------------------------------------------------------------
def test_keyword_dict_and_positional_calls_agree(pair, batch):
    _, reference, model, _ = pair
    text, pixels = batch
    by_dict = model({"pixel_values": pixels, **text})
    by_keyword = model(**text, pixel_values=pixels)
    positional = model(text["input_ids"], pixels, text["attention_mask"], text["token_type_ids"])
    with torch.no_grad():
        ref = reference(**torch_inputs(text), pixel_values=nhwc_to_nchw(pixels))
    for out in (by_dict, by_keyword, positional):
        assert max_diff(out.logits_per_image, ref.logits_per_image) < TOL
        assert max_diff(out["text_embeds"], ref.text_embeds) < TOL
    towers = AlignTextModel.from_pretrained(pair[3]), AlignVisionModel.from_pretrained(pair[3])
    assert max_diff(towers[0](input_ids=text["input_ids"], attention_mask=text["attention_mask"]).pooler_output,
                    reference.text_model(**torch_inputs(text)).pooler_output) < TOL
    assert max_diff(towers[1](pixel_values=pixels).pooler_output,
                    reference.vision_model(pixel_values=nhwc_to_nchw(pixels)).pooler_output) < TOL


def nhwc_to_nchw(pixels):
    return torch.tensor(np.asarray(pixels)).permute(0, 3, 1, 2)


def test_unknown_or_doubled_inputs_are_named(pair, batch):
    model = pair[2]
    text, pixels = batch
    with pytest.raises(TypeError, match="positions"):
        model({"pixel_values": pixels, "positions": text["input_ids"], **text})
    with pytest.raises(TypeError, match="attention_mask both"):
        model(text, attention_mask=text["attention_mask"])
    with pytest.raises(TypeError, match="pixel_values"):
        model.text_model({"pixel_values": pixels, **text})
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model.text_model(text["input_ids"], inputs_embeds=np.zeros((3, 12, 32), np.float32))


def test_position_ids_reversed(pair, batch):
    _, reference, model, _ = pair
    text, pixels = batch
    positions = np.tile(np.arange(11, -1, -1), (3, 1)).astype(np.int32)
    ours = model({**text, "position_ids": positions, "pixel_values": pixels})
    with torch.no_grad():
        ref = reference(**torch_inputs(text), position_ids=torch.tensor(positions, dtype=torch.long),
                        pixel_values=nhwc_to_nchw(pixels))
        default = reference(**torch_inputs(text), pixel_values=nhwc_to_nchw(pixels))
    assert max_diff(ours.text_embeds, ref.text_embeds) < TOL
    assert max_diff(ref.text_embeds, default.text_embeds) > 1e-2  # the positions matter
    features = model.get_text_features(**text, position_ids=positions[:1])  # [1, L] broadcasts
    assert max_diff(features, reference.get_text_features(
        **torch_inputs(text), position_ids=torch.tensor(positions[:1], dtype=torch.long)).pooler_output) < TOL


def test_inputs_embeds_from_the_embedding_table(pair, batch):
    _, reference, model, _ = pair
    text, pixels = batch
    embeds = model.text_model.embeddings.word_embeddings(text["input_ids"])
    ours = model(inputs_embeds=embeds, attention_mask=text["attention_mask"], pixel_values=pixels)
    with torch.no_grad():
        ref_embeds = reference.text_model.embeddings.word_embeddings(torch.tensor(text["input_ids"], dtype=torch.long))
        ref = reference(inputs_embeds=ref_embeds, attention_mask=torch.tensor(text["attention_mask"]),
                        pixel_values=nhwc_to_nchw(pixels))
    assert max_diff(embeds, ref_embeds) < TOL
    assert max_diff(ours.logits_per_text, ref.logits_per_text) < TOL
    assert max_diff(ours.text_embeds, model(**text)["text_embeds"]) < TOL


def test_head_mask_that_zeroes_one_head(pair, batch):
    """transformers 5 ignores head_mask; zeroing a head's slice of the attention output weights
    in the reference is the same computation, so that is what ours is checked against."""
    config, reference, model, _ = pair
    text, _ = batch
    layers, heads = config.text_config.num_hidden_layers, config.text_config.num_attention_heads
    head_dim = config.text_config.hidden_size // heads
    mask = np.ones((layers, heads), np.float32)
    mask[1, 2] = 0.0
    ours = model.text_model(**text, head_mask=mask, output_attentions=True)
    masked = hf_align_model(config, seed=4)
    masked.load_state_dict(reference.state_dict())
    with torch.no_grad():
        masked.text_model.encoder.layer[1].attention.output.dense.weight[:, 2 * head_dim:3 * head_dim] = 0
        ref = masked.text_model(**torch_inputs(text))
        unmasked = reference.text_model(**torch_inputs(text))
    assert max_diff(ours.last_hidden_state, ref.last_hidden_state) < TOL
    assert max_diff(ours.pooler_output, ref.pooler_output) < TOL
    assert max_diff(ref.last_hidden_state, unmasked.last_hidden_state) > 1e-3
    assert float(np.abs(np_of(ours.attentions[1])[:, 2]).max()) == 0.0
    # A 1-D mask applies to every layer.
    one_d = model.text_model(**text, head_mask=mask[1])
    with torch.no_grad():
        for layer in masked.text_model.encoder.layer:
            layer.attention.output.dense.weight[:, 2 * head_dim:3 * head_dim] = 0
        ref_all = masked.text_model(**torch_inputs(text))
    assert max_diff(one_d.last_hidden_state, ref_all.last_hidden_state) < TOL
    with pytest.raises(ValueError, match="head_mask must be"):
        model.text_model(**text, head_mask=np.ones((3,), np.float32))


def test_return_loss_hidden_states_attentions_and_tuple_order(pair, batch):
    _, reference, model, _ = pair
    text, pixels = batch
    ours = model(**text, pixel_values=pixels, return_loss=True, output_hidden_states=True,
                 output_attentions=True)
    with torch.no_grad():
        ref = reference(**torch_inputs(text), pixel_values=nhwc_to_nchw(pixels), return_loss=True,
                        output_hidden_states=True, output_attentions=True)
    assert list(ours) == [k for k in ref.keys()]
    assert abs(float(ours.loss) - float(ref.loss)) < TOL
    assert abs(float(ours.loss) - float(model.contrastive_loss(ours))) == 0.0
    for key in ("last_hidden_state", "pooler_output"):
        assert max_diff(ours.text_model_output[key], ref.text_model_output[key]) < TOL
    assert max_diff(ours.vision_model_output.last_hidden_state, nhwc(ref.vision_model_output.last_hidden_state)) < TOL
    for a, b in zip(ours.text_model_output.hidden_states, ref.text_model_output.hidden_states, strict=True):
        assert max_diff(a, b) < TOL
    for a, b in zip(ours.text_model_output.attentions, ref.text_model_output.attentions, strict=True):
        assert max_diff(a, b) < TOL
    for a, b in zip(ours.vision_model_output.hidden_states, ref.vision_model_output.hidden_states, strict=True):
        assert max_diff(a, nhwc(b)) < TOL
    # return_dict=False: the reference's tuple, element for element (vision maps NHWC).
    ours_tuple = model(**text, pixel_values=pixels, return_dict=False)
    with torch.no_grad():
        ref_tuple = reference(**torch_inputs(text), pixel_values=nhwc_to_nchw(pixels), return_dict=False)
    flat_ours, flat_ref = tf.nest.flatten(ours_tuple), tf.nest.flatten(ref_tuple)
    assert len(ours_tuple) == len(ref_tuple) == 6 and len(flat_ours) == len(flat_ref)
    for a, b in zip(flat_ours, flat_ref):
        b = nhwc(b) if b.ndim == 4 else b
        assert tuple(a.shape) == tuple(b.shape) and max_diff(a, b) < TOL
    assert ours_tuple[0] is not None and np.allclose(ours[1], ours.logits_per_image)
    with pytest.raises(ValueError, match="matching pairs"):
        model(**text, pixel_values=pixels[:2], return_loss=True)


def test_features_with_return_dict(pair, batch):
    _, reference, model, _ = pair
    text, pixels = batch
    with torch.no_grad():
        ref_text = reference.get_text_features(**torch_inputs(text))
        ref_image = reference.get_image_features(pixel_values=nhwc_to_nchw(pixels))
    ours_text = model.get_text_features(**text, return_dict=True)
    assert max_diff(ours_text.pooler_output, ref_text.pooler_output) < TOL
    assert max_diff(ours_text.last_hidden_state, ref_text.last_hidden_state) < TOL
    ours_image = model.get_image_features(pixel_values=pixels, return_dict=True)
    assert max_diff(ours_image.pooler_output, ref_image.pooler_output) < TOL
    assert max_diff(model.get_text_features(**text), ref_text.pooler_output) < TOL  # fast path


def test_nchw_pixel_values(pair, batch):
    _, reference, model, _ = pair
    _, pixels = batch
    nchw = np.transpose(pixels, (0, 3, 1, 2))
    with torch.no_grad():
        ref = reference.get_image_features(pixel_values=torch.tensor(nchw)).pooler_output
    assert max_diff(model.get_image_features(nchw), ref) < TOL
    assert max_diff(model.get_image_features(nchw, data_format="channels_first"), ref) < TOL
    assert max_diff(model(pixel_values=nchw).image_embeds, model(pixel_values=pixels).image_embeds) < TOL
    with pytest.raises(ValueError, match="fit both NHWC and NCHW"):
        model.get_image_features(np.zeros((1, 3, 9, 3), np.float32))
    with pytest.raises(ValueError, match="channels last"):
        model.get_image_features(np.zeros((1, 9, 9, 4), np.float32))


# -- outputs, tf.function, fit ---------------------------------------------------------------
def test_output_is_a_mapping_with_attributes(pair, batch):
    model = pair[2]
    text, pixels = batch
    out = model(**text, pixel_values=pixels)
    assert isinstance(out, dict) and out.logits_per_image is out["logits_per_image"]
    assert out.loss is None  # a field that was not asked for, as in transformers
    with pytest.raises(AttributeError, match="return_dict=True"):
        out.text_model_output
    rebuilt = tf.nest.map_structure(lambda x: x * 2, out)
    assert type(rebuilt) is type(out) and np.allclose(rebuilt.text_embeds, 2 * np.asarray(out.text_embeds))
    assert type(keras.tree.map_structure(lambda x: x, out)) is type(out)
    predicted = model.predict({"pixel_values": pixels, **text}, verbose=0)
    assert np.allclose(predicted["logits_per_image"], out.logits_per_image, atol=TOL)


def test_keyword_calls_in_tf_function_and_saved_model_signature(pair, batch, tmp_path):
    model = pair[2]
    text, pixels = batch
    expected = model({"pixel_values": pixels, **text})

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                  tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
                                  tf.TensorSpec([None, 33, 33, 3], tf.float32, name="pixel_values")])
    def similarity(input_ids, attention_mask, pixel_values):
        out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        return {"logits_per_image": out.logits_per_image, "text_embeds": out["text_embeds"]}

    got = similarity(text["input_ids"], text["attention_mask"], pixels)
    assert max_diff(got["logits_per_image"], expected.logits_per_image) < TOL
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("similarity", similarity)
    archive.write_out(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    served = loaded.signatures["similarity"](input_ids=tf.constant(text["input_ids"]),
                                              attention_mask=tf.constant(text["attention_mask"]),
                                              pixel_values=tf.constant(pixels))
    assert max_diff(served["logits_per_image"], expected.logits_per_image) < TOL


def test_one_fit_step_equals_a_keyword_call_step(pair, batch):
    """fit() reads the dict the same way a keyword call does: one SGD step through fit() equals
    one step on `model(..., return_loss=True, training=True).loss`."""
    config = tiny_align_config(text_config=tiny_text_config(vocab_size=30522, hidden_dropout_prob=0.0,
                                                            attention_probs_dropout_prob=0.0),
                               vision_config=tiny_vision_config(drop_connect_rate=0.0))
    text, pixels = batch
    positions = np.tile(np.arange(11, -1, -1), (3, 1)).astype(np.int32)
    data = {"pixel_values": pixels, **text, "position_ids": positions}

    def fresh():
        keras.utils.set_random_seed(0)
        model = AlignModel(config, label_smoothing=0.1)
        model.build()
        model.temperature.assign(0.5)
        return model

    fitted, manual = fresh(), fresh()
    fitted.compile(optimizer=keras.optimizers.SGD(0.1))
    history = fitted.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0)
    optimizer = keras.optimizers.SGD(0.1)
    variables = manual.trainable_variables
    optimizer.build(variables)

    @tf.function  # a graph like fit's (eager op-by-op rounding differs by ~1e-3 after BatchNorm)
    def step(inputs):
        with tf.GradientTape() as tape:
            loss = manual(**inputs, return_loss=True, training=True).loss
        pairs = [(g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return loss

    loss = step(data)
    assert abs(history.history["loss"][0] - float(loss)) < 1e-5
    for a, b in zip(fitted.weights, manual.weights, strict=True):
        assert max_diff(a, b) < 1e-5, a.path
    with pytest.raises(TypeError, match="extra_key"):
        fitted.fit(tf.data.Dataset.from_tensors({**data, "extra_key": text["input_ids"]}), verbose=0)


# -- configs and activations -----------------------------------------------------------------
def test_every_activation_equals_transformers():
    from transformers.activations import ACT2FN

    from align_tf.configuration import ACTIVATIONS
    from align_tf.models.activations import activation

    x = np.linspace(-6, 6, 601, dtype=np.float32)
    for name in ACTIVATIONS:
        expected = (torch.nn.functional.selu(torch.tensor(x)) if name == "selu"
                    else ACT2FN[name](torch.tensor(x))).numpy()
        assert np.max(np.abs(np.asarray(activation(name)(tf.constant(x))) - expected)) < 2e-6, name


@pytest.mark.parametrize("hidden_act", ["gelu_new", "mish"])
def test_vision_tower_with_other_activations_matches_reference(tmp_path, hidden_act):
    config = tiny_vision_config(hidden_act=hidden_act)
    torch.manual_seed(0)
    reference = randomize_reference(transformers.AlignVisionModel(
        transformers.AlignVisionConfig.from_dict(config.to_dict())))
    folder = save_hf_checkpoint(reference, str(tmp_path))
    model = AlignVisionModel.from_pretrained(folder)
    pixels = pixel_batch(2, 33, seed=1)
    with torch.no_grad():
        ref = reference(pixel_values=nhwc_to_nchw(pixels))
    assert max_diff(model(pixels).pooler_output, ref.pooler_output) < TOL


def test_configs_from_transformers_objects_and_clear_errors():
    text = transformers.AlignTextConfig(num_hidden_layers=3, hidden_size=48, num_attention_heads=4)
    vision = transformers.AlignVisionConfig(width_coefficient=0.25, depth_coefficient=0.5)
    config = AlignConfig.from_text_vision_configs(text, vision, projection_dim=80)
    assert (config.text_config.num_hidden_layers, config.text_config.hidden_size) == (3, 48)
    assert config.vision_config.output_channels == 80
    assert config.vision_config.hidden_dim == 2560  # transformers' class default came along
    with pytest.raises(ConfigError, match="only 'absolute'"):
        AlignTextConfig(position_embedding_type="relative_key")
    with pytest.raises(ConfigError, match="supported: gelu"):
        AlignVisionConfig(hidden_act="prelu")
    for name in ("selu", "gelu_new", "mish"):
        assert AlignVisionConfig(hidden_act=name).hidden_act == name
