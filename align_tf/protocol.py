"""What the exporter and the serving side (client, local server) both need, and nothing else:
where TF Serving finds warm-up requests, how images travel in a request, and reading a
SavedModel's protocol buffer. Neither `align_tf.export` nor `align_tf.serving` imports the other."""

from __future__ import annotations

import io
import os

import numpy as np

from align_tf.errors import ImageSizeError, InputError

# TF Serving replays this file (PredictionLog records) when a version loads.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The largest image file read into memory. Any image within the decoder's default max_pixels
# (40 million) fits, even as 32-bit BMP (160 MB); a file past it is refused before reading.
MAX_IMAGE_FILE_BYTES = 256 * 2**20


def read_image_file(path, max_bytes: int = MAX_IMAGE_FILE_BYTES, where: str = "image") -> bytes:
    """The bytes of an image file, refusing one larger than `max_bytes` before reading it all
    (the size is checked on disk, and again while reading, for pipes and devices that report 0)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ImageSizeError(f"{where} ({os.fspath(path)}): file of {size:,} bytes, more than the "
                                 f"{max_bytes:,} read into memory for an image")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageSizeError(f"{where} ({os.fspath(path)}): more than the {max_bytes:,} bytes read into "
                             "memory for an image")
    return data


def encode_images(images) -> list[bytes]:
    """Encoded image files to send as `image_bytes`: bytes as they are, paths read from disk,
    PIL images and uint8 arrays [H, W, 3] encoded as PNG."""
    if isinstance(images, (bytes, bytearray, str, os.PathLike)):
        images = [images]
    out = []
    images = list(images)
    for i, image in enumerate(images):
        if isinstance(image, (bytes, bytearray, memoryview)):
            out.append(bytes(image))
        elif isinstance(image, (str, os.PathLike)):
            out.append(read_image_file(image, where=f"image {i} of {len(images)}"))
        elif hasattr(image, "save") and hasattr(image, "mode"):  # PIL.Image
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(buffer.getvalue())
        elif isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            out.append(buffer.getvalue())
        else:
            raise InputError(f"image {i} of {len(images)}: expected encoded bytes, a path, a PIL image "
                             f"or a uint8 array [H, W, 3], got {type(image).__name__}")
    return out




def read_saved_model_proto(saved_model_dir: str):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto
