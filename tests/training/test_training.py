"""The contrastive train/test steps against the reference loss, mixed precision, and the recipe's
pieces (weight-decay exclusions, schedule, frozen towers, gradient accumulation)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from support import (hf_align_model, pixel_batch, save_hf_checkpoint, text_batch, tiny_align_config,
                     tiny_text_config, tiny_vision_config)

IMAGE_SIZE = 64  # the tiny tower's final map is 2x2: BatchNorm statistics are well defined


def quiet_config():
    """The tiny config without dropout or drop-connect: training-mode steps are deterministic."""
    return tiny_align_config(
        text_config=tiny_text_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        vision_config=tiny_vision_config(drop_connect_rate=0.0))


def batch(n=4, seed=0):
    lengths = (3, 5, 7, 4, 8, 2, 6, 5)[:n]
    inputs = text_batch(1000, lengths=lengths, max_len=8, seed=seed)
    inputs["pixel_values"] = pixel_batch(n, IMAGE_SIZE, seed=seed + 1)
    return inputs


def one_step(model, inputs, optimizer, run_eagerly=False):
    # Eagerly runs the same train_step code without tracing it (seconds instead of tens).
    model.compile(optimizer=optimizer, run_eagerly=run_eagerly)
    return model.fit(inputs, batch_size=len(inputs["input_ids"]), epochs=1, shuffle=False,
                     verbose=0).history


def trainable_arrays(model):
    return [np.array(v.numpy()) for v in model.trainable_variables]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A transformers AlignModel (random weights, randomised BatchNorm statistics and temperature)
    and the same weights loaded into ours."""
    import torch

    from align_tf.models.align import AlignModel

    config = quiet_config()
    hf = hf_align_model(config, seed=3)
    folder = save_hf_checkpoint(hf, str(tmp_path_factory.mktemp("hf")))
    inputs = batch(4, seed=5)
    with torch.no_grad():
        hf_inputs = dict(
            input_ids=torch.tensor(inputs["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["attention_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(inputs["token_type_ids"], dtype=torch.long),
            pixel_values=torch.tensor(inputs["pixel_values"]).permute(0, 3, 1, 2))
        hf.eval()
        eval_loss = float(hf(**hf_inputs, return_loss=True).loss)
        hf.train()  # BatchNorm on batch statistics; no dropout in this config
        train_loss = float(hf(**hf_inputs, return_loss=True).loss)
    return {"folder": folder, "inputs": inputs, "eval_loss": eval_loss, "train_loss": train_loss}


def test_test_step_loss_equals_transformers_return_loss(reference):
    from align_tf.models.align import AlignModel

    model = AlignModel.from_pretrained(reference["folder"])
    model.compile(optimizer="sgd")
    logs = model.evaluate(reference["inputs"], batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], reference["eval_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["temperature"], 0.37, rtol=1e-6)  # randomised reference value
    for name in ("image_to_text_accuracy", "text_to_image_accuracy"):
        assert 0.0 <= logs[name] <= 1.0


def test_train_step_loss_equals_transformers_training_mode_loss(reference):
    from align_tf.models.align import AlignModel

    model = AlignModel.from_pretrained(reference["folder"])
    history = one_step(model, reference["inputs"], keras.optimizers.SGD(0.0))
    np.testing.assert_allclose(history["loss"][0], reference["train_loss"], rtol=1e-5, atol=1e-6)


def test_mixed_float16_step_moves_weights_like_float32():
    from align_tf.models.align import AlignModel

    keras.utils.set_random_seed(0)
    config, inputs = quiet_config(), batch(4)
    deltas = {}
    start = None
    for policy in ("float32", "mixed_float16"):
        model = AlignModel(config, dtype=policy)
        model.build()
        if start is None:
            start = model.get_weights()
        model.set_weights(start)
        before = trainable_arrays(model)
        history = one_step(model, inputs, keras.optimizers.SGD(0.1), run_eagerly=True)
        if policy == "mixed_float16":
            # compile() wrapped the optimizer: the step scaled the loss, and did not overflow.
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert history["loss"][0] > 0 and np.isfinite(history["loss"][0])
        deltas[policy] = np.concatenate([(a - b).ravel() for a, b in zip(trainable_arrays(model), before)])
    reference_norm = np.linalg.norm(deltas["float32"])
    assert reference_norm > 1e-2
    # The same amount: the size of the update agrees within 1e-2 (a missing loss scale or
    # unscale would be off by 32768x) ...
    size_ratio = np.linalg.norm(deltas["mixed_float16"]) / reference_norm
    assert abs(size_ratio - 1) < 1e-2, f"float16 update is {size_ratio:.4f}x the float32 one"
    # ... and so does its direction, within float16's rounding through 10 blocks and 2 layers
    # (measured: 1.7e-2 to 2.0e-2 relative, cosine 0.9998).
    cosine = deltas["mixed_float16"] @ deltas["float32"] / (
        np.linalg.norm(deltas["mixed_float16"]) * reference_norm)
    assert cosine > 0.999, cosine
    relative = np.linalg.norm(deltas["mixed_float16"] - deltas["float32"]) / reference_norm
    assert relative < 5e-2, f"float16 step differs from float32 by {relative:.2e} (relative)"


def test_weight_decay_skips_norms_biases_and_temperature():
    """AdamW with zero gradients changes a variable only through weight decay."""
    from align_tf.models.align import AlignModel
    from align_tf.training.optimizers import build_optimizer

    model = AlignModel(tiny_align_config())
    model.build()
    optimizer = build_optimizer(model, "adamw", learning_rate=1.0, weight_decay=0.5)
    variables = model.trainable_variables
    before = {v.path: np.array(v.numpy()) for v in variables}
    optimizer.apply([keras.ops.zeros_like(v) for v in variables], variables)
    decayed = {v.path for v in variables if not np.array_equal(v.numpy(), before[v.path])}
    for v in variables:
        path = v.path
        expected_kept = (path.endswith("/bias") or path.endswith("/gamma") or path.endswith("/beta")
                         or path.endswith("temperature"))
        assert (path not in decayed) == expected_kept, path
        if path in decayed:
            np.testing.assert_allclose(v.numpy(), before[path] * 0.5, rtol=1e-6)
    assert any("LayerNorm" in p for p in before) and any("batchnorm" in p for p in before)
    assert any("word_embeddings" in p for p in decayed) and any("kernel" in p for p in decayed)


def test_warmup_then_linear_decay_schedule():
    from align_tf.training.schedules import WarmupLinearDecay

    schedule = WarmupLinearDecay(1e-3, warmup_steps=4, total_steps=12)
    values = [float(schedule(step)) for step in range(14)]
    expected = [2.5e-4, 5e-4, 7.5e-4, 1e-3] + [1e-3 * (12 - s) / 8 for s in range(4, 12)] + [0.0, 0.0]
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12)
    restored = WarmupLinearDecay.from_config(schedule.get_config())
    assert float(restored(6)) == pytest.approx(values[6])


@pytest.mark.parametrize("frozen", ["vision", "text"])
def test_frozen_tower_keeps_weights_and_batchnorm_statistics(frozen):
    from align_tf.models.align import AlignModel

    model = AlignModel(quiet_config())
    model.build()
    tower = model.vision_model if frozen == "vision" else model.text_model
    other = model.text_model if frozen == "vision" else model.vision_model
    tower.trainable = False
    tower_before = [np.array(w.numpy()) for w in tower.weights]  # BatchNorm statistics included
    other_before = [np.array(w.numpy()) for w in other.trainable_weights]
    one_step(model, batch(4), keras.optimizers.SGD(0.1), run_eagerly=True)
    for w, b in zip(tower.weights, tower_before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert any(not np.allclose(w.numpy(), b) for w, b in zip(other.trainable_weights, other_before))
    assert not np.isclose(float(model.temperature.numpy()), 1.0)


def test_gradient_accumulation_of_two_identical_batches_equals_one_step():
    import tensorflow as tf

    from align_tf.models.align import AlignModel

    keras.utils.set_random_seed(1)
    inputs = batch(4)
    plain = AlignModel(quiet_config())
    plain.build()
    start = plain.get_weights()
    one_step(plain, inputs, keras.optimizers.SGD(0.1), run_eagerly=True)

    accumulated = AlignModel(quiet_config())
    accumulated.build()
    accumulated.set_weights(start)
    initial = trainable_arrays(accumulated)
    accumulated.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
                        run_eagerly=True)
    dataset = tf.data.Dataset.from_tensors(inputs).repeat(2)
    accumulated.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    for a, b in zip(trainable_arrays(accumulated), initial):  # one micro-batch: nothing applied
        np.testing.assert_array_equal(a, b)
    accumulated.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    for a, b in zip(trainable_arrays(accumulated), trainable_arrays(plain)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert int(accumulated.optimizer.iterations.numpy()) == 1


def test_text_tower_from_an_hf_bert_checkpoint():
    """`--text-model`: the text tower starts as the BERT checkpoint (real MiniLM weights), with
    its config and its vocabulary; the rest comes from the preset."""
    from support import minilm_folder

    from align_tf.models.bert import AlignTextModel
    from align_tf.training.recipe import TrainingConfig, build_model_and_processor

    model, processor = build_model_and_processor(
        TrainingConfig(model="demo-config", text_model=minilm_folder()))
    bert = AlignTextModel.from_pretrained(minilm_folder())
    assert model.config.text_config.hidden_size == 384
    assert model.config.vision_config.width_coefficient == 0.5  # the preset's vision tower
    for ours, theirs in zip(model.text_model.weights, bert.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert processor.tokenizer.vocab_file.startswith(minilm_folder())


def test_strategies_by_name():
    import tensorflow as tf

    from align_tf.training.strategy import get_strategy, is_chief, worker_task

    assert get_strategy("default") is tf.distribute.get_strategy()
    assert get_strategy("mirrored").num_replicas_in_sync >= 1
    with pytest.raises(ValueError, match="TF_CONFIG"):
        get_strategy("multi_worker")
    with pytest.raises(ValueError, match="strategy must be one of"):
        get_strategy("horovod")
    assert is_chief(tf.distribute.get_strategy()) and worker_task() == (None, 0)


def test_cli_refuses_bad_settings(tmp_path, capsys):
    from align_tf.cli import main

    code = main(["train", "--data", "demo:16", "--steps", "1", "--global-batch-size", "4",
                 "--precision", "float32", "--gradient-accumulation-steps", "0",
                 "--output", str(tmp_path)])
    assert code == 2 and "--gradient-accumulation-steps" in capsys.readouterr().err
    code = main(["train", "--data", "digits", "--output", str(tmp_path)])
    assert code == 2 and "--model" in capsys.readouterr().err
