"""One contrastive step under MirroredStrategy (two logical CPUs) equals the single-device step on
the same global batch, and only because of the all-gather.

TensorFlow fixes its logical devices when it starts, so the two-replica run happens in a child
process (this file, run as a script).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from support import child_pythonpath

from distributed_steps import GLOBAL_BATCH, LEARNING_RATE, global_batch, reference_step, step_config


def child_main(out_path: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from align_tf.models.align import AlignModel

    keras.utils.set_random_seed(0)
    config, inputs = step_config(), global_batch()
    initial = AlignModel(config)
    initial.build()
    start = initial.get_weights()

    results = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for gather in (True, False):
        with strategy.scope():
            model = AlignModel(config, gather_negatives=gather)
            model.build()
            model.set_weights(start)
            # The ablation only has to differ: run it eagerly (no second trace).
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), run_eagerly=not gather)
        dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(GLOBAL_BATCH)
        history = model.fit(dataset, epochs=1, verbose=0)
        key = "gather" if gather else "local"
        results[f"{key}_loss"] = history.history["loss"][0]
        results[f"{key}_weights"] = [v.numpy() for v in model.trainable_variables]

    single = AlignModel(config)
    single.build()
    single.set_weights(start)
    results["reference_loss"] = reference_step(single, inputs, strategy.num_replicas_in_sync)
    results["reference_weights"] = [v.numpy() for v in single.trainable_variables]
    results["start_weights"] = [v.numpy() for v in initial.trainable_variables]
    flat = {}
    for key, value in results.items():
        if isinstance(value, list):
            for i, array in enumerate(value):
                flat[f"{key}/{i}"] = array
        else:
            flat[key] = np.asarray(value)
    np.savez(out_path, **flat)


def _weights(results, key):
    count = len([k for k in results.files if k.startswith(key + "/")])
    return [results[f"{key}/{i}"] for i in range(count)]


@pytest.mark.multiprocess  # the steps in a child process with two logical devices
def test_mirrored_step_equals_single_device_step_on_global_batch(tmp_path):
    out = tmp_path / "results.npz"
    env = dict(os.environ, PYTHONPATH=child_pythonpath(__file__))
    done = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = np.load(out)

    reference = _weights(results, "reference_weights")
    gathered = _weights(results, "gather_weights")
    local = _weights(results, "local_weights")
    start = _weights(results, "start_weights")
    assert len(reference) == len(gathered) == len(local)
    # The step moved the weights (pooler excluded: it gets no gradient in either run).
    moved = max(float(np.max(np.abs(r - s))) for r, s in zip(reference, start))
    assert moved > 1e-3

    diff = max(float(np.max(np.abs(g - r))) for g, r in zip(gathered, reference))
    assert diff < 1e-5, f"two-replica step differs from the global-batch step by {diff}"
    np.testing.assert_allclose(results["gather_loss"], results["reference_loss"], rtol=1e-5)

    # Without the gather each replica only sees its own 4 negatives: a different step.
    local_diff = max(float(np.max(np.abs(w - r))) for w, r in zip(local, reference))
    assert local_diff > 100 * max(diff, 1e-6), (local_diff, diff)
    assert abs(float(results["local_loss"]) - float(results["reference_loss"])) > 1e-3
    print(f"gather max |dw| {diff:.2e}, no-gather max |dw| {local_diff:.2e}")


if __name__ == "__main__":
    child_main(sys.argv[1])
