"""Memory and time of the decoder on issue 14's hostile files, each in a fresh child process:
what AlignImageProcessor.decode_bytes costs now, and (with --before) what the plain TF op the
decoder used to call (tf.io.decode_gif / decode_jpeg) costs on the same bytes.

    python benchmarks/bench_decoder_bounds.py --before --out benchmarks/results/decoder_bounds.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def gif(screen, frames) -> bytes:
    """frames: (left, top, width, height, lzw bytes)."""
    from support import gif_sub_blocks

    body = b""
    for left, top, width, height, data in frames:
        body += b"," + struct.pack("<HHHHB", left, top, width, height, 0) + b"\x02" + gif_sub_blocks(data)
    return (b"GIF89a" + struct.pack("<HHBBB", *screen, 0x81, 0, 0) + bytes(range(12)) + body + b";")


def hostile_files() -> dict[str, bytes]:
    import numpy as np
    from PIL import Image

    from support import gif_lzw_literal as lzw_literal

    big_frame = gif((1, 1), [(0, 0, 40000, 60000, lzw_literal([1] * 4000))])
    # A 3000x3000 first frame of one colour, then 60 frames of one changed pixel each (Pillow
    # writes those as 1x1 frames): tf.io.decode_gif returns every frame at full size.
    first = Image.new("P", (3000, 3000), 1)
    first.putpalette(list(range(12)) + [0] * 756)
    later = []
    for i in range(60):
        frame = first.copy()
        frame.putpixel((i, i), 2)
        later.append(frame)
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=later, duration=20, optimize=False)
    many = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(
        buffer, "JPEG", quality=90, progressive=True)
    jpeg = buffer.getvalue()
    start, end = jpeg.rindex(b"\xff\xda"), jpeg.rindex(b"\xff\xd9")
    scans = jpeg[:end] + jpeg[start:end] * 1000 + jpeg[end:]
    return {
        "gif_40000x60000_frame_on_1x1_screen": big_frame,
        "gif_3000x3000_then_60_one_pixel_frames": many,
        "jpeg_256x256_refinement_scan_x1000": scans,
    }


CHILD = r"""
import json, resource, sys, time
import tensorflow as tf
from align_tf.preprocessing.image import AlignImageProcessor
data = open(sys.argv[1], "rb").read()
how = sys.argv[2]
processor = AlignImageProcessor()
processor.decode_bytes(open(sys.argv[3], "rb").read())  # build the graphs first
tf.io.decode_gif(open(sys.argv[4], "rb").read())
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = rss()
start = time.perf_counter()
try:
    if how == "now":
        out = processor.decode_bytes(data)
    elif data[:3] == b"GIF":
        out = tf.io.decode_gif(data).numpy()
    else:
        out = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy()
    outcome = "decoded " + "x".join(map(str, out.shape))
except Exception as e:
    outcome = type(e).__name__ + ": " + str(e).splitlines()[0][:160]
print(json.dumps({"outcome": outcome, "seconds": round(time.perf_counter() - start, 3),
                  "peak_rss_growth_mb": round(rss() - before, 1)}))
"""


def main(argv=None) -> int:
    import tempfile

    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", action="store_true", help="also time the plain TF op (the old path)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm_png, warm_gif = os.path.join(tmp, "warm.png"), os.path.join(tmp, "warm.gif")
        Image.new("RGB", (8, 8)).save(warm_png)
        Image.new("P", (8, 8)).save(warm_gif)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                   TF_CPP_MIN_LOG_LEVEL="3")
        for name, data in hostile_files().items():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            results[name] = {"file_bytes": len(data)}
            for how in ("now", "tf_op") if args.before else ("now",):
                if how == "tf_op" and name.startswith("gif_40000"):
                    results[name][how] = "not run: the issue measured 2.4 GB growth"
                    continue
                done = subprocess.run([sys.executable, "-c", CHILD, path, how, warm_png, warm_gif],
                                      capture_output=True, text=True, env=env, timeout=900)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                results[name][how] = json.loads(lines[-1]) if lines else f"exit {done.returncode}: {done.stderr[-300:]}"
                print(name, how, results[name][how], flush=True)
    result = {"command": "python benchmarks/bench_decoder_bounds.py " + " ".join(argv or sys.argv[1:]),
              "results": results}
    sys.path.insert(0, HERE)
    from machine_info import machine_info

    result["machine"] = machine_info()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
