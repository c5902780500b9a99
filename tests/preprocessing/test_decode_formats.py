"""In-graph decoding of every supported format against PIL, and clear refusals of bad inputs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.preprocessing.image import AlignImageProcessor, ImageDecodeError, ImageSizeError


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, RGB or RGBA) written by hand: PIL cannot write 16-bit colour PNGs."""
    height, width = array.shape[:2]
    color_type = 0 if array.ndim == 2 else {3: 2, 4: 6}[array.shape[2]]
    rows = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def processor():
    return AlignImageProcessor()


@pytest.fixture(scope="module")
def photo():
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut()).resize((160, 120), Image.Resampling.BILINEAR)


def pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def cases(photo: Image.Image) -> dict[str, bytes]:
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    frames = [photo.convert("P"), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return {
        "JPEG 4:2:0": encode(photo, "JPEG", quality=90),
        "JPEG 4:4:4": encode(photo, "JPEG", quality=95, subsampling=0),
        "JPEG progressive": encode(photo, "JPEG", quality=85, progressive=True),
        "JPEG grey": encode(photo.convert("L"), "JPEG"),
        "PNG RGB": encode(photo, "PNG"),
        "PNG RGBA": encode(rgba, "PNG"),
        "PNG grey": encode(photo.convert("L"), "PNG"),
        "PNG grey+alpha": encode(rgba.convert("LA"), "PNG"),
        "PNG palette": encode(photo.convert("P"), "PNG"),
        "PNG palette+transparency": encode(photo.convert("P"), "PNG", transparency=0),
        "GIF": encode(photo.convert("P"), "GIF"),
        "GIF animated (first frame)": animated.getvalue(),
        "BMP 24-bit": encode(photo, "BMP"),
        "BMP 32-bit": encode(rgba, "BMP"),
        "BMP 8-bit palette": encode(photo.convert("P"), "BMP"),
        "BMP 8-bit grey": encode(photo.convert("L"), "BMP"),
    }


def test_every_format_decodes_to_pils_rgb_pixels(processor, photo):
    decode = tf.function(processor.decode_image, input_signature=[tf.TensorSpec([], tf.string)])
    for name, data in cases(photo).items():
        got = decode(tf.constant(data)).numpy()
        expected = pil_rgb(data)
        assert got.dtype == np.uint8 and got.shape == expected.shape == (120, 160, 3), name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_sixteen_bit_png_keeps_the_high_byte(processor):
    rng = np.random.default_rng(0)
    for shape in [(30, 40), (30, 40, 3), (30, 40, 4)]:
        values = rng.integers(0, 65536, shape, dtype=np.uint16)
        got = processor.decode_image(tf.constant(png16(values))).numpy()
        high = (values >> 8).astype(np.uint8)
        expected = np.repeat(high[:, :, None], 3, 2) if high.ndim == 2 else high[:, :, :3]
        np.testing.assert_array_equal(got, expected, err_msg=str(shape))
        if len(shape) == 3:  # PIL reads 16-bit colour the same way (its grey path clips instead)
            np.testing.assert_array_equal(got, pil_rgb(png16(values)))


def bomb_png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few rows of zeros: the file is tiny, the declared canvas is huge.
    body = zlib.compress(b"\0" * (1 + 3 * width) * 4)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def bomb_jpeg(photo: Image.Image) -> bytes:
    data = bytearray(encode(photo, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    return bytes(data)


def bad_inputs(photo: Image.Image) -> dict[str, tuple[bytes, type, str]]:
    jpeg = encode(photo, "JPEG")
    gif_bomb = bytearray(encode(photo.convert("P"), "GIF"))
    gif_bomb[6:10] = struct.pack("<HH", 65535, 65535)
    bmp_bomb = bytearray(encode(photo, "BMP"))
    bmp_bomb[18:26] = struct.pack("<ii", 30000, -30000)
    return {
        "zero bytes": (b"", ImageDecodeError, r"empty \(0 bytes\)"),
        "an HTML page": (b"<html><body>404</body></html>", ImageDecodeError,
                         r"not a JPEG/PNG/GIF/BMP \(first bytes 3c 68 74 6d\)"),
        "a text file": (b"hello, world\n", ImageDecodeError, r"not a JPEG/PNG/GIF/BMP \(first bytes 68 65 6c 6c\)"),
        "random bytes": (bytes(range(7, 200)), ImageDecodeError, "not a JPEG/PNG/GIF/BMP"),
        "truncated JPEG": (jpeg[: len(jpeg) // 2], ImageDecodeError, "corrupt or truncated JPEG"),
        "JPEG without a frame header": (jpeg[:2] + b"\xff\xd9", ImageDecodeError, "corrupt JPEG header"),
        "corrupt PNG": (encode(photo, "PNG")[:40] + b"\0" * 100, ImageDecodeError, "corrupt or truncated PNG"),
        "PNG bomb 30000x30000": (bomb_png(30000, 30000), ImageSizeError, r"PNG header declares 30000x30000 = 900,000,000 pixels"),
        "JPEG bomb 30000x30000": (bomb_jpeg(photo), ImageSizeError, "JPEG header declares 30000x30000"),
        "GIF bomb 65535x65535": (bytes(gif_bomb), ImageSizeError, "GIF header declares 65535x65535"),
        "BMP bomb 30000x30000": (bytes(bmp_bomb), ImageSizeError, "BMP header declares 30000x30000"),
    }


def test_bad_inputs_raise_clear_errors_in_eager_mode(processor, photo):
    good = encode(photo, "PNG")
    for name, (data, error, message) in bad_inputs(photo).items():
        # (The bombs' messages come from the header check: refused before any decoding.)
        with pytest.raises(error, match=rf"image 1 of 2: {message}"):
            processor([good, data])


def test_bad_inputs_fail_inside_graphs_before_decoding(processor, photo):
    decode = tf.function(processor.decode_image, input_signature=[tf.TensorSpec([], tf.string)])
    for name, (data, _, _) in bad_inputs(photo).items():
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode(tf.constant(data))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_pixels=40000000"):
        decode(tf.constant(bomb_png(30000, 30000)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"first bytes 3c 68 74 6d"):
        decode(tf.constant(b"<html>"))


def test_max_pixels_is_configurable(photo):
    small = AlignImageProcessor(max_pixels=160 * 120 - 1)
    with pytest.raises(ImageSizeError, match="160x120 = 19,200 pixels, more than max_pixels=19,199"):
        small(encode(photo, "PNG"))
    assert AlignImageProcessor(max_pixels=160 * 120)(encode(photo, "PNG")).shape == (1, 289, 289, 3)
