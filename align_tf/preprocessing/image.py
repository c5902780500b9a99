"""Image preprocessing for ALIGN as TensorFlow graph code: bounded decode, PIL-exact resize, crop, rescale."""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from align_tf.errors import ArgumentTypeError, AssetNotFoundError, ConfigError, ImageDecodeError, ImageSizeError  # noqa: F401  (public here too)
from align_tf.protocol import read_image_file

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

# Formats recognised from their first bytes; index 0 means "none of them".
FORMATS = ("unknown", "JPEG", "PNG", "GIF", "BMP")
_JPEG, _PNG, _GIF, _BMP = 1, 2, 3, 4

# PIL's resampling filters (Image.Resampling values) with their support, as in libImaging/Resample.c.
BOX, BILINEAR, HAMMING, BICUBIC, LANCZOS = 4, 2, 5, 3, 1
_FILTER_SUPPORT = {BOX: 0.5, BILINEAR: 1.0, HAMMING: 1.0, BICUBIC: 2.0, LANCZOS: 3.0}
_FILTER_NAMES = {BOX: "box", BILINEAR: "bilinear", HAMMING: "hamming", BICUBIC: "bicubic", LANCZOS: "lanczos"}
# "pil": Pillow's integers exactly (the reference); "tf": tf.image.resize(antialias=True), faster,
# about one grey level off on average (fine for training; Kakao's own pipeline used TF's resize).
RESIZE_METHODS = ("pil", "tf")
_TF_METHODS = {BOX: "area", BILINEAR: "bilinear", HAMMING: "bilinear", BICUBIC: "bicubic", LANCZOS: "lanczos3"}
# PIL keeps resampling weights as fixed-point integers with this many fractional bits.
_PRECISION_BITS = 32 - 8 - 2


def _hw(value, name: str) -> tuple[int, int]:
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        raise ConfigError(f"{name} must have 'height' and 'width' (got keys {sorted(value)}); "
                         "shortest_edge resizing is not supported")
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


class AlignImageProcessor(tf.Module):
    """Bytes or pixels in, `pixel_values` out: NHWC float32, `x * rescale_factor - 1` in [-1, 1].

    Inference: resize to `size` ignoring aspect ratio with PIL's antialiased filter (the same
    integers as `PIL.Image.resize`, reproduced with TF ops; `resize_method="tf"` trades that
    exactness for TF's faster resize), center crop `crop_size`, rescale.
    Training: the same resize, a random crop and a random horizontal flip (seeded when asked).
    Decoding is bounded: the header's declared size is read with string ops and an image over
    `max_pixels` is refused before it is decoded.
    """

    def __init__(
        self,
        size=(346, 346),
        crop_size=(289, 289),
        rescale_factor: float = 1 / 127.5,
        rescale_offset: bool = True,
        max_pixels: int = 40_000_000,
        *,
        do_resize: bool = True,
        resample: int = BILINEAR,
        do_center_crop: bool = True,
        do_rescale: bool = True,
        do_normalize: bool = False,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        include_top: bool = False,
        resize_method: str = "pil",
        name: str | None = None,
    ):
        super().__init__(name=name or "align_image_processor")
        self.size = _hw(size, "size")
        self.crop_size = _hw(crop_size, "crop_size")
        if resample not in _FILTER_SUPPORT:
            raise ConfigError(f"resample must be one of {sorted(_FILTER_NAMES.items())} (PIL filters), got {resample!r}")
        if do_center_crop and do_resize and (self.crop_size[0] > self.size[0] or self.crop_size[1] > self.size[1]):
            raise ConfigError(f"crop_size {self.crop_size} is larger than size {self.size}")
        if resize_method not in RESIZE_METHODS:
            raise ConfigError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}")
        if not isinstance(max_pixels, int) or max_pixels <= 0:
            raise ConfigError(f"max_pixels must be a positive int, got {max_pixels!r}")
        self.rescale_factor = float(rescale_factor)
        self.rescale_offset = bool(rescale_offset)
        self.max_pixels = max_pixels
        self.do_resize = bool(do_resize)
        self.resample = int(resample)
        self.do_center_crop = bool(do_center_crop)
        self.do_rescale = bool(do_rescale)
        self.do_normalize = bool(do_normalize)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.include_top = bool(include_top)
        self.resize_method = resize_method
        self._decode_fn = tf.function(
            self.decode_image, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")]
        )
        self._header_fn = tf.function(
            self._header_limits, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")]
        )
        self._preprocess_fn = tf.function(
            self.preprocess_image,
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")],
        )

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of `pixel_values`."""
        if self.do_center_crop:
            return self.crop_size
        return self.size

    # ================================================================= decoding (graph code)
    def read_header(self, image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(format index into FORMATS, height, width) from the headers alone, as int64 scalars.

        PNG IHDR and BMP info header are read with string ops; JPEG's SOFn with
        `tf.io.extract_jpeg_shape`, which parses markers only; a GIF's size is its first frame's
        canvas as Pillow sizes it (the logical screen, grown to hold a frame reaching past it),
        found by walking the blocks up to that frame. Unknown formats give 0, 0, 0.
        """
        facts = self._header_facts(image_bytes)
        return facts["format"], facts["height"], facts["width"]

    def _header_facts(self, image_bytes: tf.Tensor) -> dict:
        """read_header's values plus what bounds the decode: the JPEG scan count, the GIF walk
        (first image offset, end of its data, transparent index, state) and its frame's area."""
        data = tf.convert_to_tensor(image_bytes, tf.string)
        length = tf.cast(tf.strings.length(data), tf.int64)
        b = _byte_values(data)
        head = tf.strings.substr(tf.strings.join([data, b"\0" * 16]), 0, 16)

        def be(start, n):
            return sum(_byte(b, start + i) * (256 ** (n - 1 - i)) for i in range(n))

        is_jpeg = (_byte(b, 0) == 0xFF) & (_byte(b, 1) == 0xD8) & (_byte(b, 2) == 0xFF)
        is_png = tf.equal(tf.strings.substr(head, 0, 8), b"\x89PNG\r\n\x1a\n")
        has_ihdr = tf.equal(tf.strings.substr(head, 8, 8), b"\0\0\0\x0dIHDR")
        gif_magic = tf.strings.substr(head, 0, 6)
        is_gif = tf.equal(gif_magic, b"GIF87a") | tf.equal(gif_magic, b"GIF89a")
        is_bmp = tf.equal(tf.strings.substr(head, 0, 2), b"BM") & (length >= 26)

        fmt = _pick(is_jpeg, _JPEG, _pick(is_png, _PNG, _pick(is_gif, _GIF, _pick(is_bmp, _BMP, 0))))
        fmt = tf.cast(fmt, tf.int64)
        gif_image, gif_end, gif_transparency, gif_state = _gif_walk(b, length, is_gif)
        gif_found = gif_state == _GIF_FOUND
        gif_h, gif_w = _gif_canvas(b, tf.maximum(gif_image, 0))
        bmp = _bmp_fields(b)

        def jpeg_shape():
            shape = tf.io.extract_jpeg_shape(data, output_type=tf.int64)
            return shape[0], shape[1], _count_jpeg_scans(b)

        def other_shape():
            # A PNG without its IHDR chunk first, or a GIF without an image, declares nothing:
            # size 0, refused as corrupt.
            png_h, png_w = _pick(has_ihdr, be(20, 4), 0), _pick(has_ihdr, be(16, 4), 0)
            gif_h_found, gif_w_found = _pick(gif_found, gif_h, 0), _pick(gif_found, gif_w, 0)
            bmp_w = _signed32(bmp["width"])
            height = _pick(is_png, png_h, _pick(is_gif, gif_h_found, _pick(is_bmp, bmp["height"], 0)))
            width = _pick(is_png, png_w, _pick(is_gif, gif_w_found, _pick(is_bmp, bmp_w, 0)))
            return height, width, tf.constant(0, tf.int64)

        height, width, scans = tf.cond(is_jpeg, jpeg_shape, other_shape)
        frame_pixels = _le(b, tf.maximum(gif_image, 0) + 5, 2) * _le(b, tf.maximum(gif_image, 0) + 7, 2)
        return {
            "format": fmt, "height": height, "width": width, "bytes": b, "length": length,
            "jpeg_scans": scans, "gif_image": gif_image, "gif_end": gif_end,
            "gif_transparency": gif_transparency, "gif_state": gif_state,
            "gif_frame_pixels": _pick(is_gif & gif_found, frame_pixels, 0),
        }

    def decode_image(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """uint8 [H, W, 3] RGB from JPEG / PNG / GIF (first frame) / BMP bytes; graph-safe.

        Refuses unknown formats, empty sizes, headers declaring more than `max_pixels` and JPEGs
        with more than MAX_JPEG_SCANS scans before decoding; a GIF's later frames are never
        decoded. Alpha is dropped (as PIL's `convert("RGB")`), grey and palettes expanded,
        16-bit PNG samples reduced to 8 bits by their high byte (`value >> 8`); GIF and BMP
        pixels equal Pillow's (see _decode_gif, _decode_bmp).
        """
        data = tf.convert_to_tensor(image_bytes, tf.string)
        facts = self._header_facts(data)
        fmt, height, width = facts["format"], facts["height"], facts["width"]
        first = tf.strings.substr(data, 0, tf.minimum(tf.strings.length(data), 4))
        hex_bytes = tf.strings.reduce_join(
            tf.gather(tf.constant(_HEX_DIGITS), tf.cast(tf.io.decode_raw(tf.strings.join([first, "\0\0\0\0"]), tf.uint8)[:4], tf.int32)),
            separator=" ",
        )
        is_gif = fmt == _GIF
        checks = [
            tf.debugging.Assert(
                fmt > 0,
                [tf.strings.join(["not a JPEG/PNG/GIF/BMP (first bytes ", hex_bytes, ")"])],
            ),
            tf.debugging.Assert(~is_gif | (facts["gif_state"] != _GIF_NO_IMAGE), ["corrupt GIF: no image in the file"]),
            tf.debugging.Assert(~is_gif | (facts["gif_state"] != _GIF_TRUNCATED),
                                ["truncated GIF: the first image's data ends early"]),
            tf.debugging.Assert(~is_gif | (facts["gif_state"] != _GIF_TOO_LONG), [_GIF_TOO_LONG_MESSAGE]),
            tf.debugging.Assert((height > 0) & (width > 0), ["corrupt image header (no size, or size 0)"]),
            tf.debugging.Assert(
                height * width <= self.max_pixels,
                [
                    tf.strings.join(
                        [
                            "image header declares ",
                            tf.strings.as_string(width),
                            "x",
                            tf.strings.as_string(height),
                            f" pixels, more than max_pixels={self.max_pixels}",
                        ]
                    )
                ],
            ),
            tf.debugging.Assert(~is_gif | (facts["gif_frame_pixels"] > 0),
                                ["corrupt GIF: the first frame is empty (0 pixels)"]),
            tf.debugging.Assert(
                facts["jpeg_scans"] <= MAX_JPEG_SCANS,
                [tf.strings.join(["JPEG has ", tf.strings.as_string(facts["jpeg_scans"]),
                                  f" scans, more than {MAX_JPEG_SCANS} (refused before decoding)"])],
            ),
        ]
        with tf.control_dependencies(checks):  # the decoders read these, so run after the checks
            data = tf.identity(data)
            b = tf.identity(facts["bytes"])
        branches = [
            lambda: tf.zeros([0, 0, 3], tf.uint8),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8),
            lambda: _decode_gif(data, b, facts["gif_image"], facts["gif_end"], facts["gif_transparency"]),
            lambda: _decode_bmp(data, b, facts["length"]),
        ]
        image = tf.switch_case(tf.cast(fmt, tf.int32), branches)
        return tf.ensure_shape(image, [None, None, 3])

    # ================================================================= pixels (graph code)
    def preprocess_image(self, image: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """uint8 [H, W, 3] -> float32 [crop_h, crop_w, 3]; for `tf.data.Dataset.map`.

        `seed` (int32/int64 [2]) makes the training crop and flip deterministic (stateless ops);
        without it they use TF's global random state.
        """
        image = tf.convert_to_tensor(image)
        if image.dtype != tf.uint8:
            raise ArgumentTypeError(f"preprocess_image expects uint8 pixels, got {image.dtype.name}")
        image = tf.ensure_shape(image, [None, None, 3])
        out_h, out_w = self.output_size
        if self.do_resize:
            full_h, full_w = self.size
        else:
            full_h, full_w = tf.shape(image)[0], tf.shape(image)[1]
        flip = tf.constant(False)
        if training:
            if seed is None:
                offset_y = tf.random.uniform([], 0, full_h - out_h + 1, dtype=tf.int32)
                offset_x = tf.random.uniform([], 0, full_w - out_w + 1, dtype=tf.int32)
                flip = tf.random.uniform([]) < 0.5
            else:
                seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
                offset_y = tf.random.stateless_uniform([], seeds[0], 0, full_h - out_h + 1, dtype=tf.int32)
                offset_x = tf.random.stateless_uniform([], seeds[1], 0, full_w - out_w + 1, dtype=tf.int32)
                flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
        elif self.do_center_crop:
            # As HF's center_crop: top = (height - crop_height) // 2.
            offset_y, offset_x = (full_h - out_h) // 2, (full_w - out_w) // 2
        else:
            offset_y, offset_x = 0, 0

        if self.do_resize:
            if self.resize_method == "pil":
                pixels = pil_resize_window(image, self.size, (offset_y, offset_x), (out_h, out_w), self.resample)
            else:  # "tf": TF's own antialiased resize, rounded to 8 bits like PIL's output
                resized = tf.image.resize(image, self.size, method=_TF_METHODS[self.resample], antialias=True)
                window = resized[offset_y : offset_y + out_h, offset_x : offset_x + out_w]
                pixels = tf.clip_by_value(tf.round(window), 0.0, 255.0)
        else:
            pixels = tf.cast(image[offset_y : offset_y + out_h, offset_x : offset_x + out_w], tf.float32)
        pixels = tf.ensure_shape(pixels, [out_h, out_w, 3])
        if training:
            pixels = tf.cond(flip, lambda: tf.reverse(pixels, axis=[1]), lambda: pixels)
        return self._rescale(pixels)

    def _rescale(self, pixels: tf.Tensor) -> tf.Tensor:
        """float32 pixels holding 0..255 -> model input, through a 256-entry table per channel."""
        index = tf.cast(pixels, tf.int32) + tf.constant([0, 256, 512], tf.int32)
        return tf.gather(tf.constant(self.pixel_value_table().reshape(-1)), index)

    def pixel_value_table(self) -> np.ndarray:
        """float32 [3, 256]: the value of each channel's uint8 level, computed with HF's NumPy ops.

        HF rescales in float64, casts to float32, then offsets / normalises in float32; doing it
        once per level gives the same bits as doing it per pixel.
        """
        levels = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
        if self.do_rescale:
            x = (levels.astype(np.float64) * self.rescale_factor).astype(np.float32)
            if self.rescale_offset:
                x -= 1
        else:
            x = levels.astype(np.float32)
        if self.do_normalize:
            mean = np.array(self.image_mean, np.float32)[:, None]
            std = np.array(self.image_std, np.float32)[:, None]
            x = ((x - mean) / std).astype(np.float32)
        if self.include_top:
            x = (x / np.array(self.image_std, np.float32)[:, None]).astype(np.float32)
        return x

    def preprocess_bytes(self, image_bytes: tf.Tensor, training: bool = False, seed=None) -> tf.Tensor:
        """string [N] of encoded images -> float32 [N, crop_h, crop_w, 3]; graph-safe, unknown N."""
        image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
        out_h, out_w = self.output_size
        spec = tf.TensorSpec([out_h, out_w, 3], tf.float32)
        if training and seed is not None:
            n = tf.shape(image_bytes, out_type=tf.int32)[0]
            seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), tf.maximum(n, 1))[:n]
            return tf.map_fn(
                lambda args: self.preprocess_image(self.decode_image(args[0]), True, args[1]),
                (image_bytes, seeds),
                fn_output_signature=spec,
            )
        return tf.map_fn(
            lambda data: self.preprocess_image(self.decode_image(data), training),
            image_bytes,
            fn_output_signature=spec,
        )

    # ================================================================= Python API
    def __call__(self, images, training: bool = False) -> tf.Tensor:
        """PIL images, uint8 arrays, file paths or encoded bytes (one or a list) -> [N, H, W, 3]."""
        items = _as_list(images)
        if not items:
            raise ImageDecodeError("no images given")
        out = []
        for i, item in enumerate(items):
            pixels = self.to_uint8_rgb(item, where=f"image {i} of {len(items)}")
            if training:
                out.append(self.preprocess_image(tf.constant(pixels), training=True))
            else:
                out.append(self._preprocess_fn(tf.constant(pixels)))
        return tf.stack(out)

    def to_uint8_rgb(self, item: Any, where: str = "image") -> np.ndarray:
        """uint8 [H, W, 3] from a PIL image, an array, a path or bytes (bytes decode in-graph)."""
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            try:
                item = read_image_file(path, where=where)
            except OSError as e:
                raise ImageDecodeError(f"{where}: cannot read {path!r} ({e.strerror})") from None
            where = f"{where} ({path})"
        if isinstance(item, (bytes, bytearray, memoryview)):
            return self.decode_bytes(bytes(item), where)
        if _is_pil_image(item):
            return pil_to_uint8_rgb(item)
        if isinstance(item, (np.ndarray, tf.Tensor)):
            return _array_to_uint8_rgb(np.asarray(item), where)
        raise ImageDecodeError(
            f"{where}: expected a PIL image, a uint8 array, a file path or encoded bytes, got {type(item).__name__}"
        )

    def decode_bytes(self, data: bytes, where: str = "image") -> np.ndarray:
        """Eager decode with errors that say what is wrong with which input."""
        problem = self.describe_problem(data)
        if problem:
            error = ImageSizeError if "max_pixels" in problem else ImageDecodeError
            raise error(f"{where}: {problem}")
        try:
            return self._decode_fn(tf.constant(data)).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            if "assertion failed: [" in e.message:  # our own check, worded for the user already
                raise ImageDecodeError(f"{where}: {decode_error_detail(e)}") from None
            fmt = FORMATS[int(self._header_fn(tf.constant(data))[0])]
            raise ImageDecodeError(f"{where}: corrupt or truncated {fmt} ({decode_error_detail(e)})") from None

    def _header_limits(self, image_bytes: tf.Tensor) -> tuple:
        """(format, height, width, JPEG scans, GIF walk state, GIF first-frame pixels): what
        `describe_problem` checks, as int64 scalars."""
        facts = self._header_facts(image_bytes)
        keys = ("format", "height", "width", "jpeg_scans", "gif_state", "gif_frame_pixels")
        return tuple(facts[k] for k in keys)

    def describe_problem(self, data: bytes) -> str | None:
        """Why these bytes would be refused before decoding, or None."""
        if not data:
            return "empty (0 bytes)"
        try:
            fmt, height, width, scans, gif_state, frame_pixels = (int(v) for v in self._header_fn(tf.constant(data)))
        except tf.errors.InvalidArgumentError:
            return "corrupt JPEG header"
        if fmt == 0:
            return f"not a JPEG/PNG/GIF/BMP (first bytes {' '.join(f'{b:02x}' for b in data[:4])})"
        if fmt == _GIF and gif_state == _GIF_NO_IMAGE:
            return "corrupt GIF: no image in the file"
        if fmt == _GIF and gif_state == _GIF_TRUNCATED:
            return "truncated GIF: the first image's data ends early"
        if fmt == _GIF and gif_state == _GIF_TOO_LONG:
            return _GIF_TOO_LONG_MESSAGE
        if height <= 0 or width <= 0:
            return f"corrupt {FORMATS[fmt]} header (declares {width}x{height})"
        if height * width > self.max_pixels:
            return (
                f"{FORMATS[fmt]} header declares {width}x{height} = {height * width:,} pixels, "
                f"more than max_pixels={self.max_pixels:,} (refused before decoding)"
            )
        if fmt == _GIF and frame_pixels == 0:
            return "corrupt GIF: the first frame is empty (0 pixels)"
        if scans > MAX_JPEG_SCANS:
            return (f"JPEG has {scans} scans, more than {MAX_JPEG_SCANS} "
                    "(refused before decoding: each scan costs a full pass)")
        return None

    def find_decode_problem(self, data: bytes) -> str | None:
        """Like `describe_problem`, and also decodes the image to catch corrupt or truncated data."""
        problem = self.describe_problem(data)
        if problem:
            return problem
        try:
            self.decode_bytes(data)
        except ImageDecodeError as e:
            return str(e).split(": ", 1)[-1]
        return None

    # ================================================================= exact PIL path (parity work)
    def preprocess_pil(self, images) -> np.ndarray:
        """The reference computation with PIL and NumPy, equal to HF's EfficientNetImageProcessor bit for bit.

        Returns float32 [N, H, W, 3]. Slow, CPU only; meant for parity checks, not pipelines.
        """
        from PIL import Image

        items = _as_list(images)
        out = []
        for i, item in enumerate(items):
            where = f"image {i} of {len(items)}"
            if isinstance(item, (str, os.PathLike, bytes, bytearray)):
                try:
                    item = Image.open(item if isinstance(item, (str, os.PathLike)) else io.BytesIO(item))
                    item.load()
                except Exception as e:  # PIL raises many types for bad files
                    raise ImageDecodeError(f"{where}: PIL cannot open it ({e})") from None
            if not _is_pil_image(item):
                item = Image.fromarray(_array_to_uint8_rgb(np.asarray(item), where))
            rgb = Image.fromarray(pil_to_uint8_rgb(item))
            if self.do_resize:
                rgb = rgb.resize((self.size[1], self.size[0]), resample=self.resample, reducing_gap=None)
            pixels = np.array(rgb)
            if self.do_center_crop:
                top = (pixels.shape[0] - self.crop_size[0]) // 2
                left = (pixels.shape[1] - self.crop_size[1]) // 2
                pixels = pixels[top : top + self.crop_size[0], left : left + self.crop_size[1]]
            x = pixels
            if self.do_rescale:
                x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
                if self.rescale_offset:
                    x -= 1
            else:
                x = x.astype(np.float32)
            if self.do_normalize:
                x = ((x - np.array(self.image_mean, np.float32)) / np.array(self.image_std, np.float32)).astype(np.float32)
            if self.include_top:
                x = (x / np.array(self.image_std, np.float32)).astype(np.float32)
            out.append(x)
        return np.stack(out)

    # ================================================================= files
    def get_config(self) -> dict:
        """preprocessor_config.json content (HF EfficientNetImageProcessor fields + max_pixels)."""
        return {
            "image_processor_type": "EfficientNetImageProcessor",
            "processor_class": "AlignProcessor",
            "do_resize": self.do_resize,
            "size": {"height": self.size[0], "width": self.size[1]},
            "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": {"height": self.crop_size[0], "width": self.crop_size[1]},
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "rescale_offset": self.rescale_offset,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "include_top": self.include_top,
            "max_pixels": self.max_pixels,
            "resize_method": self.resize_method,
        }

    @classmethod
    def from_config(cls, config: dict, **overrides) -> "AlignImageProcessor":
        keys = (
            "size", "crop_size", "rescale_factor", "rescale_offset", "max_pixels", "do_resize", "resample",
            "do_center_crop", "do_rescale", "do_normalize", "image_mean", "image_std", "include_top", "resize_method",
        )
        kwargs = {k: config[k] for k in keys if config.get(k) is not None}
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **overrides) -> "AlignImageProcessor":
        """Read preprocessor_config.json from a folder (HF checkpoint or ours) or a hub id."""
        from align_tf.preprocessing.tokenizer import resolve_folder

        folder = resolve_folder(name_or_path)
        path = os.path.join(folder, PREPROCESSOR_CONFIG_NAME)
        if not os.path.isfile(path):
            raise AssetNotFoundError(f"{name_or_path}: no {PREPROCESSOR_CONFIG_NAME} in {folder}")
        with open(path, encoding="utf-8") as f:
            return cls.from_config(json.load(f), **overrides)

    def save_pretrained(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, PREPROCESSOR_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, indent=2)
            f.write("\n")
        return path

    def __repr__(self) -> str:
        return (
            f"AlignImageProcessor(size={self.size}, crop_size={self.crop_size}, "
            f"resample={_FILTER_NAMES[self.resample]}, rescale_factor={self.rescale_factor:.8g}, "
            f"rescale_offset={self.rescale_offset}, max_pixels={self.max_pixels})"
        )


# ===================================================================== PIL's resampling in TF
def pil_resize_window(image: tf.Tensor, size, offset, window, resample: int = BILINEAR) -> tf.Tensor:
    """`window` (h, w) of PIL's `image.resize(size[::-1], resample)` starting at `offset` (y, x).

    uint8 [H, W, 3] in, float32 [h, w, 3] out holding the exact uint8 values PIL gives.

    The same integers as Pillow: per-axis weights computed in float64 as in Resample.c, turned
    into 22-bit fixed point, one pass rounded and clipped to uint8, then the other pass. Pillow
    13 runs the vertical pass first when the height shrinks by more than twice as many pixels
    as the width (older Pillow always went horizontal first). Only the rows and columns inside
    the window are computed (the crop comes for free, with the same values).
    """
    image = tf.convert_to_tensor(image)
    in_h, in_w = tf.shape(image)[0], tf.shape(image)[1]
    (out_h, out_w), (off_y, off_x), (win_h, win_w) = size, offset, window
    support = _FILTER_SUPPORT[resample]
    y_first, y_weights = _pil_coefficients(in_h, out_h, off_y, win_h, resample, support)
    x_first, x_weights = _pil_coefficients(in_w, out_w, off_x, win_w, resample, support)
    # Source rows / columns that the window reads at all.
    row_lo, row_hi = y_first[0], tf.minimum(in_h, y_first[-1] + tf.shape(y_weights)[1])
    col_lo, col_hi = x_first[0], tf.minimum(in_w, x_first[-1] + tf.shape(x_weights)[1])
    # Pixels travel as float32 (exact for 0..255): oneDNN transposes only floating types and logs
    # an error for others. The `& 0xFF` keeps grappler from moving the cast behind the transposes
    # (it does that to shrink them). The arithmetic itself is int32, inside _pil_pass.
    pixels = tf.cast(image[row_lo:row_hi, col_lo:col_hi], tf.int32)
    pixels = tf.cast(tf.bitwise.bitwise_and(pixels, 0xFF), tf.float32)
    x_first, y_first = x_first - col_lo, y_first - row_lo

    # A pass resamples axis 0 (contiguous rows gather fastest). Horizontal first: transpose,
    # columns, transpose, rows. Vertical first: rows, transpose, columns, transpose back.
    # (Only transposes sit under tf.cond: while loops inside cond branches upset grappler.)
    shrink_h, shrink_w = in_h - out_h, in_w - out_w
    vertical_first = (shrink_h > 0) & (shrink_h > 2 * shrink_w)
    source = tf.cond(vertical_first, lambda: pixels, lambda: tf.transpose(pixels, [1, 0, 2]))
    first_1, weights_1, first_2, weights_2 = tf.cond(
        vertical_first,
        lambda: (y_first, y_weights, x_first, x_weights),
        lambda: (x_first, x_weights, y_first, y_weights),
    )
    once = _pil_pass(source, first_1, weights_1)
    twice = _pil_pass(tf.transpose(once, [1, 0, 2]), first_2, weights_2)
    return tf.cond(vertical_first, lambda: tf.transpose(twice, [1, 0, 2]), lambda: twice)


def _pil_coefficients(in_size, out_size: int, start, count: int, resample: int, support_1: float):
    """First source index [count] and int32 fixed-point weights [count, ksize] for outputs start..start+count."""
    in_size = tf.cast(in_size, tf.int32)
    in_f = tf.cast(in_size, tf.float64)
    # Grappler's constant folding turns `x / constant` into `x * (1 / constant)`, which is off by
    # an ulp now and then; a divisor that depends on the input keeps the true division.
    out_f = tf.cast(tf.maximum(out_size, tf.minimum(in_size, 0)), tf.float64)
    scale = in_f / out_f
    filterscale = tf.maximum(scale, 1.0)
    support = support_1 * filterscale
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    xx = tf.cast(tf.range(count) + start, tf.float64)
    center = (xx + 0.5) * scale
    ss = 1.0 / filterscale
    # C truncates toward zero; negatives are clamped to 0 right after, so floor is the same.
    xmin = tf.maximum(tf.cast(tf.math.floor(center - support + 0.5), tf.int32), 0)
    xmax = tf.minimum(tf.cast(tf.math.floor(center + support + 0.5), tf.int32), in_size) - xmin
    taps = tf.range(ksize)
    valid = taps[tf.newaxis, :] < xmax[:, tf.newaxis]
    distance = (tf.cast(taps[tf.newaxis, :] + xmin[:, tf.newaxis], tf.float64) - center[:, tf.newaxis] + 0.5) * ss
    weights = tf.where(valid, _pil_filter(distance, resample), tf.zeros_like(distance))
    # Sum in tap order, as the C loop does, so the normalised weights round identically
    # (a scan adds left to right; a tree reduction could differ in the last bit).
    total = tf.math.cumsum(weights, axis=1)[:, -1]
    weights = tf.where(total[:, tf.newaxis] != 0.0, weights / total[:, tf.newaxis], weights)
    scaled = weights * float(1 << _PRECISION_BITS)
    fixed = tf.where(scaled < 0, tf.math.ceil(scaled - 0.5), tf.math.floor(scaled + 0.5))
    return xmin, tf.cast(fixed, tf.int32)


def _pil_filter(x: tf.Tensor, resample: int) -> tf.Tensor:
    ax = tf.abs(x)
    zero = tf.zeros_like(x)
    if resample == BILINEAR:
        return tf.where(ax < 1.0, 1.0 - ax, zero)
    if resample == BICUBIC:
        a = -0.5
        near = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1
        far = (((ax - 5) * ax + 8) * ax - 4) * a
        return tf.where(ax < 1.0, near, tf.where(ax < 2.0, far, zero))
    if resample == BOX:
        return tf.where((x > -0.5) & (x <= 0.5), tf.ones_like(x), zero)
    if resample == HAMMING:
        px = ax * math.pi
        safe = tf.where(ax == 0.0, tf.ones_like(px), px)
        # PIL multiplies by (0.54f + 0.46f * cos(x)): float constants promoted to double.
        value = tf.sin(safe) / safe * (float(np.float32(0.54)) + float(np.float32(0.46)) * tf.cos(safe))
        return tf.where(ax == 0.0, tf.ones_like(x), tf.where(ax >= 1.0, zero, value))
    if resample == LANCZOS:

        def sinc(v):
            pv = v * math.pi
            safe = tf.where(v == 0.0, tf.ones_like(pv), pv)
            return tf.where(v == 0.0, tf.ones_like(v), tf.sin(safe) / safe)

        return tf.where((x >= -3.0) & (x < 3.0), sinc(x) * sinc(x / 3), zero)
    raise ConfigError(f"unsupported resample filter {resample}")


def _pil_pass(pixels: tf.Tensor, first: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Resample axis 0 of [L, M, 3] (float32 holding 0..255) to [count, M, 3], rounded and clipped like PIL's clip8.

    Taps are gathered in groups that keep the gathered block under _GATHER_BUDGET values (small,
    cache-friendly blocks measured fastest; a large photo never needs a huge intermediate).
    """
    length, rest = tf.shape(pixels)[0], tf.shape(pixels)[1]
    count, ksize = tf.shape(weights)[0], tf.shape(weights)[1]
    group = tf.clip_by_value(_GATHER_BUDGET // tf.maximum(count * rest * 3, 1), 1, ksize)
    steps = (ksize + group - 1) // group
    padded = tf.pad(weights, [[0, 0], [0, steps * group - ksize]])

    def body(step, acc):
        taps = step * group + tf.range(group)
        index = tf.minimum(first[:, tf.newaxis] + taps[tf.newaxis, :], length - 1)
        taken = tf.cast(tf.gather(pixels, index), tf.int32)  # [count, group, M, 3]
        w = tf.gather(padded, taps, axis=1)[:, :, tf.newaxis, tf.newaxis]
        return step + 1, acc + tf.reduce_sum(taken * w, axis=1)

    acc = tf.fill(tf.stack([count, rest, 3]), tf.constant(1 << (_PRECISION_BITS - 1), tf.int32))
    _, acc = tf.while_loop(lambda step, _: step < steps, body, [tf.constant(0), acc])
    return tf.cast(tf.clip_by_value(tf.bitwise.right_shift(acc, _PRECISION_BITS), 0, 255), tf.float32)


_GATHER_BUDGET = 400_000


# ===================================================================== decoding helpers
_HEX_DIGITS = [f"{i:02x}" for i in range(256)]
_BYTE_STRINGS = [bytes([i]) for i in range(256)]
# Zero bytes appended before reading a file as numbers: header fields (BMP masks end at byte 70)
# and a block walk's look-ahead past the end read 0 instead of failing.
_PAD = 160

# The most scans a JPEG may have. Every scan walks all the image's coefficients again, so a
# file repeating a refinement scan buys decode time without limit (1000 scans: 43 s instead of
# 2 s). 256 is nvImageCodec's default limit (NVIMGCODEC_MAX_JPEG_SCANS, set after Cure53's
# libjpeg-turbo audit); libjpeg's own progressive script writes 10, and encoders stay far below.
MAX_JPEG_SCANS = 256
# Loop steps a GIF's block walk (blocks, sub-blocks, stray bytes up to the end of the first image)
# and an RLE bitmap's commands may take: each step costs ~50-80 us in a graph, so a file made of
# 1-byte sub-blocks or zero-pixel commands would otherwise buy decode time by the megabyte.
# Runs of full 255-byte sub-blocks (what encoders write) are skipped 64 at a time.
MAX_GIF_STEPS = 20_000
MAX_RLE_COMMANDS = 50_000
# BMP info-header sizes and bit depths Pillow reads (others it refuses, and so do we).
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)
_BMP_BITS = (1, 4, 8, 16, 24, 32)
# BI_BITFIELDS masks Pillow accepts for 32-bit pixels (r, g, b, a), as in its BmpImagePlugin.
_BMP_MASKS_32 = (
    (0xFF0000, 0xFF00, 0xFF, 0x0), (0xFF000000, 0xFF0000, 0xFF00, 0x0), (0xFF000000, 0xFF00, 0xFF, 0x0),
    (0xFF000000, 0xFF0000, 0xFF00, 0xFF), (0xFF, 0xFF00, 0xFF0000, 0xFF000000),
    (0xFF0000, 0xFF00, 0xFF, 0xFF000000), (0xFF000000, 0xFF00, 0xFF, 0xFF0000), (0x0, 0x0, 0x0, 0x0),
)
_BMP_MASK_565, _BMP_MASK_555 = (0xF800, 0x7E0, 0x1F), (0x7C00, 0x3E0, 0x1F)


def _pick(condition, x, y) -> tf.Tensor:
    """tf.where for header arithmetic: both sides as int64 (a bare Python int would be int32)."""
    return tf.where(condition, tf.cast(x, tf.int64), tf.cast(y, tf.int64))


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def _byte_values(data: tf.Tensor) -> tf.Tensor:
    """uint8 [length + _PAD]: the file's bytes, then zeros (one byte each: a copy of the file)."""
    return tf.io.decode_raw(tf.strings.join([data, b"\0" * _PAD]), tf.uint8)


def _byte(b: tf.Tensor, index) -> tf.Tensor:
    """Byte `index` of `b` as an int64 scalar, for header arithmetic."""
    return tf.cast(b[index], tf.int64)


def _le(b: tf.Tensor, start, n: int) -> tf.Tensor:
    return sum(_byte(b, start + i) * (256**i) for i in range(n))


def _bytes_to_string(values: tf.Tensor) -> tf.Tensor:
    """A scalar string holding `values` (ints 0..255) as bytes."""
    return tf.strings.reduce_join(tf.gather(tf.constant(_BYTE_STRINGS), tf.cast(values, tf.int32)))


def _safe_substr(data: tf.Tensor, pos, length) -> tf.Tensor:
    """`substr` that never raises: a range past the end is cut at the end (substr's own error
    message would carry the raw bytes, which are not text)."""
    size = tf.strings.length(data)
    pos = tf.clip_by_value(tf.cast(pos, tf.int32), 0, size)
    return tf.strings.substr(data, pos, tf.clip_by_value(tf.cast(length, tf.int32), 0, size - pos))


def _count_jpeg_scans(b: tf.Tensor) -> tf.Tensor:
    """Start-of-scan markers (FF DA) in a JPEG. Entropy-coded data never holds FF DA (FF is
    stuffed as FF 00), so only metadata (an EXIF thumbnail's own scans) can add to the count."""
    markers = (b[:-1] == 0xFF) & (b[1:] == 0xDA)  # one bool per byte; the positions found are few
    return tf.shape(tf.where(markers), out_type=tf.int64)[0]


_GIF_TOO_LONG_MESSAGE = (f"GIF takes more than {MAX_GIF_STEPS} blocks or sub-blocks to reach the end of "
                         "its first image (refused: decode time is bounded)")


def _gif_table_size(flags: tf.Tensor) -> tf.Tensor:
    """Bytes of the colour table a GIF screen or image descriptor's flags announce (0: none)."""
    return _pick(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0)


# GIF walk states.
_GIF_WALKING, _GIF_FOUND, _GIF_NO_IMAGE, _GIF_TRUNCATED, _GIF_TOO_LONG = 0, 1, 2, 3, 4


def _gif_walk(b: tf.Tensor, length: tf.Tensor, is_gif: tf.Tensor):
    """Walk a GIF's blocks as Pillow reads them, up to the end of the first image's data.

    Returns (image, end, transparency, state): the offset of the first image descriptor, the
    offset just past its data, the transparent index its graphic control extensions set (-1:
    none) and the walk's final state (_GIF_FOUND, _GIF_NO_IMAGE, _GIF_TRUNCATED or
    _GIF_TOO_LONG past MAX_GIF_STEPS). One step per block or sub-block, per run of up to 64
    full sub-blocks or per up to 64 stray bytes between blocks (skipped, as Pillow does);
    other files (is_gif false) take none.
    """
    flags = _byte(b, 10)
    gct = _gif_table_size(flags)
    start = _pick(is_gif, 13 + gct, length)
    state0 = _pick(is_gif, _GIF_WALKING, _GIF_NO_IMAGE)
    # mode: 0 between blocks, 1 in an extension's sub-blocks, 2 in the image data's sub-blocks.

    def step(pos, mode, image, transparency, state, steps):
        at = tf.minimum(pos, length)
        c, c1 = _byte(b, at), _byte(b, at + 1)
        past_end = pos >= length
        # Between blocks: an extension (21), an image descriptor (2C), the trailer (3B) or junk.
        is_ext, is_image = c == 0x21, c == 0x2C
        gce = is_ext & (c1 == 0xF9) & (_byte(b, at + 2) >= 4)
        new_transparency = _pick(gce & (_byte(b, at + 3) % 2 == 1), _byte(b, at + 6), transparency)
        image_flags = _byte(b, at + 9)
        lct = _gif_table_size(image_flags)
        # Stray bytes are passed up to 64 at a time: to the next introducer or trailer byte.
        ahead = pos + tf.range(64, dtype=tf.int64)
        window = tf.gather(b, tf.minimum(ahead, length))
        stops = (window == 0x21) | (window == 0x2C) | (window == 0x3B) | (ahead >= length)
        stray = tf.maximum(_pick(tf.reduce_any(stops), tf.argmax(stops, output_type=tf.int64), 64), 1)
        block_pos = _pick(is_ext, pos + 2, _pick(is_image, pos + 11 + lct, pos + stray))
        block_mode = _pick(is_ext, 1, _pick(is_image, 2, 0))
        block_state = _pick(past_end | (c == 0x3B), _GIF_NO_IMAGE, _GIF_WALKING)
        # In sub-blocks: a size byte, then that many bytes; size 0 ends the chain. Full 255-byte
        # sub-blocks lying wholly inside the file are passed 64 at a time.
        probes = pos + 256 * tf.range(64, dtype=tf.int64)
        full = (tf.gather(b, tf.minimum(probes, length)) == 255) & (probes + 256 <= length)
        full_run = tf.reduce_sum(tf.math.cumprod(tf.cast(full, tf.int64)))
        sub_pos = _pick(full_run > 0, pos + 256 * full_run, pos + 1 + c)
        sub_mode = _pick((c == 0) & (full_run == 0), 0, mode)
        ends_data = (c == 0) & (full_run == 0) & (mode == 2)
        sub_state = _pick(past_end, _GIF_TRUNCATED, _pick(ends_data, _GIF_FOUND, _GIF_WALKING))
        between = mode == 0
        state = _pick(between, block_state, sub_state)
        state = _pick((state == _GIF_WALKING) & (steps + 1 >= MAX_GIF_STEPS), _GIF_TOO_LONG, state)
        return (
            _pick(between, block_pos, sub_pos),
            _pick(between, block_mode, sub_mode),
            _pick(between & is_image & ~past_end, pos, image),
            _pick(between, new_transparency, transparency),
            state,
            steps + 1,
        )

    end, _, image, transparency, state, _ = tf.while_loop(
        lambda pos, mode, image, transparency, state, steps: state == _GIF_WALKING,
        step,
        (start, tf.constant(0, tf.int64), tf.constant(-1, tf.int64), tf.constant(-1, tf.int64),
         tf.cast(state0, tf.int64), tf.constant(0, tf.int64)),
        maximum_iterations=MAX_GIF_STEPS,
    )
    return image, end, transparency, state


def _gif_canvas(b: tf.Tensor, image: tf.Tensor):
    """(height, width) of the first frame as Pillow shows it: the logical screen, grown to hold
    the frame when the frame reaches past it."""
    left, top = _le(b, image + 1, 2), _le(b, image + 3, 2)
    width, height = _le(b, image + 5, 2), _le(b, image + 7, 2)
    return tf.maximum(_le(b, 8, 2), top + height), tf.maximum(_le(b, 6, 2), left + width)


def _decode_gif(data: tf.Tensor, b: tf.Tensor, image, end, transparency) -> tf.Tensor:
    """The first frame as Pillow's `convert("RGB")` gives it, decoding nothing else.

    tf.io.decode_gif decodes every frame, sizes its output by the largest frame rather than the
    screen, paints transparent pixels black and drops a frame's offset. So the first image is cut
    out into a GIF of its own (one frame at 0,0, its colour table padded to 256 entries as Pillow
    pads it with black, or a grey ramp when there is none: Pillow reads bare indices as grey),
    decoded, and pasted at its offset onto a canvas filled with the transparent index's colour
    (index 0 without transparency), as Pillow fills it. Transparent pixels keep their colour.
    """
    height, width = _gif_canvas(b, image)
    left, top = _le(b, image + 1, 2), _le(b, image + 3, 2)
    frame_w, frame_h = _le(b, image + 5, 2), _le(b, image + 7, 2)
    screen_flags, image_flags = _byte(b, 10), _byte(b, image + 9)
    gct_size = _gif_table_size(screen_flags)
    lct_size = _gif_table_size(image_flags)
    table = tf.where(lct_size > 0, _safe_substr(data, image + 10, lct_size), _safe_substr(data, 13, gct_size))
    grey = tf.constant(b"".join(bytes([i, i, i]) for i in range(256)))
    padded = tf.strings.substr(tf.strings.join([table, b"\0" * 768]), 0, 768)
    table = tf.where((lct_size == 0) & (gct_size == 0), grey, padded)
    sizes = tf.stack([frame_w % 256, frame_w // 256, frame_h % 256, frame_h // 256])
    alone = tf.strings.join([
        b"GIF89a", _bytes_to_string(sizes), b"\xf7\0\0", table,  # screen = frame, 256-entry table
        b",\0\0\0\0", _bytes_to_string(tf.concat([sizes, [image_flags & 0x40]], 0)),  # keep interlace
        _safe_substr(data, image + 10 + lct_size, end - (image + 10 + lct_size)), b";",
    ])
    frame = tf.io.decode_gif(alone)[0]
    palette = tf.reshape(tf.io.decode_raw(table, tf.uint8), [256, 3])
    fill = palette[tf.maximum(transparency, 0)]
    margins = [[top, height - top - frame_h], [left, width - left - frame_w], [0, 0]]
    inside = tf.pad(tf.ones([frame_h, frame_w, 1], tf.bool), margins)
    placed = tf.pad(frame, margins)
    return tf.where(inside, placed, fill)


def _bmp_fields(b: tf.Tensor) -> dict:
    """The BMP header fields Pillow reads (core 12-byte header or an info header)."""
    header_size = _le(b, 14, 4)
    core = header_size == 12
    raw_height = _le(b, 22, 4)
    top_down = ~core & (_byte(b, 25) == 0xFF)  # Pillow: a height whose top byte is FF is negative
    bits = _pick(core, _le(b, 24, 2), _le(b, 28, 2))
    colors = _pick(core, 0, _le(b, 46, 4))
    colors = _pick(colors == 0, tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.minimum(bits, 32)), colors)
    offset = _le(b, 10, 4)
    padding = _pick(core, 3, 4)  # palette entries: BGR (core) or BGRX
    compression = _pick(core, 0, _le(b, 30, 4))
    palette_bytes = _pick(bits <= 8, padding * colors, 0)
    # Pillow: data that starts right after the header leaves room for the palette first, and
    # offset 0 means "where reading stopped": after the header, masks that follow a 40-byte
    # header, and the palette.
    offset = _pick((offset == 14 + header_size) & (bits <= 8), offset + palette_bytes, offset)
    masks_after = _pick((compression == 3) & (header_size < 52), 12, 0)
    offset = _pick(offset == 0, 14 + header_size + masks_after + palette_bytes, offset)
    has_alpha_mask = header_size >= 56
    return {
        "header_size": header_size,
        "width": _pick(core, _le(b, 18, 2), _le(b, 18, 4)),
        "height": _pick(core, _le(b, 20, 2), _pick(top_down, 2**32 - raw_height, raw_height)),
        "top_down": top_down,
        "bits": bits,
        "compression": compression,
        "colors": colors,
        "offset": offset,
        "padding": padding,
        "masks": tf.stack([_le(b, 54, 4), _le(b, 58, 4), _le(b, 62, 4), _pick(has_alpha_mask, _le(b, 66, 4), 0)]),
    }


def _bmp_problems(f: dict, length) -> list:
    """(condition that must hold, message) pairs for a BMP Pillow can read and we decode alike."""
    bits, compression = f["bits"], f["compression"]
    masks = f["masks"]
    known_32 = tf.reduce_any(tf.reduce_all(tf.constant(_BMP_MASKS_32, tf.int64) == masks, axis=1))
    rgb_masks = masks[:3]
    bitfields_ok = tf.where(
        bits == 32, known_32,
        tf.where(bits == 24, tf.reduce_all(rgb_masks == tf.constant((0xFF0000, 0xFF00, 0xFF), tf.int64)),
                 (bits == 16) & (tf.reduce_all(rgb_masks == tf.constant(_BMP_MASK_565, tf.int64))
                                 | tf.reduce_all(rgb_masks == tf.constant(_BMP_MASK_555, tf.int64)))))
    rle = (compression == 1) | (compression == 2)
    stride = tf.bitwise.bitwise_and(tf.bitwise.right_shift(f["width"] * bits + 31, 3), ~3)
    return [
        (tf.reduce_any(f["header_size"] == tf.constant(_BMP_HEADER_SIZES, tf.int64)),
         tf.strings.join(["unsupported BMP header size ", tf.strings.as_string(f["header_size"]),
                          f" (expected one of {', '.join(map(str, _BMP_HEADER_SIZES))})"])),
        (tf.reduce_any(bits == tf.constant(_BMP_BITS, tf.int64)),
         tf.strings.join(["unsupported BMP bit depth ", tf.strings.as_string(bits), " (expected 1, 4, 8, 16, 24 or 32)"])),
        ((compression <= 3) & ((compression != 1) | (bits == 8)) & ((compression != 2) | (bits == 4)),
         tf.strings.join(["unsupported BMP compression ", tf.strings.as_string(compression), " at ",
                          tf.strings.as_string(bits), " bits (expected raw, RLE8 at 8 bits, RLE4 at 4 bits or bitfields)"])),
        ((compression != 3) | bitfields_ok,
         "unsupported BMP bitfields layout (the colour masks Pillow reads: 32-bit bytes, 24-bit BGR, 16-bit 565 or 555)"),
        ((bits > 8) | ((f["colors"] > 0) & (f["colors"] <= 65536)), "unsupported BMP palette size"),
        (rle | (f["offset"] + stride * f["height"] <= length),
         tf.strings.join(["truncated BMP: pixel data needs ", tf.strings.as_string(f["offset"] + stride * f["height"]),
                          " bytes, the file has ", tf.strings.as_string(length)])),
        (f["offset"] <= length, "corrupt BMP: the pixel data offset points past the end of the file"),
    ]


def _bmp_rle_indices(b: tf.Tensor, offset, width, height, rle4, length) -> tf.Tensor:
    """Palette indices [height * width] (bottom row first) of an RLE8 / RLE4 bitmap, read as
    Pillow's BmpRleDecoder reads it (rows cut at their end in run mode, absolute runs aligned
    to even file offsets, the rest of a line or a delta's jump left at index 0). One step per
    command, at most MAX_RLE_COMMANDS of them."""
    total = width * height

    def nibbles(values):  # uint8 bytes -> their high and low nibbles, in that order
        four, low = tf.constant(4, tf.uint8), tf.constant(15, tf.uint8)
        pairs = tf.stack([tf.bitwise.right_shift(values, four), tf.bitwise.bitwise_and(values, low)], axis=1)
        return tf.reshape(pairs, [-1])

    def step(pos, filled, x, chunks, k, done):
        at = tf.minimum(pos, length)
        count, value = _byte(b, at), _byte(b, at + 1)
        ends = pos + 2 > length  # Pillow stops when a command's two bytes are not both there
        # count > 0: `count` pixels of `value` (RLE4: its two nibbles in turn), cut at the row's end.
        run = _pick(x + count > width, tf.maximum(width - x, 0), count)
        # count 0, value >= 3: `value` pixels follow as they are, padded to an even file offset.
        wanted = tf.minimum(total - filled, value)
        need = _pick(rle4, (wanted + 1) // 2, wanted)
        got = tf.clip_by_value(length - (pos + 2), 0, need)
        # count 0, value 2: a jump right and up, filled with index 0.
        jump = tf.minimum(total - filled, _byte(b, at + 2) + _byte(b, at + 3) * width)
        kind = _pick(count > 0, 0, tf.minimum(value, 3) + 1)  # 0 run, 1 end of line, 2 end, 3 jump, 4 absolute
        kind = _pick(ends | ((kind == 3) & (pos + 4 > length)), 2, kind)
        literal = b[pos + 2: pos + 2 + got]
        repeated = tf.cast(value, tf.uint8)
        chunk = tf.switch_case(tf.cast(kind, tf.int32), [
            lambda: tf.cond(rle4, lambda: nibbles(tf.fill([(run + 1) // 2], repeated))[:run],
                            lambda: tf.fill([run], repeated)),
            lambda: tf.zeros([tf.math.floormod(-filled, width)], tf.uint8),
            lambda: tf.zeros([0], tf.uint8),
            lambda: tf.zeros([jump], tf.uint8),
            lambda: tf.cond(rle4, lambda: nibbles(literal)[:wanted], lambda: literal),
        ])
        filled_next = filled + tf.size(chunk, out_type=tf.int64)
        after_absolute = pos + 2 + need
        next_pos = _pick(kind == 3, pos + 4, _pick(kind == 4, after_absolute + after_absolute % 2, pos + 2))
        next_x = tf.switch_case(tf.cast(kind, tf.int32), [
            lambda: x + run, lambda: tf.constant(0, tf.int64), lambda: x,
            lambda: tf.math.floormod(filled_next, width), lambda: x + value,
        ])
        stop = (kind == 2) | ((kind == 4) & ((got < need) | (filled_next == total)))
        return next_pos, filled_next, next_x, chunks.write(k, chunk), k + 1, stop

    chunks = tf.TensorArray(tf.uint8, size=0, dynamic_size=True, infer_shape=False, element_shape=[None])
    initial = (offset, tf.constant(0, tf.int64), tf.constant(0, tf.int64), chunks, tf.constant(0, tf.int32),
               tf.constant(False))
    _, filled, _, chunks, k, done = tf.while_loop(
        lambda pos, filled, x, chunks, k, done: ~done & (filled < total), step, initial,
        maximum_iterations=MAX_RLE_COMMANDS,
    )
    data = tf.cond(k > 0, lambda: chunks.concat(), lambda: tf.zeros([0], tf.uint8))
    checks = [
        tf.debugging.Assert(done | (filled >= total) | (k < MAX_RLE_COMMANDS), [
            f"RLE BMP needs more than {MAX_RLE_COMMANDS} commands (refused: decode time is bounded)"]),
        tf.debugging.Assert(filled >= total, [
            tf.strings.join(["truncated RLE BMP: ", tf.strings.as_string(filled), " of ",
                             tf.strings.as_string(total), " pixels"])]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(data[:total])


def _unpack_bits(rows: tf.Tensor, bits, width) -> tf.Tensor:
    """uint8 [H, stride] of packed 1/4/8-bit indices -> int32 [H, width], first pixel in the high bits."""
    bits = tf.cast(bits, tf.int32)
    shifts = tf.range(8 - bits, -1, -bits)  # e.g. 4, 0 for 4 bits
    mask = tf.bitwise.left_shift(1, bits) - 1
    values = tf.bitwise.bitwise_and(tf.bitwise.right_shift(tf.cast(rows, tf.int32)[:, :, tf.newaxis], shifts), mask)
    return tf.reshape(values, tf.stack([tf.shape(rows)[0], -1]))[:, :width]


def _decode_bmp(data: tf.Tensor, b: tf.Tensor, length) -> tf.Tensor:
    """RGB uint8 [H, W, 3] equal to Pillow's `convert("RGB")` of a BMP: 1/4/8-bit palettes, RLE8 and
    RLE4, 16-bit 555/565, 24 and 32 bits, BI_BITFIELDS layouts Pillow reads; others refused.
    (tf.io.decode_bmp ignores the compression field and the colour masks.)"""
    f = _bmp_fields(b)
    checks = [tf.debugging.Assert(ok, [message]) for ok, message in _bmp_problems(f, length)]
    with tf.control_dependencies(checks):
        width, height, bits, compression = (tf.identity(f[k]) for k in ("width", "height", "bits", "compression"))
    stride = tf.bitwise.bitwise_and(tf.bitwise.right_shift(width * bits + 31, 3), ~3)

    def rows():  # uint8 [height, stride]
        raw = tf.io.decode_raw(_safe_substr(data, f["offset"], stride * height), tf.uint8)
        return tf.reshape(raw, tf.stack([height, stride]))

    def palette_image(indices):  # int32 indices -> uint8 RGB
        count = tf.minimum(f["colors"], 256) * f["padding"]
        entries = tf.strings.join([_safe_substr(data, 14 + f["header_size"], count), b"\0" * 1024])
        entries = tf.strings.substr(entries, 0, tf.cast(256 * f["padding"], tf.int32))
        entries = tf.reshape(tf.io.decode_raw(entries, tf.uint8), tf.stack([256, f["padding"]]))
        # Entries past the header's colour count are black, as in Pillow.
        index = tf.range(256, dtype=tf.int64)
        listed = index * f["padding"] < count
        rgb = tf.where(listed[:, tf.newaxis], entries[:, 2::-1], tf.zeros_like(entries[:, :3]))
        # Pillow drops a palette that is a grey ramp (black and white for 2 colours) and reads the
        # indices as grey levels: 1-bit as 0/255, 8-bit as the index itself, listed or not.
        ramp = tf.where(f["colors"] == 2, index * 255, index)
        grey = tf.reduce_all(~listed[:, tf.newaxis] | (tf.cast(rgb, tf.int64) == ramp[:, tf.newaxis]))
        one_bit = (bits == 1) & (f["colors"] <= 2)
        eight_bit = (bits == 8) & (f["colors"] > 2)
        levels = tf.cast(tf.minimum(tf.where(one_bit, index * 255, index), 255), tf.uint8)
        rgb = tf.where(grey & (one_bit | eight_bit), tf.tile(levels[:, tf.newaxis], [1, 3]), rgb)
        return tf.gather(rgb, indices)

    def rle():
        indices = _bmp_rle_indices(b, f["offset"], width, height, compression == 2, length)
        return palette_image(tf.reshape(tf.cast(indices, tf.int32), tf.stack([height, width])))

    def indexed():
        return palette_image(_unpack_bits(rows(), bits, width))

    def sixteen():
        packed = tf.cast(rows()[:, : 2 * width], tf.int32)
        pixel = packed[:, 0::2] + 256 * packed[:, 1::2]
        green_bits = tf.where((compression == 3) & (f["masks"][0] == 0xF800), 6, 5)  # 5-6-5, else 5-5-5
        green_max = tf.bitwise.left_shift(1, green_bits) - 1
        red = tf.bitwise.bitwise_and(tf.bitwise.right_shift(pixel, 5 + green_bits), 31) * 255 // 31
        green = tf.bitwise.bitwise_and(tf.bitwise.right_shift(pixel, 5), green_max) * 255 // green_max
        blue = tf.bitwise.bitwise_and(pixel, 31) * 255 // 31
        return tf.cast(tf.stack([red, green, blue], axis=-1), tf.uint8)

    def bgr():
        return tf.reshape(rows()[:, : 3 * width], tf.stack([height, width, 3]))[:, :, ::-1]

    def thirty_two():
        pixels = tf.reshape(rows()[:, : 4 * width], tf.stack([height, width, 4]))
        masks = f["masks"][:3]
        # Byte k holds a channel whose mask is 0xFF << 8k; no masks (or raw data) means BGRX.
        at_byte = masks[:, tf.newaxis] == tf.constant([0xFF << (8 * k) for k in range(4)], tf.int64)
        byte_of = tf.reduce_sum(tf.cast(at_byte, tf.int64) * tf.range(4, dtype=tf.int64), axis=1)
        order = _pick((compression == 3) & tf.reduce_any(masks != 0), byte_of, tf.constant([2, 1, 0], tf.int64))
        return tf.gather(pixels, order, axis=2)

    pixels = tf.case(
        [((compression == 1) | (compression == 2), rle), (bits <= 8, indexed), (bits == 16, sixteen), (bits == 24, bgr)],
        default=thirty_two,
    )
    return tf.cond(f["top_down"], lambda: pixels, lambda: tf.reverse(pixels, [0]))


def decode_error_detail(error: tf.errors.OpError) -> str:
    """The useful line of a decode error: our assertion's text, or the failing op's own words
    (without the graph's stack and node names)."""
    message = error.message
    if "assertion failed: [" in message:
        text = message.split("assertion failed: [", 1)[1]
        return text[: text.index("]")] if "]" in text else text.splitlines()[0]
    message = message.split("\n\t [[", 1)[0].split(" [Op:", 1)[0]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    last = lines[-1] if lines else message.strip()
    return last.split("}} ", 1)[-1][:200]


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


def _is_pil_image(item) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(item, Image.Image)


def pil_to_uint8_rgb(image) -> np.ndarray:
    """RGB uint8 as PIL's convert("RGB"), except 16/32-bit grey: `value >> 8` instead of clipping."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(image).astype(np.int64)
        grey = np.clip(grey >> 8, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _array_to_uint8_rgb(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageDecodeError(f"{where}: expected uint8 pixels, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"{where}: expected an [H, W], [H, W, 1|3|4] array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(f"{where}: empty image (shape {array.shape})")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
