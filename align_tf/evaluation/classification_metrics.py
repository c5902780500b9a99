"""Classification scores from logits: top-k accuracy, per-class accuracy, confusion matrix (+PNG)."""

from __future__ import annotations

import numpy as np
from align_tf.errors import ConfigError


def classification_metrics(logits, labels, class_names, ks=(1, 5)) -> dict:
    """`logits` [N, C], `labels` [N] ints -> {"top1", "top5", "per_class", "mean_per_class",
    "confusion_matrix" (rows: true class, columns: predicted), "num_images"}; accuracies in
    percent. top-k with k >= C is 100 by definition and reported as such."""
    logits = np.asarray(logits)
    labels = np.asarray(labels, np.int64)
    n, c = logits.shape
    if labels.shape != (n,):
        raise ConfigError(f"labels: expected shape ({n},), got {labels.shape}")
    # Rank of the true class: how many classes score strictly higher.
    true_scores = logits[np.arange(n), labels]
    ranks = (logits > true_scores[:, None]).sum(axis=1)
    result = {f"top{k}": float(100.0 * np.mean(ranks < k)) for k in ks}
    predictions = logits.argmax(axis=1)
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        total = confusion[i].sum()
        per_class[name] = float(100.0 * confusion[i, i] / total) if total else None
    present = [v for v in per_class.values() if v is not None]
    result.update(per_class=per_class, mean_per_class=float(np.mean(present)),
                  confusion_matrix=confusion.tolist(), num_images=int(n))
    return result


def save_confusion_matrix_png(confusion, class_names, path: str, title: str = "") -> str:
    """Row-normalised confusion matrix as a PNG heat map (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    c = len(class_names)
    size = min(4 + 0.35 * c, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if c <= 60:
        ax.set_xticks(range(c), labels=class_names, rotation=90)
        ax.set_yticks(range(c), labels=class_names)
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center",
                            color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "zero-shot confusion matrix (rows normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
