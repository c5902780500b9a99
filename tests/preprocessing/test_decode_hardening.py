"""Issue 14, finding 8: the decoder's bounds (GIF frames, JPEG scans, BMP offsets) and the
GIF / BMP cases that used to differ from Pillow, the reference processor's decoder.

Files are written by Pillow where it can, else crafted byte by byte here (GIF frames with
chosen indices, offsets and palettes; BMPs with bitfields and RLE data).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.preprocessing.image import (MAX_GIF_STEPS, MAX_JPEG_SCANS, MAX_RLE_COMMANDS, AlignImageProcessor,
                                         ImageDecodeError, ImageSizeError)
from align_tf.protocol import MAX_IMAGE_FILE_BYTES, encode_images, read_image_file
from support import gif_lzw_literal, gif_sub_blocks


@pytest.fixture(scope="module")
def processor():
    return AlignImageProcessor()


@pytest.fixture(scope="module")
def decode(processor):
    """The decoder as a graph, as exported signatures and tf.data run it."""
    return tf.function(processor.decode_image, input_signature=[tf.TensorSpec([], tf.string)])


def pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def assert_same_as_pil(decode, data: bytes):
    expected = pil_rgb(data)
    got = decode(tf.constant(data)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# -- GIF files with chosen frames ------------------------------------------------------------
def gif_frame(indices, width, height, left=0, top=0, transparency=None, lzw: bytes | None = None) -> bytes:
    control = b"" if transparency is None else b"\x21\xf9\x04\x01\0\0" + bytes([transparency]) + b"\0"
    descriptor = b"," + struct.pack("<HHHHB", left, top, width, height, 0)
    return control + descriptor + b"\x02" + gif_sub_blocks(lzw if lzw is not None else gif_lzw_literal(indices, 2))


def gif_file(screen_w, screen_h, frames, palette: bytes) -> bytes:
    """A GIF89a with a global colour table of 4 entries (2-bit indices)."""
    palette = palette + b"\0" * (12 - len(palette))
    return b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0x81, 1, 0) + palette + b"".join(frames) + b";"


PALETTE = bytes([200, 10, 10, 10, 200, 10, 10, 10, 200, 250, 250, 0])  # red, green, blue, yellow
INDICES = np.random.default_rng(0).integers(0, 4, 6 * 5)


def test_gif_frame_larger_than_the_screen_is_bounded_by_max_pixels(processor, decode):
    # A 1x1 screen whose frame declares 40000x60000: tf.io.decode_gif sized its output by the
    # frame, past the header check (2.4 GB). The canvas Pillow would show is what max_pixels bounds.
    bomb = gif_file(1, 1, [gif_frame([0] * 10, 40000, 60000)], PALETTE)
    with pytest.raises(ImageSizeError, match="GIF header declares 40000x60000 = 2,400,000,000 pixels"):
        processor.decode_bytes(bomb)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_pixels=40000000"):
        decode(tf.constant(bomb))
    # Within max_pixels the grown canvas is decoded as Pillow shows it.
    assert_same_as_pil(decode, gif_file(2, 2, [gif_frame(INDICES, 5, 6, left=2, top=1)], PALETTE))


def test_gif_later_frames_are_never_decoded(processor, decode):
    # tf.io.decode_gif decodes every frame into an output sized by the largest one (60 extra
    # frames on a 3000x3000 screen added 1.75 GB). Pillow reads the first frame only; so do we:
    # here two later 600x500 frames would make tf.io.decode_gif return [3, 500, 600, 3].
    later = gif_frame(np.zeros(600 * 500, np.int64), 600, 500)
    data = gif_file(5, 6, [gif_frame(INDICES, 5, 6), later, later], PALETTE)
    assert tf.io.decode_gif(data).shape == (3, 500, 600, 3)
    assert_same_as_pil(decode, data)
    np.testing.assert_array_equal(processor.decode_bytes(data), pil_rgb(data))
    # And they do not count against max_pixels: only the first frame's canvas is decoded.
    assert AlignImageProcessor(max_pixels=30).decode_bytes(data).shape == (6, 5, 3)


def test_gif_transparent_index_keeps_its_palette_colour_as_in_pil(decode):
    data = gif_file(5, 6, [gif_frame(INDICES, 5, 6, transparency=2)], PALETTE)
    got = decode(tf.constant(data)).numpy()
    assert (got[INDICES.reshape(6, 5) == 2] == [10, 10, 200]).all()  # blue, not black
    assert_same_as_pil(decode, data)


def test_gif_first_frame_smaller_than_the_screen_is_placed_on_it_as_in_pil(decode):
    # Pillow fills the screen with index 0 (the transparent index when there is one) and pastes
    # the frame at its offset; tf.io.decode_gif returned the 5x6 frame alone.
    for transparency in (None, 3):
        data = gif_file(8, 9, [gif_frame(INDICES, 5, 6, left=2, top=1, transparency=transparency)], PALETTE)
        got = decode(tf.constant(data)).numpy()
        assert got.shape == (9, 8, 3)
        fill = PALETTE[0:3] if transparency is None else PALETTE[9:12]
        assert (got[0] == list(fill)).all() and (got[:, 0] == list(fill)).all()
        assert_same_as_pil(decode, data)


def test_gif_without_an_image_or_cut_short_is_a_clear_error(processor):
    whole = gif_file(5, 6, [gif_frame(INDICES, 5, 6)], PALETTE)
    for data, message in [(whole[:25] + b";", "corrupt GIF: no image in the file"),
                          (whole[:-6], "truncated GIF: the first image's data ends early"),
                          (gif_file(4, 4, [gif_frame([], 0, 0)], PALETTE), "the first frame is empty")]:
        with pytest.raises(ImageDecodeError, match=message):
            processor.decode_bytes(data)


# -- JPEG scans ------------------------------------------------------------------------------
def repeat_last_scan(jpeg: bytes, times: int) -> bytes:
    """The last scan of a progressive JPEG (a refinement scan) written `times` more times."""
    start = jpeg.rindex(b"\xff\xda")
    end = jpeg.rindex(b"\xff\xd9")
    return jpeg[:end] + jpeg[start:end] * times + jpeg[end:]


def test_jpeg_with_too_many_scans_is_refused_before_decoding(processor, decode):
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", progressive=True, quality=90)
    progressive = buffer.getvalue()
    scans = progressive.count(b"\xff\xda")
    assert 2 <= scans < MAX_JPEG_SCANS
    # A few repeats of a refinement scan decode (as libjpeg and Pillow do) ...
    decode(tf.constant(repeat_last_scan(progressive, 3)))
    # ... past the limit, the file is refused before any scan is decoded (1000 repeats took 43 s).
    hostile = repeat_last_scan(progressive, 1000)
    message = f"JPEG has {scans + 1000} scans, more than {MAX_JPEG_SCANS}"
    with pytest.raises(ImageDecodeError, match=message):
        processor.decode_bytes(hostile)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        decode(tf.constant(hostile))


# -- BMP -------------------------------------------------------------------------------------
def bmp_file(pixel_data: bytes, width, height, bits, compression=0, masks=None, palette=b"", header_size=40):
    """A BMP with an info header of `header_size` bytes; masks follow a 40-byte header, or sit
    inside a larger one (with the alpha mask)."""
    fields = struct.pack("<IiiHHIIiiII", header_size, width, height, 1, bits, compression,
                         len(pixel_data), 2835, 2835, len(palette) // 4, 0)
    if header_size == 40:
        info = fields + (struct.pack("<III", *masks[:3]) if masks else b"")
    else:
        info = fields + struct.pack("<IIII", *(masks or (0, 0, 0, 0))) + b"\0" * (header_size - 56)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixel_data), 0, 0, offset) + info + palette + pixel_data


def test_bmp_whose_data_offset_points_past_the_end_is_an_image_error(processor, decode):
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    for mode in ("RGB", "P"):
        buffer = io.BytesIO()
        photo.convert(mode).save(buffer, "BMP")
        data = bytearray(buffer.getvalue())
        data[10:14] = struct.pack("<I", 10**6)
        # (The palette path's substr raised an error carrying the file's bytes: UnicodeDecodeError.)
        with pytest.raises(ImageDecodeError, match="truncated BMP: pixel data needs"):
            processor.decode_bytes(bytes(data))
        with pytest.raises(tf.errors.InvalidArgumentError, match="truncated BMP"):
            processor.decode_image(tf.constant(bytes(data)))  # eagerly, too
        with pytest.raises(tf.errors.InvalidArgumentError, match="truncated BMP"):
            decode(tf.constant(bytes(data)))
    # An info header that claims to reach past the end (the palette was read at 14 + its size:
    # substr failed with a message quoting the file's bytes).
    buffer = io.BytesIO()
    photo.convert("P").save(buffer, "BMP")
    data = bytearray(buffer.getvalue())
    data[14:18] = struct.pack("<I", 10**6)
    for run in (lambda: processor.decode_image(tf.constant(bytes(data))), lambda: decode(tf.constant(bytes(data)))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported BMP header size 1000000") as caught:
            run()
        assert "BM" not in caught.value.message.split("unsupported BMP header size")[1]
    with pytest.raises(ImageDecodeError, match=r"^image: unsupported BMP header size 1000000 \(expected one of 12, 40"):
        processor.decode_bytes(bytes(data))


def test_bmp_bitfields_masks_are_honoured_as_in_pil(decode):
    pixels = np.random.default_rng(3).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for masks, header_size in [((0xFF, 0xFF00, 0xFF0000, 0xFF000000), 124),  # RGBA byte order
                               ((0xFF000000, 0xFF0000, 0xFF00, 0), 40),      # XBGR
                               ((0xFF0000, 0xFF00, 0xFF, 0), 40)]:            # BGRX, the usual one
        words = np.zeros(pixels.shape[:2], np.uint32)
        for channel, mask in enumerate(masks[:3]):
            words |= pixels[:, :, channel].astype(np.uint32) << ((mask & -mask).bit_length() - 1)
        data = bmp_file(words[::-1].astype("<u4").tobytes(), 9, 7, 32, compression=3, masks=masks,
                        header_size=header_size)
        np.testing.assert_array_equal(decode(tf.constant(data)).numpy(), pixels, err_msg=str(masks))
        assert_same_as_pil(decode, data)
    # 16-bit 5-6-5 bitfields (tf.io.decode_bmp read no 16-bit BMP at all)
    words = np.random.default_rng(4).integers(0, 65536, (7, 10)).astype("<u2")
    assert_same_as_pil(decode, bmp_file(words[::-1].tobytes(), 10, 7, 16, 3, (0xF800, 0x7E0, 0x1F, 0)))
    # A layout Pillow refuses is refused, with the reason.
    odd = bmp_file(bytes(7 * 9 * 4), 9, 7, 32, compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported BMP bitfields layout"):
        decode(tf.constant(odd))


RLE_PALETTE = bytes(np.random.default_rng(5).integers(0, 256, 16 * 4, dtype=np.uint8))


def test_rle8_bmp_as_large_as_its_raw_pixels_is_decoded_as_rle(decode):
    # 4x2 pixels: raw rows take 4 bytes each, and so does each row's run + end of line here, so
    # the file's size matched raw data and tf.io.decode_bmp read the RLE codes as pixels.
    rle = bytes([4, 7, 0, 0]) + bytes([4, 9, 0, 1])  # row 0 (bottom): 4 x index 7; row 1: 4 x index 9
    data = bmp_file(rle, 4, 2, 8, compression=1, palette=RLE_PALETTE)
    assert len(rle) == 4 * 2
    got = decode(tf.constant(data)).numpy()
    palette = np.frombuffer(RLE_PALETTE, np.uint8).reshape(16, 4)[:, 2::-1]
    np.testing.assert_array_equal(got, np.stack([np.tile(palette[9], (4, 1)), np.tile(palette[7], (4, 1))]))
    assert_same_as_pil(decode, data)


def test_rle_bmps_decode_as_in_pil(decode):
    indices = np.random.default_rng(6).integers(0, 16, (6, 10))
    absolute = b"".join(b"\0\x0a" + bytes(row.astype(np.uint8)) + b"\0\0" for row in indices) + b"\0\1"
    runs = b"".join(b"".join(bytes([2, v]) for v in row[::2]) + b"\0\0" for row in indices) + b"\0\1"
    nibbles = b"".join(b"\0\x0a" + bytes((row[0::2] * 16 + row[1::2]).astype(np.uint8)) + b"\0" + b"\0\0"
                       for row in indices) + b"\0\1"
    for data in (bmp_file(absolute, 10, 6, 8, 1, palette=RLE_PALETTE),
                 bmp_file(runs, 10, 6, 8, 1, palette=RLE_PALETTE),
                 bmp_file(nibbles, 10, 6, 4, 2, palette=RLE_PALETTE)):
        assert_same_as_pil(decode, data)
    # Runs stop at the row's end (Pillow's rule), so three runs of 10 fill one row; then the end.
    short = bmp_file(b"\x0a\x01" * 3 + b"\0\1", 10, 6, 8, 1, palette=RLE_PALETTE)
    with pytest.raises(ValueError, match="not enough image data"):
        pil_rgb(short)
    with pytest.raises(tf.errors.InvalidArgumentError, match="truncated RLE BMP: 10 of 60 pixels"):
        decode(tf.constant(short))


def test_other_bmp_depths_decode_as_in_pil(decode):
    rng = np.random.default_rng(7)
    indices = rng.integers(0, 16, (6, 10))
    packed = (indices[:, 0::2] * 16 + indices[:, 1::2]).astype(np.uint8)
    four_bit = b"".join(bytes(row) + b"\0\0\0" for row in packed[::-1])
    one_bit = b"".join(np.packbits(row % 2).tobytes() + b"\0\0" for row in indices[::-1])
    words = rng.integers(0, 65536, (6, 10)).astype("<u2")
    for data in (bmp_file(four_bit, 10, 6, 4, palette=RLE_PALETTE),
                 bmp_file(one_bit, 10, 6, 1, palette=RLE_PALETTE[:8]),
                 bmp_file(words[::-1].tobytes(), 10, 6, 16)):  # 16-bit 5-5-5
        assert_same_as_pil(decode, data)


def test_bmp_data_offset_zero_means_right_after_the_header_as_in_pil(decode):
    # Found by the fuzz run: Pillow reads pixel data at offset 0 from where its header reading
    # stopped (after the palette, or after the masks that follow a 40-byte header).
    rng = np.random.default_rng(8)
    indices = rng.integers(0, 2, (6, 32))
    one_bit = b"".join(np.packbits(row).tobytes() for row in indices[::-1])
    pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    masked = np.dstack([pixels[:, :, ::-1], np.zeros((6, 8, 1), np.uint8)])[::-1].tobytes()
    for data in (bmp_file(one_bit, 32, 6, 1, palette=RLE_PALETTE[:8]),
                 bmp_file(masked, 8, 6, 32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0))):
        data = data[:10] + b"\0\0\0\0" + data[14:]
        assert_same_as_pil(decode, data)


def test_bmp_grey_palette_is_read_as_grey_levels_as_in_pil(decode):
    # Found by the fuzz run: a 1-bit BMP listing one colour (black) has a "grey" palette for
    # Pillow, which then reads bit 1 as white rather than as a missing (black) entry.
    indices = np.random.default_rng(9).integers(0, 2, (6, 32))
    one_bit = b"".join(np.packbits(row).tobytes() for row in indices[::-1])
    data = bmp_file(one_bit, 32, 6, 1, palette=b"\0\0\0\0")
    np.testing.assert_array_equal(decode(tf.constant(data)).numpy()[:, :, 0], indices * 255)
    assert_same_as_pil(decode, data)
    # 8-bit with a 4-entry grey ramp: indices past the ramp are grey levels too.
    levels = np.random.default_rng(10).integers(0, 256, (6, 8)).astype(np.uint8)
    ramp = b"".join(bytes([i, i, i, 0]) for i in range(4))
    assert_same_as_pil(decode, bmp_file(levels[::-1].tobytes(), 8, 6, 8, palette=ramp))


def test_gif_and_rle_loops_are_bounded(processor, decode):
    # One loop step per GIF block / sub-block / stray byte and per RLE command: a file made of
    # them would buy decode time by the megabyte, so both loops stop at a fixed count.
    lzw = gif_lzw_literal(np.zeros(3000, np.int64), 2)
    tiny_blocks = b"".join(b"\x01" + lzw[i:i + 1] for i in range(len(lzw))) + b"\0"
    header = b"GIF89a" + struct.pack("<HHBBB", 60, 50, 0x81, 0, 0) + PALETTE
    image = b"," + struct.pack("<HHHHB", 0, 0, 60, 50, 0) + b"\x02"
    assert_same_as_pil(decode, header + image + tiny_blocks + b";")  # 1-byte sub-blocks: fine
    # Stray bytes between blocks are skipped (as Pillow does), 64 to a step.
    assert_same_as_pil(decode, header + b"\x99" * 50_000 + image + gif_sub_blocks(lzw) + b";")
    # A comment made of more 1-byte sub-blocks than the walk may take is refused.
    comment = b"\x21\xfe" + b"\x01c" * MAX_GIF_STEPS + b"\0"
    endless = header + comment + image + gif_sub_blocks(lzw) + b";"
    with pytest.raises(ImageDecodeError, match=f"GIF takes more than {MAX_GIF_STEPS} blocks"):
        processor.decode_bytes(endless)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"GIF takes more than {MAX_GIF_STEPS} blocks"):
        decode(tf.constant(endless))
    # Full 255-byte sub-blocks (what encoders write) pass 64 at a time: a 600x500 frame is fine.
    big = gif_lzw_literal(np.ones(600 * 500, np.int64), 2)
    assert len(big) // 255 > 400
    assert_same_as_pil(decode, header[:6] + struct.pack("<HHBBB", 600, 500, 0x81, 0, 0) + PALETTE
                       + b"," + struct.pack("<HHHHB", 0, 0, 600, 500, 0) + b"\x02" + gif_sub_blocks(big) + b";")
    # RLE: runs cut to nothing at the row's end are still commands.
    zero_pixel_runs = b"\x04\x01" + b"\x01\x01" * MAX_RLE_COMMANDS + b"\0\1"
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"RLE BMP needs more than {MAX_RLE_COMMANDS} commands"):
        decode(tf.constant(bmp_file(zero_pixel_runs, 4, 2, 8, 1, palette=RLE_PALETTE)))


# -- files read from disk -------------------------------------------------------------------
def test_image_files_larger_than_the_read_bound_are_refused_before_reading(tmp_path, processor):
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(MAX_IMAGE_FILE_BYTES + 1)  # sparse: nothing is written, the size is what counts
    message = rf"huge.png\): file of {MAX_IMAGE_FILE_BYTES + 1:,} bytes, more than the {MAX_IMAGE_FILE_BYTES:,}"
    # The processor (what `align-tf classify` reads files with) and the serving client's encoder.
    with pytest.raises(ImageSizeError, match=message):
        processor([str(path)])
    with pytest.raises(ImageSizeError, match=message):
        encode_images([str(path)])
    with pytest.raises(ImageSizeError, match="more than the 1,000 bytes"):
        read_image_file("/dev/zero", max_bytes=1000)  # a size of 0 on disk, endless when read
    # `align-tf data` (the TFRecord writer) skips it with the reason, and writes the rest.
    from align_tf.data.tfrecord import write_tfrecords

    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    summary = write_tfrecords([(str(path), "huge"), (str(good), "fine")], str(tmp_path / "out" / "pairs"))
    assert summary.written == 1
    assert summary.skipped == [(str(path), f"file of {MAX_IMAGE_FILE_BYTES + 1:,} bytes, more than the "
                                           f"{MAX_IMAGE_FILE_BYTES:,} read into memory for an image")]
