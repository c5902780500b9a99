"""Checkpoint loading and saving: both HF file formats, our format, Keras-native saving, hub
cache, the convert command, and strict refusal of broken or malicious checkpoints."""

import json
import os
import pickle
import shutil
import zipfile

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from align_tf.checkpoints.convert import CheckpointMismatchError  # noqa: E402
from align_tf.checkpoints.hub import PretrainedNotFoundError  # noqa: E402
from align_tf.checkpoints.torch_pickle import CheckpointSecurityError, load_torch_state_dict  # noqa: E402
from align_tf.cli import main as cli_main  # noqa: E402
from align_tf.models.align import AlignModel  # noqa: E402
from align_tf.models.bert import AlignTextModel  # noqa: E402
from support import hf_align_model, pixel_batch, save_hf_checkpoint, text_batch, tiny_align_config  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return hf_align_model(tiny_align_config(), seed=3)


@pytest.fixture(scope="module")
def inputs():
    return {"pixel_values": pixel_batch(2, 40, seed=1),
            **text_batch(1000, lengths=(6, 9, 2), max_len=9, seed=2)}


def reference_logits(hf_model, inputs):
    with torch.no_grad():
        out = hf_model(pixel_values=torch.tensor(inputs["pixel_values"]).permute(0, 3, 1, 2),
                       input_ids=torch.tensor(inputs["input_ids"]).long(),
                       attention_mask=torch.tensor(inputs["attention_mask"]).long(),
                       token_type_ids=torch.tensor(inputs["token_type_ids"]).long())
    return out.logits_per_text.numpy()


def logits(model, inputs):
    return np.asarray(model(inputs)["logits_per_text"])


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_both_hf_file_formats_load(tmp_path, reference, inputs, fmt):
    folder = save_hf_checkpoint(reference, str(tmp_path), fmt)
    model = AlignModel.from_pretrained(folder)
    assert np.max(np.abs(logits(model, inputs) - reference_logits(reference, inputs))) < 1e-5


def test_bin_reader_needs_no_torch_and_matches_torch_load(tmp_path, reference):
    folder = save_hf_checkpoint(reference, str(tmp_path), "bin")
    ours = load_torch_state_dict(os.path.join(folder, "pytorch_model.bin"))
    theirs = torch.load(os.path.join(folder, "pytorch_model.bin"), weights_only=True)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


def test_old_checkpoints_with_position_ids_buffer_load(tmp_path, reference, inputs):
    folder = save_hf_checkpoint(reference, str(tmp_path), "bin")
    state = torch.load(os.path.join(folder, "pytorch_model.bin"), weights_only=True)
    state["text_model.embeddings.position_ids"] = torch.arange(80)[None]
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    model = AlignModel.from_pretrained(folder)
    assert np.max(np.abs(logits(model, inputs) - reference_logits(reference, inputs))) < 1e-5


def test_hf_format_save_loads_in_transformers(tmp_path, reference, inputs):
    model = AlignModel.from_pretrained(save_hf_checkpoint(reference, str(tmp_path / "src")))
    # Change the weights so the round trip cannot pass by reloading the source.
    model.temperature.assign(0.5)
    model.text_projection.bias.assign(np.full(model.text_projection.bias.shape, 0.1, np.float32))
    model.save_pretrained(str(tmp_path / "hf"), format="hf")
    back = transformers.AlignModel.from_pretrained(str(tmp_path / "hf")).eval()
    assert float(back.temperature.detach()) == 0.5
    assert np.max(np.abs(reference_logits(back, inputs) - logits(model, inputs))) < 1e-5


def test_our_format_and_keras_native_round_trip(tmp_path, reference, inputs):
    model = AlignModel.from_pretrained(save_hf_checkpoint(reference, str(tmp_path / "src")))
    expected = logits(model, inputs)
    model.save_pretrained(str(tmp_path / "ours"))
    assert {"config.json", "model.weights.h5"} <= set(os.listdir(tmp_path / "ours"))
    np.testing.assert_allclose(logits(AlignModel.from_pretrained(str(tmp_path / "ours")), inputs),
                               expected, atol=1e-6)
    model.save(str(tmp_path / "align.keras"))
    restored = keras.saving.load_model(str(tmp_path / "align.keras"))
    assert isinstance(restored, AlignModel)
    assert restored.config == model.config
    np.testing.assert_allclose(logits(restored, inputs), expected, atol=1e-6)


def test_save_pretrained_carries_tokenizer_files(tmp_path, reference):
    src = save_hf_checkpoint(reference, str(tmp_path / "src"))
    (tmp_path / "src" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    (tmp_path / "src" / "preprocessor_config.json").write_text("{}")
    AlignModel.from_pretrained(src).save_pretrained(str(tmp_path / "out"))
    assert (tmp_path / "out" / "vocab.txt").read_text().endswith("hello\n")
    assert (tmp_path / "out" / "preprocessor_config.json").exists()


def test_hub_id_resolves_offline_from_cache(tmp_path, reference, inputs, monkeypatch):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    snapshot = cache / "models--kakaobrain--align-tiny" / "snapshots" / ("a" * 40)
    save_hf_checkpoint(reference, str(snapshot))
    (cache / "models--kakaobrain--align-tiny" / "refs").mkdir()
    (cache / "models--kakaobrain--align-tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    model = AlignModel.from_pretrained("kakaobrain/align-tiny")
    assert np.max(np.abs(logits(model, inputs) - reference_logits(reference, inputs))) < 1e-5
    with pytest.raises(PretrainedNotFoundError, match="HF_HUB_OFFLINE"):
        AlignModel.from_pretrained("kakaobrain/not-in-cache")


def test_not_a_folder_or_hub_id():
    with pytest.raises(PretrainedNotFoundError, match="not a folder"):
        AlignModel.from_pretrained("no/such/dir/here")


def test_text_tower_from_align_checkpoint_ignores_other_tower_only(tmp_path, reference):
    folder = save_hf_checkpoint(reference, str(tmp_path))
    text = AlignTextModel.from_pretrained(folder)
    np.testing.assert_array_equal(
        text.embeddings.word_embeddings.embeddings.numpy(),
        reference.text_model.embeddings.word_embeddings.weight.detach().numpy())


# -- broken checkpoints --------------------------------------------------------------------

def _edit_state(tmp_path, reference, edit):
    from safetensors.torch import save_file

    folder = save_hf_checkpoint(reference, str(tmp_path))
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    edit(state)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "model.safetensors"))
    return folder


def test_missing_key_is_refused(tmp_path, reference):
    def drop(state):
        del state["vision_model.encoder.blocks.3.projection.project_bn.running_var"]
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key.*blocks\.3\.projection\.project_bn\.running_var"):
        AlignModel.from_pretrained(_edit_state(tmp_path, reference, drop))


def test_extra_key_is_refused(tmp_path, reference):
    def add(state):
        state["text_model.encoder.layer.7.output.dense.weight"] = torch.zeros(4, 4)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key.*layer\.7\.output\.dense\.weight \(4, 4\)"):
        AlignModel.from_pretrained(_edit_state(tmp_path, reference, add))


def test_transposed_shape_is_refused(tmp_path, reference):
    def transpose(state):
        state["text_model.encoder.layer.0.intermediate.dense.weight"] = \
            state["text_model.encoder.layer.0.intermediate.dense.weight"].T.contiguous()
    with pytest.raises(CheckpointMismatchError, match=r"intermediate\.dense\.weight checkpoint \(32, 37\) vs model \(37, 32\)"):
        AlignModel.from_pretrained(_edit_state(tmp_path, reference, transpose))


def test_refusal_leaves_no_half_loaded_model(tmp_path, reference):
    model = AlignModel(tiny_align_config())
    model.build()
    before = [w.numpy().copy() for w in model.weights]
    from align_tf.checkpoints.convert import assign_state_dict
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    del state["temperature"]
    with pytest.raises(CheckpointMismatchError):
        assign_state_dict(model, state)
    for a, w in zip(before, model.weights):
        np.testing.assert_array_equal(a, w.numpy())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/align_tf_pwned",))


def test_malicious_pickle_is_refused_without_running(tmp_path, reference):
    folder = save_hf_checkpoint(reference, str(tmp_path), "bin")
    path = os.path.join(folder, "pytorch_model.bin")
    # Replace data.pkl inside the torch zip with a pickle that calls os.system when loaded.
    with zipfile.ZipFile(path) as src:
        entries = {name: src.read(name) for name in src.namelist()}
    pkl = [n for n in entries if n.endswith("/data.pkl")][0]
    entries[pkl] = pickle.dumps({"temperature": _Exploit()}, protocol=2)
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    if os.path.exists("/tmp/align_tf_pwned"):
        os.remove("/tmp/align_tf_pwned")
    with pytest.raises(CheckpointSecurityError, match=r"refusing to load (posix|os)\.system"):
        AlignModel.from_pretrained(folder)
    assert not os.path.exists("/tmp/align_tf_pwned")


def test_our_weights_file_with_fewer_layers_is_refused(tmp_path):
    config = tiny_align_config()
    model = AlignModel(config)
    model.save_pretrained(str(tmp_path))
    data = json.loads((tmp_path / "config.json").read_text())
    data["text_config"]["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointMismatchError, match="holds .* arrays"):
        AlignModel.from_pretrained(str(tmp_path))


def test_convert_command(tmp_path, reference, inputs, capsys):
    src = save_hf_checkpoint(reference, str(tmp_path / "src"), "bin")
    assert cli_main(["convert", src, str(tmp_path / "out")]) == 0
    assert "AlignModel" in capsys.readouterr().out
    model = AlignModel.from_pretrained(str(tmp_path / "out"))
    assert np.max(np.abs(logits(model, inputs) - reference_logits(reference, inputs))) < 1e-5
    shutil.rmtree(tmp_path / "src")


def test_trained_model_saves_and_reloads(tmp_path, inputs):
    # A compiled, trained model's weights file also carries optimizer state: still loads.
    model = AlignModel(tiny_align_config())
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    batch = {**inputs, "pixel_values": pixel_batch(3, 40, seed=4)}
    model.train_on_batch(batch)
    model.save_pretrained(str(tmp_path))
    reloaded = AlignModel.from_pretrained(str(tmp_path))
    np.testing.assert_allclose(logits(reloaded, inputs), logits(model, inputs), atol=1e-6)


def test_loading_skips_random_init_and_restores_the_initializers(tmp_path, reference):
    """from_pretrained builds variables as zeros (every one is then overwritten by the strict
    load) and puts each layer's initializer back afterwards, so a later build is random again."""
    from align_tf.checkpoints.convert import TO_HF, weight_table

    folder = save_hf_checkpoint(reference, str(tmp_path))
    model = AlignModel.from_pretrained(folder)
    state = reference.state_dict()
    for key, variable, transform in weight_table(model):
        np.testing.assert_array_equal(TO_HF[transform](variable.numpy()), state[key].numpy().reshape(
            TO_HF[transform](variable.numpy()).shape), err_msg=key)
    initializers = [(layer, name, value) for layer in model._flatten_layers(include_self=True)
                    for name, value in vars(layer).items()
                    if name.endswith("_initializer") and not name.startswith("_") and value is not None]
    assert initializers and all(isinstance(value, keras.initializers.Initializer)
                                for _, _, value in initializers)
    fresh = AlignModel(model.config)
    fresh.build()
    kernel = fresh.vision_model.blocks[0].depthwise_conv.kernel.numpy()
    assert np.std(kernel) > 0  # random, not zeros
