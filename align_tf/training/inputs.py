"""What `align-tf train --data` reads: the generated demo set, scikit-learn's digits, or files
(TFRecord shards, a TSV + image folder, Karpathy JSON) through `align_tf.data`, as endless,
shuffled, batched tf.data pipelines that can start at any example (for an exact resume)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from align_tf.errors import ConfigError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_CAPTIONS = (
    "a photo of the digit {}",
    "a photo of the digit {}.",
    "the digit {}",
    "a handwritten {}",
    "the number {}",
    "a picture of a handwritten digit {}",
    "a blurry handwritten {}",
    "digit {}",
)
DIGITS_TEST_FRACTION = 0.25
DEMO_DEFAULT_COUNT = 8000


@dataclass
class PairData:
    """Image-caption pairs held in memory, with class names for zero-shot evaluation."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    labels: list[str]  # the class name of every image
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def demo_pairs(count: int = DEMO_DEFAULT_COUNT, seed: int = 0, image_size: int = 64) -> PairData:
    """`count` generated shapes x colours pairs (align_tf.data.synthetic)."""
    from align_tf.data import synthetic

    images, captions, labels = synthetic.generate(count, seed=seed, image_size=image_size)
    return PairData(images, captions, labels, synthetic.class_names())


def digits_pairs(split: str = "train", image_size: int = 64, seed: int = 0) -> PairData:
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled (bilinear) to `image_size`, dark
    ink on white, with captions such as "a photo of the digit seven". A fixed, stratified 75/25
    split: `split` is "train" or "test"; captions are drawn with `seed`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    digits = load_digits()
    order = np.random.default_rng(1234).permutation(len(digits.target))  # the split is fixed
    test = np.zeros(len(order), bool)
    for digit in range(10):
        members = order[digits.target[order] == digit]
        test[members[: int(round(len(members) * DIGITS_TEST_FRACTION))]] = True
    chosen = order[test[order] == (split == "test")]
    rng = np.random.default_rng(seed)
    images, captions, labels = [], [], []
    for index in chosen:
        grey = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)
        big = Image.fromarray(grey).resize((image_size, image_size), Image.Resampling.BILINEAR)
        images.append(np.repeat(np.asarray(big)[:, :, None], 3, axis=2))
        word = DIGIT_WORDS[digits.target[index]]
        captions.append(DIGIT_CAPTIONS[rng.integers(len(DIGIT_CAPTIONS))].format(word))
        labels.append(f"the digit {word}")
    return PairData(np.stack(images), captions, labels, [f"the digit {w}" for w in DIGIT_WORDS])


def parse_data_spec(spec: str) -> tuple[str, object]:
    """"demo" or "demo:COUNT" -> ("demo", count); "digits" -> ("digits", None); anything else
    is a path or glob for align_tf.data -> ("files", spec)."""
    name, _, arg = spec.partition(":")
    if name == "demo":
        return "demo", int(arg) if arg else DEMO_DEFAULT_COUNT
    if name == "digits" and not arg:
        return "digits", None
    return "files", spec


def pairs_dataset(data: PairData, processor, global_batch_size: int, seed: int = 0,
                  skip_examples: int = 0, augment: bool = False) -> tf.data.Dataset:
    """Endless batches of model inputs from in-memory pairs: reshuffled every pass (seeded, so
    the order is reproducible), starting after `skip_examples` examples, `augment` = the image
    processor's training crop and flip."""
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    count = len(data)
    # (position in the stream, example index): the position seeds the augmentation, so a
    # resumed run draws the same crops and flips as an uninterrupted one.
    indices = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
    stream = indices.repeat().enumerate().skip(skip_examples)
    images, captions = tf.constant(data.images), tf.constant(data.captions)

    def load(position, index):
        image = tf.gather(images, index)
        if augment:
            pixels = image_processor.preprocess_image(
                image, training=True, seed=tf.stack([tf.cast(seed, tf.int64), position]))
        else:
            pixels = image_processor.preprocess_image(image)
        return pixels, tf.gather(captions, index)

    def tokenize(pixels, texts):
        return {**tokenizer(texts), "pixel_values": pixels}

    dataset = stream.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(global_batch_size, drop_remainder=True)
    return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def files_dataset(spec: str, processor, global_batch_size: int, seed: int = 0,
                  skip_batches: int = 0, image_root: str | None = None):
    """TFRecord shards, a TSV / CSV + image folder, or Karpathy JSON (align_tf.data.pipelines),
    repeated, from batch `skip_batches` on. Returns (dataset, a Keras callback that reports
    records skipped because their image did not decode)."""
    from align_tf.data import pipelines

    one_pass = pipelines.training_dataset(spec, processor, global_batch_size, seed=seed,
                                          deterministic=True, image_root=image_root)
    report = pipelines.SkippedRecordsCallback(one_pass.skip_counter)
    return one_pass.repeat().skip(skip_batches), report
