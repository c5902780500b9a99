"""Held-out zero-shot accuracy for the in-memory tasks (the demo shapes, the digits): embed each
class name with the task's prompt, embed fresh images, count top-1 hits."""

from __future__ import annotations

import numpy as np

PROMPT = "a photo of a {}."
DIGITS_PROMPT = "a photo of {}."  # digit class names already read "the digit seven"


def zero_shot_predictions(model, processor, data, template: str | None = None,
                          batch_size: int = 64) -> list[str]:
    """The top-1 class name for each of `data.images` (uint8, already at the model's input
    size) among `data.class_names`, prompted with `template`."""
    from align_tf.applications.zero_shot import ZeroShotClassifier

    if template is None:
        template = DIGITS_PROMPT if data.class_names[0].startswith("the ") else PROMPT
    classifier = ZeroShotClassifier(model, processor, data.class_names, templates=[template],
                                    batch_size=batch_size)
    pixel_values = np.concatenate([
        np.asarray(processor.image_processor(list(data.images[i:i + batch_size])))
        for i in range(0, len(data.images), batch_size)])
    return [data.class_names[i] for i in classifier.logits(pixel_values).argmax(axis=1)]


def zero_shot_accuracy(model, processor, data, template: str | None = None,
                       batch_size: int = 64) -> float:
    """Top-1 accuracy of zero-shot classification over `data.class_names` (truth: `data.labels`)."""
    predicted = zero_shot_predictions(model, processor, data, template, batch_size)
    return float(np.mean([p == t for p, t in zip(predicted, data.labels)]))
