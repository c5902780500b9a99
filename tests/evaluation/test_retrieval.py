"""Retrieval metrics against a brute-force count and a hand-worked example; dataset readers."""

import json

import numpy as np
import pytest

from align_tf.evaluation.retrieval import read_retrieval_dataset, retrieval_metrics


def brute_force_ranks(image_embeds, text_embeds, text_to_image):
    """Sort every query's candidates and find the right answer(s): no shortcuts."""
    sims = text_embeds @ image_embeds.T
    text_ranks = []
    for j in range(len(text_embeds)):
        order = list(np.argsort(-sims[j], kind="stable"))
        text_ranks.append(order.index(text_to_image[j]) + 1)
    image_ranks = []
    for i in range(len(image_embeds)):
        captions = [j for j in range(len(text_embeds)) if text_to_image[j] == i]
        if not captions:
            continue
        order = list(np.argsort(-sims[:, i], kind="stable"))
        image_ranks.append(min(order.index(j) for j in captions) + 1)
    return np.array(image_ranks), np.array(text_ranks)


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("chunk_size", [7, 4096])
def test_metrics_equal_brute_force_count(chunk_size):
    rng = np.random.default_rng(0)
    n_images, dim = 60, 16
    captions_per_image = rng.integers(0, 6, n_images)   # 0..5 captions; some images have none
    text_to_image = np.repeat(np.arange(n_images), captions_per_image)
    images = normalized(rng.normal(size=(n_images, dim)).astype(np.float32))
    # Captions near their image, with enough noise that many are not ranked first.
    texts = normalized(images[text_to_image] + 0.9 * rng.normal(size=(len(text_to_image), dim))
                       .astype(np.float32))

    metrics = retrieval_metrics(images, texts, text_to_image, chunk_size=chunk_size)
    image_ranks, text_ranks = brute_force_ranks(images, texts, text_to_image)
    assert metrics["image_to_text"]["queries"] == int((captions_per_image > 0).sum())
    assert metrics["text_to_image"]["queries"] == len(text_to_image)
    for direction, ranks in (("image_to_text", image_ranks), ("text_to_image", text_ranks)):
        for k in (1, 5, 10):
            hits = sum(1 for r in ranks if r <= k)
            assert metrics[direction][f"R@{k}"] == pytest.approx(100 * hits / len(ranks))
        assert metrics[direction]["mean_rank"] == pytest.approx(ranks.mean())
        assert metrics[direction]["median_rank"] == pytest.approx(np.median(ranks))
    # The case is not degenerate: neither perfect nor hopeless.
    assert 0 < metrics["text_to_image"]["R@1"] < 100
    assert 0 < metrics["image_to_text"]["R@1"] < metrics["image_to_text"]["R@10"]


def test_hand_worked_three_images():
    images = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    texts = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0], [0.8, -0.6]], np.float32)
    text_to_image = [0, 0, 1, 2, 2]
    # By hand, text->image (scores against I0, I1, I2):
    #   t0 (1, 0, -1) right I0: rank 1       t1 (0, 1, 0) right I0: I1 higher, I2 tied -> rank 2
    #   t2 (.6, .8, -.6) right I1: rank 1    t3 (-1, 0, 1) right I2: rank 1
    #   t4 (.8, -.6, -.8) right I2: I0 and I1 higher -> rank 3
    # image->text (best of its own captions): I0 t0=1 -> 1; I1 t2=.8 < t1=1 -> 2; I2 t3=1 -> 1
    m = retrieval_metrics(images, texts, text_to_image)
    assert m["text_to_image"] == {"R@1": 60.0, "R@5": 100.0, "R@10": 100.0, "mean_rank": 1.6,
                                  "median_rank": 1.0, "queries": 5}
    assert m["image_to_text"]["R@1"] == pytest.approx(200 / 3)
    assert m["image_to_text"]["R@5"] == 100.0
    assert m["image_to_text"]["mean_rank"] == pytest.approx(4 / 3)
    assert m["image_to_text"]["median_rank"] == 1.0
    assert m["rsum"] == pytest.approx(60 + 100 + 100 + 200 / 3 + 100 + 100, abs=1e-3)


def test_metrics_reject_bad_mapping():
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_metrics(np.eye(2), np.eye(2), [0, 2])
    with pytest.raises(ValueError, match="one image per caption"):
        retrieval_metrics(np.eye(2), np.eye(2), [0])


def test_read_karpathy_json_and_tsv(tmp_path):
    (tmp_path / "val2014").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "val2014" / name).write_bytes(b"x")
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test",
         "sentences": [{"raw": "a cat"}, {"raw": "a small cat"}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "train",
         "sentences": [{"raw": "a dog"}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "test",
         "sentences": [{"raw": "a bird"}]},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    ds = read_retrieval_dataset(str(path), str(tmp_path), "test")
    assert ds.image_paths == [str(tmp_path / "val2014" / n) for n in ("a.jpg", "c.jpg")]
    assert ds.captions == ["a cat", "a small cat", "a bird"]
    assert list(ds.text_to_image) == [0, 0, 1]
    with pytest.raises(ValueError, match="no images in split 'val'"):
        read_retrieval_dataset(str(path), str(tmp_path), "val")

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("image\tcaption\nval2014/a.jpg\ta cat\nval2014/b.jpg\ta dog\n"
                   "val2014/a.jpg\tanother cat\n")
    ds = read_retrieval_dataset(str(tsv))
    assert ds.image_paths == [str(tmp_path / "val2014/a.jpg"), str(tmp_path / "val2014/b.jpg")]
    assert ds.captions == ["a cat", "a dog", "another cat"]
    assert list(ds.text_to_image) == [0, 1, 0]
