"""Numerical parity with the reference `transformers` ALIGN (PyTorch), random weights.

BatchNorm statistics and the temperature are randomised in the reference before conversion
(support.randomize_reference), so an identity BatchNorm or temperature 1 cannot hide a bug.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from align_tf.configuration import AlignConfig  # noqa: E402
from align_tf.models.align import AlignModel  # noqa: E402
from align_tf.models.bert import AlignTextModel  # noqa: E402
from align_tf.models.efficientnet import AlignVisionModel  # noqa: E402
from support import (hf_align_model, pixel_batch, save_hf_checkpoint, text_batch,  # noqa: E402
                     tiny_align_config)


def max_diff(ours, reference):
    return float(np.max(np.abs(np.asarray(ours) - reference.detach().numpy())))


def torch_text(batch):
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def torch_pixels(pixels):
    return torch.tensor(pixels).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = tiny_align_config()
    reference = hf_align_model(config, seed=1)
    folder = save_hf_checkpoint(reference, str(tmp_path_factory.mktemp("tiny_hf")))
    return config, reference, folder


@pytest.mark.parametrize("size", [33, 64])
def test_joint_model_matches_reference(tiny, size):
    config, reference, folder = tiny
    model = AlignModel.from_pretrained(folder)
    pixels = pixel_batch(3, size, seed=size)
    text = text_batch(config.text_config.vocab_size, lengths=(7, 12, 3), max_len=12)
    ours = model({"pixel_values": pixels, **text})
    with torch.no_grad():
        ref = reference(pixel_values=torch_pixels(pixels), return_loss=True, **torch_text(text))
    diffs = {k: max_diff(ours[k], getattr(ref, k))
             for k in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text")}
    diffs["loss"] = abs(float(model.contrastive_loss(ours)) - float(ref.loss))
    print(f"size {size}: {diffs}")
    assert max(diffs.values()) < 1e-5, diffs
    # The un-normalised features too (HF get_*_features).
    with torch.no_grad():
        ref_image = reference.get_image_features(pixel_values=torch_pixels(pixels)).pooler_output
        ref_text = reference.get_text_features(**torch_text(text)).pooler_output
    assert max_diff(model.get_image_features(pixels), ref_image) < 1e-5
    assert max_diff(model.get_text_features(**text), ref_text) < 1e-5


def test_padding_does_not_change_text_embeddings(tiny):
    config, _, folder = tiny
    model = AlignModel.from_pretrained(folder)
    short = text_batch(config.text_config.vocab_size, lengths=(5, 3), max_len=5)
    long = {k: np.pad(v, ((0, 0), (0, 11))) for k, v in short.items()}
    a = model.get_text_features(**short)
    b = model.get_text_features(**long)
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-5


def test_text_tower_matches_reference(tiny):
    config, reference, folder = tiny
    model = AlignTextModel.from_pretrained(folder)  # the text part of a joint checkpoint
    text = text_batch(config.text_config.vocab_size, lengths=(9, 4, 12), max_len=12, seed=3)
    ours = model(text, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = reference.text_model(**torch_text(text), output_hidden_states=True,
                                   output_attentions=True)
    assert max_diff(ours["last_hidden_state"], ref.last_hidden_state) < 1e-5
    assert max_diff(ours["pooler_output"], ref.pooler_output) < 1e-5
    assert len(ours["hidden_states"]) == len(ref.hidden_states) == config.text_config.num_hidden_layers + 1
    for a, b in zip(ours["hidden_states"], ref.hidden_states):
        assert max_diff(a, b) < 1e-5
    if ref.attentions is not None:
        for a, b in zip(ours["attentions"], ref.attentions):
            assert max_diff(a, b) < 1e-5


@pytest.mark.parametrize("size", [33, 64])
def test_vision_tower_matches_reference(tiny, size):
    config, reference, folder = tiny
    model = AlignVisionModel.from_pretrained(folder)  # the vision part of a joint checkpoint
    pixels = pixel_batch(2, size, seed=7)
    ours = model(pixels, output_hidden_states=True)
    with torch.no_grad():
        ref = reference.vision_model(pixel_values=torch_pixels(pixels), output_hidden_states=True)
    nchw = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
    assert max_diff(ours["last_hidden_state"], nchw(ref.last_hidden_state)) < 1e-5
    assert max_diff(ours["pooler_output"], ref.pooler_output.reshape(2, -1)) < 1e-5
    assert len(ours["hidden_states"]) == len(ref.hidden_states)
    for a, b in zip(ours["hidden_states"], ref.hidden_states):
        assert a.shape == tuple(nchw(b).shape)
        assert max_diff(a, nchw(b)) < 1e-5
    # The unfolded BatchNorm path (what training runs) gives the same inference numbers.
    unfolded = model(pixels, fold_batch_norm=False)
    assert max_diff(unfolded["last_hidden_state"], nchw(ref.last_hidden_state)) < 1e-5


def test_stride2_padding_trap_shapes():
    # 289 -> stem 144 (Keras "same" would give 145) -> 72 / 36 / 18 / 9.
    model = AlignVisionModel(tiny_align_config().vision_config)
    out = model(np.zeros((1, 289, 289, 3), np.float32), output_hidden_states=True)
    sizes = sorted({h.shape[1] for h in out["hidden_states"]}, reverse=True)
    assert sizes == [144, 72, 36, 18, 9]


@pytest.mark.full_size
def test_align_base_size_matches_reference(tmp_path):
    config = AlignConfig()
    reference = hf_align_model(config, seed=2)
    folder = save_hf_checkpoint(reference, str(tmp_path))
    model = AlignModel.from_pretrained(folder)
    counts = {
        "text": sum(int(np.prod(w.shape)) for w in model.text_model.weights),
        "vision_trainable": sum(int(np.prod(w.shape)) for w in model.vision_model.trainable_weights),
        "vision_bn_stats": sum(int(np.prod(w.shape)) for w in model.vision_model.non_trainable_weights),
        "total": sum(int(np.prod(w.shape)) for w in model.weights),
    }
    # Published parameter counts of align-base (reference README).
    assert counts == {"text": 109_482_240, "vision_trainable": 62_143_440,
                      "vision_bn_stats": 305_600, "total": 172_117_841 + 305_600}
    pixels = pixel_batch(2, 289, seed=11)
    text = text_batch(config.text_config.vocab_size, lengths=(10, 64, 4), max_len=64, seed=5)
    ours = model({"pixel_values": pixels, **text})
    with torch.no_grad():
        ref = reference(pixel_values=torch_pixels(pixels), **torch_text(text))
    diffs = {k: max_diff(ours[k], getattr(ref, k))
             for k in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text")}
    print(f"align-base size, 289x289: {diffs}")
    assert diffs["image_embeds"] < 1e-5 and diffs["text_embeds"] < 1e-5, diffs
    assert diffs["logits_per_image"] < 1e-4 and diffs["logits_per_text"] < 1e-4, diffs
