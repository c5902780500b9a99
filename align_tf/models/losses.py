"""ALIGN's contrastive loss: label-smoothed cross-entropy in both directions, averaged."""

from __future__ import annotations

from keras import ops


def smoothed_cross_entropy(logits, labels, label_smoothing: float = 0.1):
    """Mean cross-entropy of `logits` [R, C] against integer `labels` [R], with smoothing as torch's
    `cross_entropy(label_smoothing=...)`: target = (1 - s) * one_hot + s / C."""
    logits = ops.cast(logits, "float32")
    num_classes = ops.shape(logits)[-1]
    log_probs = ops.log_softmax(logits, axis=-1)
    targets = ops.one_hot(labels, num_classes, dtype="float32")
    targets = targets * (1.0 - label_smoothing) + label_smoothing / ops.cast(num_classes, "float32")
    return ops.mean(-ops.sum(targets * log_probs, axis=-1))


def align_loss(logits_per_text, label_smoothing: float = 0.1):
    """The reference loss on one batch: mean of text->image and image->text cross-entropy."""
    labels = ops.arange(ops.shape(logits_per_text)[0], dtype="int32")
    caption_loss = smoothed_cross_entropy(logits_per_text, labels, label_smoothing)
    image_loss = smoothed_cross_entropy(ops.transpose(logits_per_text), labels, label_smoothing)
    return (caption_loss + image_loss) / 2.0


def local_contrastive_loss(local_text, local_image, global_text, global_image, temperature,
                           offset, label_smoothing: float = 0.1):
    """One replica's share of the global-batch loss.

    The replica's own rows (local texts against all images, local images against all texts)
    with labels `offset + arange(local)`. Averaged over replicas this equals `align_loss` on
    the global batch, so the caller divides by the number of replicas before summing gradients.
    """
    local_n = ops.shape(local_text)[0]
    labels = offset + ops.arange(local_n, dtype="int32")
    text_to_image = ops.matmul(local_text, ops.transpose(global_image)) / temperature
    image_to_text = ops.matmul(local_image, ops.transpose(global_text)) / temperature
    caption_loss = smoothed_cross_entropy(text_to_image, labels, label_smoothing)
    image_loss = smoothed_cross_entropy(image_to_text, labels, label_smoothing)
    return (caption_loss + image_loss) / 2.0, text_to_image, image_to_text, labels
