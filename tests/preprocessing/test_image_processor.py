"""AlignImageProcessor against Hugging Face's EfficientNetImageProcessor (align-base config) and PIL."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.preprocessing.image import (
    BICUBIC,
    BILINEAR,
    AlignImageProcessor,
    ImageDecodeError,
    pil_resize_window,
)

# kakaobrain/align-base preprocessor_config.json.
ALIGN_BASE_PREPROCESSOR_CONFIG = {
    "image_processor_type": "EfficientNetImageProcessor",
    "processor_class": "AlignProcessor",
    "do_resize": True,
    "size": {"height": 346, "width": 346},
    "resample": 2,
    "do_center_crop": True,
    "crop_size": {"height": 289, "width": 289},
    "do_rescale": True,
    "rescale_factor": 0.00784313725490196,
    "rescale_offset": True,
    "do_normalize": False,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "include_top": False,
}
# The bar for the in-graph path: mean |diff| <= 0.5 grey levels, 99th percentile <= 2.
MEAN_LIMIT, P99_LIMIT = 0.5 / 127.5, 2 / 127.5


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def photos() -> dict[str, np.ndarray]:
    data = pytest.importorskip("skimage.data")
    rgba = np.concatenate([data.coffee(), np.linspace(0, 255, 600, dtype=np.uint8)[None, :, None].repeat(400, 0)], 2)
    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "camera (grey)": data.camera(),
        "coffee RGBA (alpha)": rgba,
    }


@pytest.fixture(scope="module")
def processor():
    return AlignImageProcessor.from_config(ALIGN_BASE_PREPROCESSOR_CONFIG)


@pytest.fixture(scope="module")
def hf_processor():
    transformers = pytest.importorskip("transformers")
    config = {k: v for k, v in ALIGN_BASE_PREPROCESSOR_CONFIG.items() if not k.endswith(("_type", "_class"))}
    cls = getattr(transformers, "EfficientNetImageProcessorPil", None) or transformers.EfficientNetImageProcessor
    return cls(**config)


def hf_pixels(hf_processor, pil_images) -> np.ndarray:
    # HF is given RGB images (what Image.open(...).convert("RGB") gives a user); NCHW -> NHWC.
    out = hf_processor([im.convert("RGB") for im in pil_images], return_tensors="np")["pixel_values"]
    return out.transpose(0, 2, 3, 1)


def test_defaults_are_align_base(processor):
    default = AlignImageProcessor()
    assert default.get_config() == processor.get_config()
    assert processor.crop_size == (289, 289) and processor.size == (346, 346)


def test_in_graph_pixels_match_hf_on_photos(processor, hf_processor):
    # PNG bytes decode to exactly PIL's pixels, so this measures resize + crop + rescale.
    for name, array in photos().items():
        expected = hf_pixels(hf_processor, [Image.fromarray(array)])
        got = processor.preprocess_bytes(tf.constant([encode(array)])).numpy()
        assert got.shape == expected.shape == (1, 289, 289, 3)
        diff = np.abs(got - expected)
        mean, p99 = diff.mean(), np.percentile(diff, 99)
        print(f"{name}: mean |diff| {mean * 127.5:.4f} levels, p99 {p99 * 127.5:.4f}, max {diff.max() * 127.5:.4f}")
        assert mean <= MEAN_LIMIT and p99 <= P99_LIMIT, name
        assert got.min() >= -1.0 and got.max() <= 1.0


def test_jpeg_bytes_match_hf_on_the_decoded_photo(processor, hf_processor):
    data = encode(photos()["chelsea"], "JPEG", quality=90)
    expected = hf_pixels(hf_processor, [Image.open(io.BytesIO(data))])
    diff = np.abs(processor.preprocess_bytes(tf.constant([data])).numpy() - expected)
    print(f"chelsea JPEG: mean |diff| {diff.mean() * 127.5:.4f} levels, max {diff.max() * 127.5:.4f}")
    assert diff.mean() <= MEAN_LIMIT and np.percentile(diff, 99) <= P99_LIMIT


def test_tf_resize_method_stays_within_the_bar(hf_processor):
    fast = AlignImageProcessor(resize_method="tf")
    for name, array in photos().items():
        diff = np.abs(fast(array).numpy() - hf_pixels(hf_processor, [Image.fromarray(array)]))
        print(f"{name} (resize_method='tf'): mean |diff| {diff.mean() * 127.5:.3f} levels, "
              f"p99 {np.percentile(diff, 99) * 127.5:.2f}")
        assert diff.mean() <= MEAN_LIMIT and np.percentile(diff, 99) <= P99_LIMIT, name


def test_pil_path_equals_hf_bit_for_bit(processor, hf_processor):
    images = [Image.fromarray(a) for a in photos().values()]
    np.testing.assert_array_equal(processor.preprocess_pil(images), hf_pixels(hf_processor, images))


def test_resize_equals_pillow_for_random_sizes_and_windows():
    # Pillow 13 chose the vertical pass first when the height shrinks much more; older Pillow
    # always went horizontal first, so exact equality is only claimed against Pillow >= 13.
    pil_major = int(Image.__version__.split(".")[0])
    if pil_major < 13:
        pytest.skip(f"pass order differs before Pillow 13 (have {Image.__version__})")
    rng = np.random.default_rng(0)
    resize = tf.function(pil_resize_window, reduce_retracing=True)
    for trial in range(16):
        h, w = (int(v) for v in rng.integers(2, 900, size=2))
        out_h, out_w = (346, 346) if trial % 2 else tuple(int(v) for v in rng.integers(2, 500, size=2))
        resample = BICUBIC if trial % 4 == 3 else BILINEAR
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(image).resize((out_w, out_h), resample=resample))
        top, left = int(rng.integers(0, out_h)), int(rng.integers(0, out_w))
        win = (int(rng.integers(1, out_h - top + 1)), int(rng.integers(1, out_w - left + 1)))
        got = resize(tf.constant(image), (out_h, out_w), (top, left), win, resample).numpy()
        expected = expected[top : top + win[0], left : left + win[1]]
        np.testing.assert_array_equal(got, expected, err_msg=f"{(h, w)} -> {(out_h, out_w)} filter {resample}")


def test_graph_safe_with_unknown_batch_and_in_tf_data(processor):
    blobs = [encode(a) for a in list(photos().values())[:3]]
    eager = processor.preprocess_bytes(tf.constant(blobs)).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed_ready(image_bytes):
        return processor.preprocess_bytes(image_bytes)

    np.testing.assert_array_equal(embed_ready(tf.constant(blobs)).numpy(), eager)
    assert embed_ready.get_concrete_function().structured_outputs.shape.as_list() == [None, 289, 289, 3]
    dataset = tf.data.Dataset.from_tensor_slices(blobs).map(
        lambda b: processor.preprocess_image(processor.decode_image(b))
    )
    np.testing.assert_array_equal(np.stack(list(dataset.as_numpy_iterator())), eager)


def test_training_crop_and_flip_are_seeded_windows_of_the_resize(processor):
    array = photos()["chelsea"]
    full = processor.pixel_value_table()[0][np.asarray(Image.fromarray(array).resize((346, 346), BILINEAR))]
    image = tf.constant(array)
    seen = set()
    for seed in range(8):
        a = processor.preprocess_image(image, training=True, seed=tf.constant([seed, 7])).numpy()
        b = processor.preprocess_image(image, training=True, seed=tf.constant([seed, 7])).numpy()
        np.testing.assert_array_equal(a, b)  # same seed, same augmentation
        found = None
        for flipped in (False, True):
            candidate = a[:, ::-1] if flipped else a
            for top in range(346 - 289 + 1):
                for left in range(346 - 289 + 1):
                    window = full[top : top + 289, left : left + 289]
                    if np.array_equal(window[0, :16], candidate[0, :16]) and np.array_equal(window, candidate):
                        found = (top, left, flipped)
        assert found is not None, f"seed {seed}: training output is not a crop of the resize"
        seen.add(found)
    assert len(seen) > 4 and {f[2] for f in seen} == {False, True}
    batch = processor.preprocess_bytes(tf.constant([encode(array)] * 2), training=True, seed=tf.constant([1, 2]))
    assert not np.array_equal(batch[0].numpy(), batch[1].numpy())  # each image gets its own seed


def test_python_api_takes_pil_arrays_paths_and_bytes(processor, tmp_path):
    array = photos()["astronaut"]
    path = tmp_path / "astronaut.png"
    path.write_bytes(encode(array))
    grey = photos()["camera (grey)"]
    out = processor([Image.fromarray(array), array, str(path), path, encode(array), grey, grey[:, :, None]])
    assert out.shape == (7, 289, 289, 3) and out.dtype == tf.float32
    for i in range(1, 5):
        np.testing.assert_array_equal(out[i].numpy(), out[0].numpy())
    np.testing.assert_array_equal(out[5].numpy(), out[6].numpy())
    np.testing.assert_array_equal(processor(Image.fromarray(array)).numpy()[0], out[0].numpy())


def test_sixteen_bit_grey_pil_image_is_scaled_not_clipped(processor):
    values = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    image = Image.fromarray(values)  # mode I;16
    assert image.mode.startswith("I")
    got = processor.to_uint8_rgb(image)
    np.testing.assert_array_equal(got[:, :, 0], values >> 8)


def test_python_api_errors_name_the_input(processor):
    with pytest.raises(ImageDecodeError, match=r"image 1 of 3: expected uint8 pixels, got dtype float32"):
        processor([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32), b""])
    with pytest.raises(ImageDecodeError, match=r"image 2 of 3: empty \(0 bytes\)"):
        processor([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), b""])
    with pytest.raises(ImageDecodeError, match=r"image 0 of 1: expected a PIL image.*got int"):
        processor([3])
    with pytest.raises(ImageDecodeError, match=r"cannot read 'no/such/file.png'"):
        processor("no/such/file.png")


def test_config_round_trip_and_from_pretrained(processor, tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(ALIGN_BASE_PREPROCESSOR_CONFIG))
    loaded = AlignImageProcessor.from_pretrained(str(tmp_path))
    assert loaded.get_config() == processor.get_config()
    small = AlignImageProcessor(size=(40, 40), crop_size=(32, 32), max_pixels=1000)
    small.save_pretrained(str(tmp_path / "small"))
    again = AlignImageProcessor.from_pretrained(str(tmp_path / "small"))
    assert again.crop_size == (32, 32) and again.size == (40, 40) and again.max_pixels == 1000
    assert again(np.zeros((20, 30, 3), np.uint8)).shape == (1, 32, 32, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        AlignImageProcessor.from_pretrained(str(tmp_path / "empty"))
