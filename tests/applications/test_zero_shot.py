"""Zero-shot classification: prompt ensembling by hand, caching, one class embedding per label,
the same answer as the model's own logits, metrics and the confusion-matrix PNG."""

import numpy as np
import pytest

from align_tf.applications import templates as tmpl
from align_tf.evaluation.classification_metrics import (classification_metrics,
                                                        save_confusion_matrix_png)
from align_tf.applications.embedder import Embedder
from align_tf.applications.zero_shot import ZeroShotClassifier, zero_shot_classify

DIM = 8


class CountingProcessor:
    """Texts -> one id per distinct text (first-seen order); images are [DIM] vectors."""

    def __init__(self):
        self.ids = {}
        self.texts_seen = 0

    def __call__(self, text=None, images=None):
        if text is not None:
            self.texts_seen += len(text)
            ids = [[self.ids.setdefault(t, len(self.ids))] for t in text]
            ids = np.array(ids, np.int32)
            return {"input_ids": ids, "attention_mask": np.ones_like(ids),
                    "token_type_ids": np.zeros_like(ids)}
        return {"pixel_values": np.stack([np.asarray(i, np.float32) for i in images])}


class TableModel:
    """A stand-in dual encoder: text features from a random table, image features = input."""

    temperature = 0.5

    def __init__(self, seed=0, vocab=5000):
        self.table = np.random.default_rng(seed).normal(size=(vocab, DIM)).astype(np.float32)
        self.text_calls = 0
        self.image_calls = 0

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None):
        self.text_calls += 1
        return 3.0 * self.table[np.asarray(input_ids)[:, 0]]   # unnormalised on purpose

    def get_image_features(self, pixel_values):
        self.image_calls += 1
        return np.asarray(pixel_values) * 2.0


def test_template_sets_are_data():
    assert tmpl.SINGLE_TEMPLATE == ("a photo of {}.",)
    assert len(tmpl.IMAGENET_TEMPLATES) == 80 == len(set(tmpl.IMAGENET_TEMPLATES))
    assert tmpl.resolve_templates("imagenet") == tmpl.IMAGENET_TEMPLATES
    assert tmpl.resolve_templates("a {} here") == ("a {} here",)
    with pytest.raises(ValueError, match="exactly one"):
        tmpl.resolve_templates(["no slot"])


def test_prompt_ensembling_equals_hand_computation():
    model, processor = TableModel(), CountingProcessor()
    classes = ["cat", "dog", "red circle"]
    templates = ["a photo of a {}.", "a drawing of a {}.", "{}"]
    clf = ZeroShotClassifier(model, processor, classes, templates=templates)
    images = np.random.default_rng(1).normal(size=(4, DIM)).astype(np.float32)
    logits = clf.logits(list(images))

    # By hand: normalise each prompt's embedding, average per class, normalise again.
    expected_classes = []
    for name in classes:
        vectors = []
        for template in templates:
            e = 3.0 * model.table[processor.ids[template.format(name)]]
            vectors.append(e / np.linalg.norm(e))
        mean = np.sum(vectors, axis=0) / len(templates)
        expected_classes.append(mean / np.linalg.norm(mean))
    expected_classes = np.array(expected_classes)
    unit_images = images / np.linalg.norm(images, axis=1, keepdims=True)
    expected = unit_images @ expected_classes.T / 0.5
    np.testing.assert_allclose(clf.class_embeds, expected_classes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # The ensemble is not just one of its templates.
    single = ZeroShotClassifier(model, processor, classes, templates=templates[:1])
    assert np.abs(single.class_embeds - clf.class_embeds).max() > 1e-2

    results = clf(list(images), top_k=2)
    probs = np.exp(expected - expected.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for row, result in zip(probs, results):
        assert [r["label"] for r in result] == [classes[i] for i in np.argsort(-row)[:2]]
        assert result[0]["score"] == pytest.approx(row.max(), rel=1e-5)


def test_thousand_labels_are_embedded_once_not_per_image():
    model, processor = TableModel(), CountingProcessor()
    labels = [f"class {i}" for i in range(1000)]
    clf = ZeroShotClassifier(model, processor, labels, batch_size=64)
    rng = np.random.default_rng(2)
    for _ in range(3):   # three separate calls, 30 images in all
        clf(list(rng.normal(size=(10, DIM))), top_k=5)
    assert processor.texts_seen == 1000
    assert model.text_calls == -(-1000 // 64)     # 16 batches, once
    assert model.image_calls == 3


def test_cached_classifier_matches_uncached_path():
    model, processor = TableModel(seed=3), CountingProcessor()
    labels = ["a", "b", "c", "d"]
    images = list(np.random.default_rng(4).normal(size=(6, DIM)).astype(np.float32))
    clf = ZeroShotClassifier(model, processor, labels, templates="single")
    first = clf(images)
    second = clf(images)          # class matrix from the cache now
    uncached = [zero_shot_classify([img], labels, model=model, processor=processor)[0]
                for img in images]  # a fresh classifier (fresh class embedding) per image
    assert first == second
    for a, b in zip(first, uncached):
        assert [r["label"] for r in a] == [r["label"] for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], rtol=1e-6)


def test_classification_metrics_and_confusion_png(tmp_path):
    logits = np.array([[3, 2, 1], [1, 3, 2], [1, 2, 3], [3, 1, 2], [1, 3, 2]], np.float32)
    labels = [0, 1, 2, 2, 0]
    m = classification_metrics(logits, labels, ["x", "y", "z"], ks=(1, 2))
    # predictions 0, 1, 2, 0, 1 -> right: 0, 1, 2 ; true class rank: 1, 1, 1, 2, 3
    assert m["top1"] == 60.0 and m["top2"] == 80.0
    assert m["per_class"] == {"x": 50.0, "y": 100.0, "z": 50.0}
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    path = save_confusion_matrix_png(m["confusion_matrix"], ["x", "y", "z"],
                                     str(tmp_path / "cm.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_embedder_rejects_a_bare_string():
    with pytest.raises(TypeError, match="wrap it in a list"):
        Embedder(TableModel(), CountingProcessor()).embed_texts("a cat")
