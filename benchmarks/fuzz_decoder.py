"""Seeded mutation fuzz of the in-graph image decoder and the tokenizer (issue 14).

Four targets, each fed `--cases` inputs:
  decoder_eager        AlignImageProcessor.decode_bytes on mutated JPEG / PNG / GIF / BMP files
  decoder_saved_model  the same kind of files through an exported SavedModel's `embed_image`
  tokenizer_eager      AlignTokenizer on random Unicode (str, and bytes that need not be UTF-8)
  tokenizer_saved_model  the same kind of texts through the SavedModel's `embed_text`
The rule: every case ends in a result or a named error (ImageDecodeError / TextInputError
eagerly, tf.errors.InvalidArgumentError inside graphs); nothing else, no crash, no case longer
than --hang-s seconds (a watchdog ends the run and names the case). Eager decodes that succeed
are also compared with Pillow's `convert("RGB")` (reported, not a failure: mutated files are
where decoders may legitimately differ).

    python benchmarks/fuzz_decoder.py --cases 2500 --out benchmarks/results/fuzz_decoder.json
    python benchmarks/fuzz_decoder.py --cases 150           # the size tests/preprocessing run

Exit status 0 when the rule held, 1 otherwise (the JSON says which case; failing inputs are
written next to it under fuzz_failures/).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import resource
import struct
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

TARGETS = ("decoder_eager", "decoder_saved_model", "tokenizer_eager", "tokenizer_saved_model")


# -- seeds -------------------------------------------------------------------------------------
def seed_images() -> dict[str, bytes]:
    """Small valid files of every supported kind (Pillow writes most; GIF/BMP variants Pillow
    cannot write are crafted)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    photo = Image.fromarray(pixels)
    rgba = photo.copy()
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8)))

    def encode(image, fmt, **kwargs):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        return buffer.getvalue()

    animated = io.BytesIO()
    photo.convert("P").save(animated, "GIF", save_all=True, duration=50,
                            append_images=[photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")])
    seeds = {
        "jpeg_baseline": encode(photo, "JPEG", quality=90),
        "jpeg_progressive": encode(photo, "JPEG", quality=90, progressive=True),
        "jpeg_grey": encode(photo.convert("L"), "JPEG"),
        "png_rgb": encode(photo, "PNG"),
        "png_rgba": encode(rgba, "PNG"),
        "png_palette": encode(photo.convert("P"), "PNG", transparency=0),
        "png_grey": encode(photo.convert("L"), "PNG"),
        "gif": encode(photo.convert("P"), "GIF"),
        "gif_transparent": encode(photo.convert("P"), "GIF", transparency=3),
        "gif_animated": animated.getvalue(),
        "bmp_24": encode(photo, "BMP"),
        "bmp_8": encode(photo.convert("P"), "BMP"),
        "bmp_1": encode(photo.convert("1"), "BMP"),
        "bmp_32_bitfields": _bmp(np.dstack([pixels, pixels[:, :, :1]]).tobytes(), 32, 24, 32, 3,
                                 masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000)),
        "bmp_rle8": _bmp(b"".join(bytes([4, v]) for v in rng.integers(0, 16, 8 * 6)) + b"\0\1", 32, 6, 8, 1,
                         palette=bytes(rng.integers(0, 256, 64, dtype=np.uint8))),
    }
    return seeds


def _bmp(pixel_data: bytes, width, height, bits, compression, masks=None, palette=b""):
    fields = struct.pack("<IiiHHIIiiII", 124 if masks else 40, width, height, 1, bits, compression,
                         len(pixel_data), 0, 0, len(palette) // 4, 0)
    info = fields + (struct.pack("<IIII", *masks) + b"\0" * 68 if masks else b"")
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixel_data), 0, 0, offset) + info + palette + pixel_data


# -- mutations ---------------------------------------------------------------------------------
INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """1-4 random edits: bit flips, interesting bytes, header-field overwrites, deletions,
    duplicated chunks (repeated JPEG scans, GIF blocks), insertions, truncation."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not out:
            out = bytearray(b"\0")
        kind = int(rng.integers(0, 8))
        at = int(rng.integers(0, len(out)))
        if kind == 0:
            out[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            out[at] = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
        elif kind == 2:  # a header field: 2 or 4 bytes among the first 64, set large or small
            at = int(rng.integers(0, min(len(out), 64)))
            value = int(rng.choice([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, int(rng.integers(0, 1 << 16))]))
            size = int(rng.choice([2, 4]))
            out[at:at + size] = value.to_bytes(4, "little" if rng.random() < 0.5 else "big")[:size]
        elif kind == 3:
            del out[at:at + int(rng.integers(1, 64))]
        elif kind == 4:  # duplicate a chunk, up to 20 times
            chunk = bytes(out[at:at + int(rng.integers(1, 256))])
            out[at:at] = chunk * int(rng.integers(1, 21))
        elif kind == 5:
            out[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8))
        elif kind == 6:
            del out[at:]
        else:
            out[at:at + 8] = bytes(rng.integers(0, 256, 8, dtype=np.uint8))
    return bytes(out)


def random_text(rng: np.random.Generator):
    """Random Unicode: any code point (lone surrogates included), or chosen troublemakers
    (combining marks, zero-width and bidi controls, CJK, emoji, NUL, long words), sometimes as
    bytes that need not be UTF-8."""
    kind = int(rng.integers(0, 6))
    length = int(rng.choice([0, 1, 5, 30, 200, 3000]))
    if kind == 0:  # any code point below 0x110000
        text = "".join(chr(int(c)) for c in rng.integers(0, 0x110000, length))
    elif kind == 1:  # the Basic Multilingual Plane
        text = "".join(chr(int(c)) for c in rng.integers(0, 0x10000, length))
    elif kind == 2:
        pool = ["a", "B", " ", "\u0301", "\u200b", "\u200d", "\u202e", "\ufeff", "\x00", "\t", "\n",
                "\u4e00", "\U0001f600", "\U0001f1fa\U0001f1f8", "[CLS]", "[SEP]", "##", "\ufffd",
                "\udc80", "\ud800", "ß", "İ", "ﬁ", "Ⅻ", ".", "'", "-", "x" * 150]
        text = "".join(pool[int(i)] for i in rng.integers(0, len(pool), max(length // 3, 1)))
    elif kind == 3:  # ASCII words
        text = " ".join("".join(chr(int(c)) for c in rng.integers(32, 127, int(rng.integers(1, 12))))
                        for _ in range(max(length // 6, 1)))
    elif kind == 4:  # raw bytes, often not UTF-8
        return bytes(rng.integers(0, 256, length, dtype=np.uint8))
    else:  # valid UTF-8 of random code points, as bytes
        text = "".join(chr(int(c)) for c in rng.integers(0, 0x110000, length) if not 0xD800 <= c < 0xE000)
        return text.encode("utf-8")
    return text


# -- running -----------------------------------------------------------------------------------
class Watchdog:
    """Ends the process (exit 3) when one case runs longer than `limit` seconds, after writing
    what it knows; a hang cannot be interrupted from Python while a TF op runs."""

    def __init__(self, limit: float, on_hang):
        self.limit, self.on_hang = limit, on_hang
        self.started, self.case = None, None
        threading.Thread(target=self._watch, daemon=True).start()

    def start(self, case):
        self.case, self.started = case, time.monotonic()

    def stop(self):
        self.started = None

    def _watch(self):
        while True:
            time.sleep(0.5)
            started = self.started
            if started is not None and time.monotonic() - started > self.limit:
                self.on_hang(self.case)
                os._exit(3)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build_saved_model(folder: str):
    """A tiny ALIGN (real bert-base-uncased vocabulary, 32x32 crops) exported and loaded back."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops for loading)

    from align_tf.export import export_saved_model
    from support import tiny_model, tiny_processor

    processor = tiny_processor()
    path = export_saved_model(tiny_model(), processor, folder, version=1, warmup=False)
    return processor, tf.saved_model.load(path)


def run(args) -> dict:
    import tensorflow as tf
    from PIL import Image

    from align_tf.errors import ImageDecodeError, TextInputError

    rng = np.random.default_rng(args.seed)
    seeds = seed_images()
    names = sorted(seeds)
    tmp = tempfile.mkdtemp(prefix="fuzz_decoder_")
    t0 = time.perf_counter()
    processor, loaded = build_saved_model(os.path.join(tmp, "model"))
    setup_s = time.perf_counter() - t0
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    embed_image = loaded.signatures["embed_image"]
    embed_text = loaded.signatures["embed_text"]
    # Warm the graphs so the first case's time is the case's own.
    image_processor.decode_bytes(seeds["png_rgb"])
    embed_image(image_bytes=tf.constant([seeds["png_rgb"]]))
    tokenizer(["warm up"])
    embed_text(text=tf.constant(["warm up"]))
    rss_after_setup = peak_rss_mb()

    stats = {t: collections.Counter() for t in TARGETS}
    kinds = {t: collections.Counter() for t in TARGETS}
    slowest = {t: (0.0, None) for t in TARGETS}
    failures, pil_differences, current, pil_refusals = [], [], {}, collections.Counter()
    out_dir = os.path.dirname(os.path.abspath(args.out)) if args.out else tmp
    failure_dir = os.path.join(out_dir, "fuzz_failures")

    def record_failure(target, case, data, error):
        os.makedirs(failure_dir, exist_ok=True)
        path = os.path.join(failure_dir, f"{target}_{case}.bin")
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
        failures.append({"target": target, "case": case, "error": f"{type(error).__name__}: {str(error)[:300]}",
                         "input": os.path.relpath(path, ROOT)})

    def write(result):
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")

    def on_hang(case):
        write({"hang": case, "cases_done": {t: dict(s) for t, s in stats.items()}, "failures": failures})
        print(f"HANG: case {case} ran past {args.hang_s} s", file=sys.stderr)

    watchdog = Watchdog(args.hang_s, on_hang)

    def kind_of(error) -> str:
        """A short name for an error: its words, numbers and quoted bytes replaced by '#'."""
        from align_tf.preprocessing.image import decode_error_detail

        detail = decode_error_detail(error) if isinstance(error, tf.errors.OpError) else str(error)
        detail = detail.split(": ", 1)[-1] if detail.startswith(("image", "text")) else detail
        words = ["#" if any(ch.isdigit() for ch in word) or word.startswith("U+") else word for word in detail.replace(":", " ").split()]
        return " ".join(words[:8])

    def one(target, case, data, call, named):
        watchdog.start(f"{target} #{case}")
        start = time.perf_counter()
        try:
            call(data)
            outcome = "ok"
        except named as e:
            outcome = "clear_error"
            if isinstance(e, tf.errors.OpError):
                stats[target]["our_message" if "assertion failed" in e.message else "op_message"] += 1
            kinds[target][kind_of(e)] += 1
        except Exception as e:  # anything else breaks the rule
            outcome = "unexpected_error"
            record_failure(target, case, data, e)
        finally:
            watchdog.stop()
        elapsed = time.perf_counter() - start
        if elapsed > slowest[target][0]:
            slowest[target] = (elapsed, case)
        stats[target]["cases"] += 1
        stats[target][outcome] += 1
        return outcome

    def decode_eager(data):
        got = image_processor.decode_bytes(data)
        try:
            expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except Exception as e:
            stats["decoder_eager"]["pil_refused_we_decoded"] += 1
            pil_refusals[f"{current['seed'].split('_')[0]}: {str(e)[:50]}"] += 1
            return
        same = expected.shape == got.shape and bool((expected == got).all())
        stats["decoder_eager"]["pil_equal" if same else "pil_differs"] += 1
        if not same:
            path = os.path.join(failure_dir, f"pil_differs_{current['case']}.bin")
            os.makedirs(failure_dir, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            pixels = (f"max |difference| {int(np.abs(expected.astype(int) - got).max())}"
                      if expected.shape == got.shape else "")
            pil_differences.append({"case": current["case"], "seed": current["seed"], "ours": list(got.shape),
                                    "pil": list(expected.shape), "pixels": pixels,
                                    "input": os.path.relpath(path, ROOT)})

    def image_through_saved_model(data):
        out = embed_image(image_bytes=tf.constant([data]))["image_embeds"].numpy()
        assert out.shape[0] == 1 and np.isfinite(out).all(), out

    def tokenize_eager(text):
        tokenizer([text])

    def text_through_saved_model(text):
        value = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        out = embed_text(text=tf.constant([value]))["text_embeds"].numpy()
        assert out.shape[0] == 1 and np.isfinite(out).all(), out

    started = time.perf_counter()
    for case in range(args.cases):
        seed_name = names[case % len(names)]
        image = mutate(seeds[seed_name], rng)
        text = random_text(rng)
        stats["decoder_eager"][f"seed:{seed_name.split('_')[0]}"] += 1
        current.update(case=case, seed=seed_name)
        one("decoder_eager", case, image, decode_eager, (ImageDecodeError,))
        one("decoder_saved_model", case, mutate(seeds[seed_name], rng), image_through_saved_model,
            (tf.errors.InvalidArgumentError,))
        one("tokenizer_eager", case, text, tokenize_eager, (TextInputError,))
        one("tokenizer_saved_model", case, random_text(rng), text_through_saved_model,
            (tf.errors.InvalidArgumentError,))
        if args.progress and (case + 1) % args.progress == 0:
            print(f"{case + 1} cases, {time.perf_counter() - started:.0f} s, "
                  f"{len(failures)} unexpected", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - started

    result = {
        "command": "python benchmarks/fuzz_decoder.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "cases_per_target": args.cases,
        "seed_files": {k: len(v) for k, v in seeds.items()},
        "targets": {
            t: {"cases": stats[t]["cases"], "ok": stats[t]["ok"], "clear_errors": stats[t]["clear_error"],
                "unexpected_errors": stats[t]["unexpected_error"], "hangs": 0,
                "slowest_case_s": round(slowest[t][0], 3), "slowest_case": slowest[t][1],
                "error_kinds": dict(kinds[t].most_common(25)),
                **{k: v for k, v in stats[t].items()
                   if k not in ("cases", "ok", "clear_error", "unexpected_error")}}
            for t in TARGETS
        },
        "crashes": 0,  # a native crash ends the process before this file is written
        "hangs": 0,
        "hang_limit_s": args.hang_s,
        "failures": failures,
        "pil_differences": pil_differences,
        "pil_refused_we_decoded": dict(pil_refusals.most_common(20)),
        "setup_s": round(setup_s, 1),
        "fuzz_s": round(total_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_after_setup_mb": round(rss_after_setup, 1),
    }
    from machine_info import machine_info

    result["machine"] = machine_info()
    write(result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=150, help="cases per target (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-s", type=float, default=30.0, help="the longest one case may take")
    parser.add_argument("--out", help="JSON result file")
    parser.add_argument("--progress", type=int, default=0, help="print a line every N cases")
    args = parser.parse_args(argv)
    result = run(args)
    summary = {t: {k: v[k] for k in ("cases", "ok", "clear_errors", "unexpected_errors", "slowest_case_s")}
               for t, v in result["targets"].items()}
    print(json.dumps({"targets": summary, "peak_rss_mb": result["peak_rss_mb"], "fuzz_s": result["fuzz_s"]}, indent=2))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
