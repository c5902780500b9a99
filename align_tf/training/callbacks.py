"""Callbacks of the training recipe: exact resume after preemption, periodic `save_pretrained`
checkpoints, and a throughput clock."""

from __future__ import annotations

import json
import os
import shutil
import time

import keras
import numpy as np

BACKUP_METADATA = "training_metadata.json"
RNG_STATE_NAME = "rng_state.npz"


def random_state_variables(model) -> list:
    """Variables that are state but not weights: the seed generators behind dropout and
    drop-connect. `save_weights` leaves them out; an exact resume needs them."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def save_pretrained(model, folder: str, processor=None, dtype: str = "float32") -> str:
    """`model.save_pretrained` for a model being trained: Keras writes a compiled model's
    optimizer state into its weights file, which `from_pretrained` (strict) refuses, so the
    weights go through an uncompiled copy of the model. `dtype="float16"` stores them at half
    the size (they load back into float32)."""
    if getattr(model, "optimizer", None) is None and dtype == "float32":
        return model.save_pretrained(folder, processor=processor)
    copy = type(model)(model.config, label_smoothing=model.label_smoothing,
                       min_temperature=model.min_temperature, dtype=dtype)
    copy.build()
    copy.set_weights(model.get_weights())
    copy.source_folder = getattr(model, "source_folder", None)
    return copy.save_pretrained(folder, processor=processor)


class AlignBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (weights, optimizer state, epoch), plus the dropout seed
    generators' state, so that a resumed run ends with the same weights as an uninterrupted one.

    Keras resumes at epoch granularity: the recipe makes an epoch a checkpoint interval
    (`steps_per_epoch` = save interval) and skips the data already seen (`initial_epoch`).
    """

    def __init__(self, backup_dir: str, **kwargs):
        super().__init__(backup_dir, save_freq="epoch", **kwargs)
        self._rng_path = os.path.join(backup_dir, RNG_STATE_NAME)

    @staticmethod
    def initial_epoch(backup_dir: str) -> int:
        """The epoch a run with this backup folder will resume at (0 for a fresh run)."""
        path = os.path.join(backup_dir, BACKUP_METADATA)
        if not os.path.isfile(path):
            return 0
        with open(path, encoding="utf-8") as f:
            return int(json.load(f).get("epoch", 0))

    def _load_model(self):
        super()._load_model()
        if os.path.isfile(self._rng_path) and os.path.isfile(self._weights_path):
            states = np.load(self._rng_path)
            variables = random_state_variables(self.model)
            if len(states.files) == len(variables):
                for i, variable in enumerate(variables):
                    variable.assign(states[f"arr_{i}"])

    def _save_model(self):
        super()._save_model()
        states = [np.asarray(keras.ops.convert_to_numpy(v)) for v in random_state_variables(self.model)]
        tmp = self._rng_path + ".tmp.npz"
        np.savez(tmp, *states)
        os.replace(tmp, self._rng_path)


class SavePretrainedCheckpoints(keras.callbacks.Callback):
    """Every `every_epochs` epochs (epochs are checkpoint intervals in the recipe), write
    `folder/step-N/` with `model.save_pretrained(..., processor=processor)`; keep the newest
    `keep` of them."""

    def __init__(self, folder: str, processor=None, steps_per_epoch: int = 1, every_epochs: int = 1,
                 keep: int = 3):
        super().__init__()
        self.folder = folder
        self.processor = processor
        self.steps_per_epoch = steps_per_epoch
        self.every_epochs = max(1, int(every_epochs))
        self.keep = keep
        self.saved: list[str] = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs:
            return
        path = os.path.join(self.folder, f"step-{(epoch + 1) * self.steps_per_epoch}")
        save_pretrained(self.model, path, self.processor)
        self.saved.append(path)
        while self.keep and len(self.saved) > self.keep:
            shutil.rmtree(self.saved.pop(0), ignore_errors=True)


class ThroughputClock(keras.callbacks.Callback):
    """Wall time of training, and of the steps after the first (which includes tracing)."""

    def __init__(self):
        super().__init__()
        self.start = self.after_first = self.end = None
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.after_first is None:
            self.after_first = time.perf_counter()

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self.end or time.perf_counter()) - (self.start or time.perf_counter())

    def steps_per_second(self) -> float | None:
        """Steady-state rate: the steps after the first, over their time."""
        if self.after_first is None or self.steps < 2:
            return None
        return (self.steps - 1) / max((self.end or time.perf_counter()) - self.after_first, 1e-9)
