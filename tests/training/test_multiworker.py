"""`model.fit` under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 (TF_CONFIG).

Both workers must end with the same weights, equal to the single-process step computed by hand
on the global batch. The same workers also record what Keras itself does with scalar logs from a
custom `train_step` under multi-worker (it fails in its own log reduction, keras <= 3.15.1), so we
see when that changes and the shape-[1] workaround in `align_tf.models.distributed` can go.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from support import REPO_ROOT, child_pythonpath

from distributed_steps import LEARNING_RATE, global_batch, reference_step, step_config

NUM_WORKERS = 2
STEPS = 2
REPO = REPO_ROOT


def keras_behaviour(strategy) -> dict:
    """What plain Keras does under this (multi-worker) strategy: `fit` of a Sequential with a
    compiled mse loss, and of a custom `train_step` whose logs are scalars or shape-[1]."""
    import keras
    import tensorflow as tf

    class Regression(keras.Model):
        """Learns y = 1 from x alone, so its batches are single tensors: Keras's sample-batch
        reduction (which fails on tuples and dicts) passes and its log reduction is reached."""

        def __init__(self, log_shape, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(1)
            self.log_shape = log_shape

        def build(self, input_shape):
            self.dense.build(input_shape)

        def call(self, x):
            return self.dense(x)

        def train_step(self, x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x) - 1.0))
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables),
                                 self.trainable_variables)
            # Not named "loss": Keras would report its own (unused) loss tracker instead.
            return {"mse": tf.reshape(loss, self.log_shape)}

    def outcome(fit):
        try:
            history = fit()
            logs = history.history
            return {"ok": True, "logs": {k: float(np.ravel(v[-1])[0]) for k, v in logs.items()}}
        except Exception as error:  # noqa: BLE001 - recording Keras's behaviour, whatever it is
            return {"ok": False, "error": f"{type(error).__name__}: {error}"[:300]}

    x = np.ones((8, 3), np.float32)
    result = {}
    with strategy.scope():
        sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        sequential.compile(optimizer="sgd", loss="mse")
    result["sequential_mse"] = outcome(lambda: sequential.fit(
        tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4), epochs=1, verbose=0))
    for name, shape in (("scalar_logs", []), ("shape_1_logs", [1])):
        with strategy.scope():
            model = Regression(shape)
            model.build((None, 3))
            model.compile(optimizer="sgd")
        result[name] = outcome(lambda: model.fit(
            tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=1, verbose=0))
    return result


def worker_main(out_path: str) -> None:
    import keras
    import tensorflow as tf

    from align_tf.models.align import AlignModel

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task_id = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    result = {"task": task_id, "num_replicas": strategy.num_replicas_in_sync,
              "keras": keras_behaviour(strategy)}

    keras.utils.set_random_seed(0)  # same initial weights on every worker
    config, inputs = step_config(), global_batch()
    with strategy.scope():
        model = AlignModel(config)
        model.build()
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    np.savez(out_path + ".start.npz", *[v.numpy() for v in model.trainable_variables])

    def worker_dataset(context):
        # Worker i holds rows [i * local, (i + 1) * local) of every global batch.
        local = context.get_per_replica_batch_size(len(inputs["input_ids"]))
        rows = slice(context.input_pipeline_id * local, (context.input_pipeline_id + 1) * local)
        mine = {k: v[rows] for k, v in inputs.items()}
        return tf.data.Dataset.from_tensors(mine).repeat(STEPS)

    dataset = strategy.distribute_datasets_from_function(worker_dataset)
    history = model.fit(dataset, epochs=1, steps_per_epoch=STEPS, verbose=0)
    result["loss"] = [float(v) for v in history.history["loss"]]
    np.savez(out_path + ".npz", *[v.numpy() for v in model.trainable_variables])
    with open(out_path + ".json", "w") as f:
        json.dump(result, f)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(tmp_path, timeout: float = 420.0) -> list[str]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(NUM_WORKERS)]}
    outs, procs = [], []
    try:
        for index in range(NUM_WORKERS):
            out = str(tmp_path / f"worker{index}")
            env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                         "task": {"type": "worker", "index": index}}),
                       PYTHONPATH=child_pythonpath(__file__),
                       CUDA_VISIBLE_DEVICES="")
            log = open(out + ".log", "w")
            procs.append(subprocess.Popen([sys.executable, __file__, out], env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
            outs.append(out)
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outs):
        if proc.returncode != 0:
            with open(out + ".log") as f:
                pytest.fail(f"worker {out} exited {proc.returncode}:\n{f.read()[-4000:]}")
    return outs


def _arrays(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.multiprocess
def test_fit_under_multi_worker_mirrored_strategy(tmp_path):
    from align_tf.models.align import AlignModel

    outs = run_workers(tmp_path)
    results = []
    for out in outs:
        with open(out + ".json") as f:
            results.append(json.load(f))
    assert [r["num_replicas"] for r in results] == [NUM_WORKERS] * NUM_WORKERS

    # Keras's own behaviour (keras 3.15.1): `fit` of a compiled Sequential fails reducing its
    # sample batch, and scalar logs from a custom train_step break the log reduction, while
    # shape-[1] logs train. When these assertions fail Keras has changed: the workarounds in
    # align_tf.models.distributed (build_for_fit, logs_for_keras) may be dropped.
    keras_outcome = results[0]["keras"]
    print(json.dumps(keras_outcome, indent=1))
    assert not keras_outcome["sequential_mse"]["ok"], keras_outcome
    assert "PerReplica" in keras_outcome["sequential_mse"]["error"], keras_outcome
    assert not keras_outcome["scalar_logs"]["ok"], keras_outcome
    assert "reduction dimension" in keras_outcome["scalar_logs"]["error"], keras_outcome
    assert keras_outcome["shape_1_logs"]["ok"], keras_outcome
    assert keras_outcome["shape_1_logs"]["logs"]["mse"] > 0, keras_outcome

    # Both workers: identical weights.
    weights = [_arrays(out + ".npz") for out in outs]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)

    # Equal to the single-process steps on the global batch.
    start = _arrays(outs[0] + ".start.npz")
    model = AlignModel(step_config())
    model.build()
    variables = model.trainable_variables
    for v, w in zip(variables, start):
        v.assign(w)
    inputs = global_batch()
    losses = [reference_step(model, inputs, NUM_WORKERS) for _ in range(STEPS)]
    diff = max(float(np.max(np.abs(v.numpy() - w))) for v, w in zip(variables, weights[0]))
    assert diff < 1e-5, f"multi-worker weights differ from the single-process steps by {diff}"
    moved = max(float(np.max(np.abs(v.numpy() - w))) for v, w in zip(variables, start))
    assert moved > 1e-3
    # The logged loss is the epoch mean of the global-batch loss.
    np.testing.assert_allclose(results[0]["loss"][-1], np.mean(losses), rtol=1e-5)


if __name__ == "__main__":
    worker_main(sys.argv[1])
