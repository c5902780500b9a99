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
from align_tf.preprocessing.decode import (  # noqa: F401  (MAX_* are public here too)
    _GIF, _GIF_NO_IMAGE, _GIF_TOO_LONG, _GIF_TOO_LONG_MESSAGE, _GIF_TRUNCATED, FORMATS, MAX_GIF_STEPS,
    MAX_JPEG_SCANS, MAX_RLE_COMMANDS, decode_error_detail, decode_image, header_facts)
from align_tf.protocol import read_image_file

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

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
        return header_facts(image_bytes)

    def decode_image(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """uint8 [H, W, 3] RGB from JPEG / PNG / GIF (first frame) / BMP bytes; graph-safe; headers
        declaring more than `max_pixels` are refused before decoding (align_tf.preprocessing.decode)."""
        return decode_image(image_bytes, self.max_pixels)


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
