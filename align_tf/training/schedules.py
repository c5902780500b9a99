"""Learning-rate schedule of ALIGN's recipe: linear warmup to the peak, then linear decay to 0."""

from __future__ import annotations

import keras
from keras import ops
from align_tf.errors import ConfigError


@keras.saving.register_keras_serializable(package="align_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * (step + 1) / warmup_steps` for the first `warmup_steps` updates, then linear decay
    reaching `end_learning_rate` after `total_steps` updates (and staying there).

    `step` is the optimizer's update count (with gradient accumulation, updates, not micro-batches).
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int, total_steps: int,
                 end_learning_rate: float = 0.0):
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ConfigError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_learning_rate = float(end_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, end = self.peak_learning_rate, self.end_learning_rate
        warmup = peak * (step + 1.0) / float(max(self.warmup_steps, 1))
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        decay = peak + (end - peak) * progress
        return ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "end_learning_rate": self.end_learning_rate}
