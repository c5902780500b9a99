"""The generated shapes x colours set: classes, sizes, captions, encodings, files that
align_tf.data reads, and the digits set."""

from __future__ import annotations

import io

import numpy as np
import pytest

from align_tf.data import synthetic


# Area of each shape for size 1 (side of a square or triangle; diameter of a circle or star,
# whose inner points sit at 0.42 of the outer radius).
AREA_PER_SQUARED_SIZE = {"square": 1.0, "circle": np.pi / 4, "triangle": np.sqrt(3) / 4,
                         "star": 5 * 0.5 * 0.5 * 0.42 * np.sin(np.pi / 5)}


def shape_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of the shape: far from the (light, almost grey) background in saturation."""
    image = image.astype(np.int32)
    return (image.max(axis=2) - image.min(axis=2)) > 60


def test_at_least_24_classes_of_the_named_shapes_and_colours():
    names = synthetic.class_names()
    assert len(names) == len(set(names)) >= 24
    for shape in ("circle", "square", "triangle", "star"):
        for colour in ("red", "green", "blue", "yellow", "purple", "orange"):
            assert f"{colour} {shape}" in names


def test_examples_are_deterministic_and_cover_every_class():
    images, captions, labels = synthetic.generate(240, seed=3, image_size=64)
    again = synthetic.generate(240, seed=3, image_size=64)
    np.testing.assert_array_equal(images, again[0])
    assert captions == again[1] and labels == again[2]
    assert images.shape == (240, 64, 64, 3) and images.dtype == np.uint8
    assert set(labels) == set(synthetic.class_names())
    assert not np.array_equal(images, synthetic.generate(240, seed=4, image_size=64)[0])


@pytest.mark.parametrize("colour", list(synthetic.COLOURS))
def test_shape_colour_size_and_background(colour):
    rng = np.random.default_rng(11)
    for shape in synthetic.SHAPES:
        for _ in range(5):
            image = synthetic.draw_shape(rng, colour, shape, image_size=96)
            mask = shape_mask(image)
            # The size from the drawn area: a square's side, a circle's or star's diameter, an
            # (equilateral) triangle's side must be 20-60% of the image side.
            size = np.sqrt(mask.sum() / AREA_PER_SQUARED_SIZE[shape]) / 96
            assert 0.18 <= size <= 0.62, (shape, size)
            fill = image[mask].astype(float).mean(axis=0)
            nearest = min(synthetic.COLOURS, key=lambda c: np.abs(fill - synthetic.COLOURS[c]).sum())
            assert nearest == colour, (shape, fill)
            # Light tones only (edge pixels blend with the shape: take the typical pixel).
            assert np.median(image[~mask], axis=0).min() >= 185
    # The shape is not always in the same place.
    centres = [np.argwhere(shape_mask(synthetic.draw_shape(rng, colour, "circle", 64))).mean(0)
               for _ in range(8)]
    assert np.ptp(np.array(centres), axis=0).max() > 10


def test_captions_name_the_colour_and_a_word_for_the_shape():
    rng = np.random.default_rng(0)
    captions = set()
    for _ in range(300):
        example = synthetic.make_example(rng, image_size=32)
        assert example.class_name == f"{example.colour} {example.shape}"
        assert example.colour in example.caption
        assert any(word in example.caption for word in synthetic.SHAPE_WORDS[example.shape])
        captions.add(example.caption)
    assert len(captions) > 100  # templates x paraphrases, not one fixed string
    assert any(c.startswith("a photo of") for c in captions)
    assert any(" an orange " in f" {c} " for c in captions)  # the article follows the word


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_encoded_examples_decode_to_the_drawn_image(image_format):
    from PIL import Image

    example = synthetic.make_example(np.random.default_rng(5), image_size=64, image_format=image_format)
    assert isinstance(example.image, bytes)
    decoded = np.asarray(Image.open(io.BytesIO(example.image)).convert("RGB"))
    reference = synthetic.make_example(np.random.default_rng(5), image_size=64)
    error = np.abs(decoded.astype(int) - reference.image.astype(int)).mean()
    assert error == 0 if image_format == "png" else error < 5, error
    assert Image.open(io.BytesIO(example.image)).format == image_format.upper()


def test_written_demo_set_is_read_by_align_tf_data(tmp_path):
    from PIL import Image

    from align_tf.data.pipelines import read_caption_table

    table = synthetic.write_demo_set(str(tmp_path), count=12, seed=2, image_size=40, image_format="png")
    pairs = read_caption_table(table)  # the TSV reader behind `--data captions.tsv`
    assert len(pairs) == 12
    classes = [line.split("\t")[1] for line in
               open(tmp_path / "classes.tsv", encoding="utf-8").read().splitlines()]
    for (path, caption), class_name in zip(pairs, classes):
        assert Image.open(path).size == (40, 40)
        colour, shape = class_name.split()
        assert colour in caption and class_name in synthetic.class_names()


def test_digits_split_is_fixed_stratified_and_captioned():
    from align_tf.training.inputs import DIGIT_WORDS, digits_pairs

    train, test = digits_pairs("train", image_size=32), digits_pairs("test", image_size=32)
    assert len(train) + len(test) == 1797
    assert 0.2 < len(test) / 1797 < 0.3
    assert set(test.labels) == set(test.class_names) == {f"the digit {w}" for w in DIGIT_WORDS}
    assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == np.uint8
    assert any("seven" in c for c in train.captions)
    np.testing.assert_array_equal(digits_pairs("test", image_size=32).images, test.images)
    # No image is in both splits.
    train_keys = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_keys for img in test.images)
