"""`align-tf train` killed mid-run and started again with the same command resumes from its
backup and ends with the same weights as an uninterrupted run; the run's outputs (weights that
`from_pretrained` loads, periodic checkpoints, TensorBoard logs, the summary) are there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support import REPO_ROOT, child_pythonpath

REPO = REPO_ROOT
CRASH_EXIT_CODE = 17
CRASH_AT_STEP = 3  # mid-way through the second checkpoint interval


def tiny_config_file(folder) -> str:
    """A tiny model on the real vocabulary (the CLI's tokenizer is bert-base-uncased)."""
    from support import tiny_align_config, tiny_text_config

    config = tiny_align_config(text_config=tiny_text_config(vocab_size=30522))
    config.vision_config.image_size = 32
    path = os.path.join(folder, "tiny_config.json")
    config.to_json_file(path)
    return path


def train_args(config_path: str, output: str) -> list[str]:
    # Dropout and drop-connect stay on: their random state must be restored too.
    return ["train", "--data", "demo:48", "--model", config_path, "--steps", "6",
            "--save-every", "2", "--global-batch-size", "8", "--learning-rate", "1e-2",
            "--warmup-steps", "2", "--eval-count", "24", "--keep-checkpoints", "1",
            "--quiet", "--output", output]


def _env():
    return dict(os.environ, PYTHONPATH=child_pythonpath(__file__),
                CUDA_VISIBLE_DEVICES="")


def crash_main(step: int, argv: list[str]) -> None:
    """The CLI's own handler, with a callback that kills the process after `step` steps
    (os._exit: no cleanup, like a preempted machine)."""
    import keras

    from align_tf.cli import build_parser
    from align_tf.cli.train import run_train

    class Preempt(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            Preempt.seen += 1
            if Preempt.seen == step:
                os._exit(CRASH_EXIT_CODE)

    run_train(build_parser().parse_args(argv), extra_callbacks=[Preempt()])


def _weights(folder):
    from align_tf.models.align import AlignModel

    return [np.array(w.numpy()) for w in AlignModel.from_pretrained(folder).weights]


@pytest.mark.multiprocess
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    config_path = tiny_config_file(str(tmp_path))
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    cli = [sys.executable, "-m", "align_tf.cli"]
    # The uninterrupted run and the run that gets killed go side by side.
    uninterrupted = subprocess.Popen(cli + train_args(config_path, straight), env=_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    crashed = subprocess.run([sys.executable, __file__, str(CRASH_AT_STEP), "--"]
                             + train_args(config_path, resumed), env=_env(),
                             capture_output=True, text=True, timeout=400)
    try:
        out, err = uninterrupted.communicate(timeout=400)
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
    assert uninterrupted.returncode == 0, err[-3000:]
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-3000:]
    backup = os.path.join(resumed, "backup")
    with open(os.path.join(backup, "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 1  # the backup after steps 1-2; step 3 was lost
    assert not os.path.exists(os.path.join(resumed, "model.weights.h5"))

    again = subprocess.run(cli + train_args(config_path, resumed), env=_env(),
                           capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed at step 2" in again.stdout
    assert not os.path.exists(backup)  # removed once the run completes

    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    # What a run leaves behind.
    assert "examples/s" in out and "weights:" in out
    with open(os.path.join(straight, "training_summary.json")) as f:
        summary = json.load(f)["summary"]
    assert summary["steps"] == 6 and summary["resumed_from_step"] == 0
    assert summary["zero_shot_classes"] == 24
    assert sorted(os.listdir(os.path.join(straight, "checkpoints"))) == ["step-6"]  # keep 1
    from align_tf.models.align import AlignModel

    AlignModel.from_pretrained(os.path.join(straight, "checkpoints", "step-6"))
    events = [f for _, _, files in os.walk(os.path.join(straight, "logs")) for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)


if __name__ == "__main__":
    separator = sys.argv.index("--")
    crash_main(int(sys.argv[1]), sys.argv[separator + 1:])
