"""Image-text retrieval in the Flickr30K / MSCOCO protocol: metrics, dataset readers, evaluation.

Protocol: every image has one or more captions. Image->text: an image's query is a hit at k if
any of its captions is among the k most similar texts. Text->image: every caption is a query
with exactly one right image. Ranks are 1-based; an item tied with the right answer does not
push it down (rank = 1 + number of items scoring strictly higher).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from align_tf.errors import ConfigError

DEFAULT_KS = (1, 5, 10)


def retrieval_metrics(image_embeds, text_embeds, text_to_image, ks=DEFAULT_KS,
                      chunk_size: int = 1024) -> dict:
    """R@k both ways (in percent), mean and median rank, and rsum (the sum of all R@k).

    `image_embeds` [N, D] and `text_embeds` [M, D] are compared by dot product (pass
    L2-normalised embeddings for cosine similarity); `text_to_image` [M] gives each caption's
    image. Images without any caption are distractors for text->image and no query of their own.
    Works in chunks of `chunk_size` queries, so memory is O(chunk_size * max(N, M)).
    """
    image_embeds = np.asarray(image_embeds, np.float32)
    text_embeds = np.asarray(text_embeds, np.float32)
    text_to_image = np.asarray(text_to_image, np.int64)
    n_images, n_texts = len(image_embeds), len(text_embeds)
    if text_to_image.shape != (n_texts,):
        raise ConfigError(f"text_to_image: expected shape ({n_texts},) (one image per caption), "
                         f"got {text_to_image.shape}")
    if n_texts and (text_to_image.min() < 0 or text_to_image.max() >= n_images):
        raise ConfigError(f"text_to_image: image indices must lie in [0, {n_images}), got "
                         f"[{text_to_image.min()}, {text_to_image.max()}]")
    if image_embeds.shape[1:] != text_embeds.shape[1:]:
        raise ConfigError(f"image_embeds {image_embeds.shape} and text_embeds {text_embeds.shape}: "
                         "embedding widths differ")

    # Each direction is chunked along its own query axis, so the right answer's score and the
    # scores it is compared against come out of the same matrix product (no rounding skew).
    text_ranks = np.empty(n_texts, np.int64)
    for start in range(0, n_texts, chunk_size):
        stop = min(start + chunk_size, n_texts)
        scores = text_embeds[start:stop] @ image_embeds.T                  # [c, N]
        right = scores[np.arange(stop - start), text_to_image[start:stop]]
        text_ranks[start:stop] = 1 + (scores > right[:, None]).sum(axis=1)

    captioned = np.unique(text_to_image)
    own = [[] for _ in range(n_images)]
    for text, image in enumerate(text_to_image):
        own[image].append(text)
    image_ranks = np.empty(len(captioned), np.int64)
    for start in range(0, len(captioned), chunk_size):
        images = captioned[start:start + chunk_size]
        scores = image_embeds[images] @ text_embeds.T                      # [c, M]
        best = np.array([scores[row, own[image]].max() for row, image in enumerate(images)])
        image_ranks[start:start + len(images)] = 1 + (scores > best[:, None]).sum(axis=1)

    result = {"image_to_text": rank_summary(image_ranks, ks),
              "text_to_image": rank_summary(text_ranks, ks),
              "num_images": int(n_images), "num_texts": int(n_texts)}
    result["rsum"] = round(sum(result[d][f"R@{k}"] for d in ("image_to_text", "text_to_image")
                               for k in ks), 4)
    return result


def rank_summary(ranks, ks=DEFAULT_KS) -> dict:
    """R@k in percent, mean and median of 1-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ConfigError("rank_summary: no queries (every caption list is empty?)")
    summary = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    summary["mean_rank"] = float(np.mean(ranks))
    summary["median_rank"] = float(np.median(ranks))
    summary["queries"] = int(ranks.size)
    return summary


# -- datasets -----------------------------------------------------------------------------

class RetrievalDataset:
    """Images (paths) and captions, with `text_to_image[j]` = index of caption j's image."""

    def __init__(self, image_paths, captions, text_to_image):
        self.image_paths = list(image_paths)
        self.captions = list(captions)
        self.text_to_image = np.asarray(text_to_image, np.int64)

    @classmethod
    def from_pairs(cls, pairs):
        """(image path, caption) pairs; pairs naming the same image give it several captions."""
        index_of, image_paths, captions, text_to_image = {}, [], [], []
        for image, caption in pairs:
            if image not in index_of:
                index_of[image] = len(image_paths)
                image_paths.append(image)
            captions.append(caption)
            text_to_image.append(index_of[image])
        return cls(image_paths, captions, text_to_image)

    def __repr__(self):
        return (f"RetrievalDataset({len(self.image_paths)} images, {len(self.captions)} "
                "captions)")


def read_retrieval_dataset(data: str, images_dir: str | None = None,
                           split: str = "test") -> RetrievalDataset:
    """A Karpathy split file (`dataset_coco.json`, `dataset_flickr30k.json`; images under
    `images_dir/filepath/filename`) or a TSV / CSV of image path + caption rows (relative paths
    from `images_dir`, else the table's folder). The file readers are `align_tf.data`'s."""
    from align_tf.data.pipelines import read_caption_table, read_karpathy

    if data.endswith(".json"):
        if images_dir is None:
            raise ConfigError(f"{data}: a Karpathy JSON needs the image folder (--images DIR)")
        images = read_karpathy(data, images_dir, split)
        if not images:
            raise ConfigError(f"{data}: no images in split {split!r}")
        return RetrievalDataset.from_pairs(
            (image.path, caption) for image in images for caption in image.captions)
    pairs = read_caption_table(data, images_dir)
    if not pairs:
        raise ConfigError(f"{data}: no image/caption rows")
    return RetrievalDataset.from_pairs(pairs)


# -- embeddings, cached -------------------------------------------------------------------

def cached_embeddings(cache_dir: str | None, kind: str, key_parts, compute):
    """`compute()` once, kept at `cache_dir/<kind>-<hash of key_parts>.npy` for the next run."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256(json.dumps(list(key_parts), sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{kind}-{digest}.npy")
    if os.path.exists(path):
        return np.load(path)
    embeds = compute()
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, embeds)
    os.replace(tmp, path)
    return embeds


def evaluate_retrieval(embedder, dataset: RetrievalDataset, cache_dir: str | None = None,
                       model_id: str = "", progress: bool = True, ks=DEFAULT_KS) -> dict:
    """Embed the dataset's images and captions (batched, cached by model id + inputs) and score."""
    images = cached_embeddings(
        cache_dir, "images", [model_id, dataset.image_paths],
        lambda: embedder.embed_images(dataset.image_paths, progress=progress, desc="images"))
    texts = cached_embeddings(
        cache_dir, "texts", [model_id, dataset.captions],
        lambda: embedder.embed_texts(dataset.captions, progress=progress, desc="captions"))
    return retrieval_metrics(images, texts, dataset.text_to_image, ks=ks)
