"""Bounded in-graph decoding of JPEG, PNG, GIF (first frame) and BMP as TensorFlow graph code:
headers are read with string ops and checked before any pixel is allocated, and GIF and BMP are
read as Pillow reads them (so as the reference processor sees them)."""

from __future__ import annotations

import tensorflow as tf

# Formats recognised from their first bytes; index 0 means "none of them".
FORMATS = ("unknown", "JPEG", "PNG", "GIF", "BMP")
_JPEG, _PNG, _GIF, _BMP = 1, 2, 3, 4


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


def header_facts(image_bytes: tf.Tensor) -> dict:
    """The format, height and width from the headers alone, plus what bounds the decode: the JPEG scan count, the GIF walk
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


def decode_image(image_bytes: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """uint8 [H, W, 3] RGB from JPEG / PNG / GIF (first frame) / BMP bytes; graph-safe.

    Refuses unknown formats, empty sizes, headers declaring more than `max_pixels` and JPEGs
    with more than MAX_JPEG_SCANS scans before decoding; a GIF's later frames are never
    decoded. Alpha is dropped (as PIL's `convert("RGB")`), grey and palettes expanded,
    16-bit PNG samples reduced to 8 bits by their high byte (`value >> 8`); GIF and BMP
    pixels equal Pillow's (see _decode_gif, _decode_bmp).
    """
    data = tf.convert_to_tensor(image_bytes, tf.string)
    facts = header_facts(data)
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
            height * width <= max_pixels,
            [
                tf.strings.join(
                    [
                        "image header declares ",
                        tf.strings.as_string(width),
                        "x",
                        tf.strings.as_string(height),
                        f" pixels, more than max_pixels={max_pixels}",
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
