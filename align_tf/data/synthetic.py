"""The demo task: captioned images of one coloured shape on a light background, generated on the fly.

Every image holds one shape (circle, square, triangle, star) in one named colour (red, green,
blue, yellow, purple, orange): 24 classes. The shape spans 20-60% of the image side at a random
position, upright but tilted up to 20 degrees; the background is a random
light tone; colours jitter around their named value. Captions come from templates and
paraphrases ("a red circle", "a photo of a red circle.", "red round shape", ...), so a model
must learn the words, not one fixed string. Zero-shot evaluation uses fresh images and the
class names `"{colour} {shape}"`.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import numpy as np
from align_tf.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 155, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 25),
    "purple": (135, 55, 175),
    "orange": (245, 130, 20),
}
# Words a caption may use for each shape.
SHAPE_WORDS = {
    "circle": ("circle", "round shape", "disc"),
    "square": ("square", "box", "square shape"),
    "triangle": ("triangle", "triangular shape"),
    "star": ("star", "star shape"),
}
CAPTION_TEMPLATES = (
    "{a} {colour} {shape}",
    "a photo of {a} {colour} {shape}.",
    "a photo of {a} {colour} {shape}",
    "{colour} {shape}",
    "a picture of {a} {colour} {shape}",
    "{a} {shape} that is {colour}",
    "a drawing of {a} {colour} {shape}.",
    "the {shape} is {colour}",
    "an image of {a} {colour} {shape}",
    "{colour} {shape} on a light background",
    "a {colour} colored {shape}",
    "this is {a} {colour} {shape}.",
)
SIZE_RANGE = (0.2, 0.6)  # the shape's extent as a fraction of the image side
MAX_TILT = 0.35  # radians (20 degrees) either way
SUPERSAMPLE = 4  # draw large, then downscale: smooth (antialiased) edges


@dataclass
class ShapeExample:
    image: np.ndarray | bytes  # uint8 [H, W, 3], or encoded JPEG / PNG bytes
    caption: str
    class_name: str  # "{colour} {shape}"
    colour: str
    shape: str


def class_names(shapes=SHAPES, colours=tuple(COLOURS)) -> list[str]:
    """Every "{colour} {shape}" class, colour-major: "red circle", "red square", ..."""
    return [f"{colour} {shape}" for colour in colours for shape in shapes]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(rng: np.random.Generator, colour: str, shape: str) -> str:
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    words = SHAPE_WORDS[shape]
    shape_word = words[rng.integers(len(words))]
    # The article goes before the colour when the colour comes first, else before the shape.
    first = colour if template.index("{colour}") < template.index("{shape}") else shape_word
    return template.format(a=_article(first), colour=colour, shape=shape_word)


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple]:
    if shape == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners]
    if shape == "triangle":
        corners = [angle - math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners]
    if shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * 0.42
            a = angle - math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return points
    raise ConfigError(f"shape must be one of {SHAPES}, got {shape!r}")


def draw_shape(rng: np.random.Generator, colour: str, shape: str, image_size: int = 64) -> np.ndarray:
    """uint8 [image_size, image_size, 3]: one `colour` `shape` on a light background."""
    from PIL import Image, ImageDraw

    if colour not in COLOURS:
        raise ConfigError(f"colour must be one of {tuple(COLOURS)}, got {colour!r}")
    big = image_size * SUPERSAMPLE
    base = rng.uniform(200, 250)
    background = tuple(int(np.clip(base + rng.uniform(-10, 10), 185, 255)) for _ in range(3))
    fill = tuple(int(np.clip(c + rng.uniform(-18, 18), 0, 255)) for c in COLOURS[colour])
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)

    extent = rng.uniform(*SIZE_RANGE) * big  # diameter, side, or star width in pixels
    # Circumradius: the circle's radius, the square's half-diagonal, the equilateral
    # triangle's side / sqrt(3), the star's outer radius. It is also the margin that keeps
    # the shape inside the image at any rotation.
    radius = {"circle": extent / 2, "square": extent / math.sqrt(2),
              "triangle": extent / math.sqrt(3), "star": extent / 2}[shape]
    margin = min(radius, big / 2)
    cx = rng.uniform(margin, big - margin)
    cy = rng.uniform(margin, big - margin)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        # Shapes stand upright, tilted a little (a square turned 45 degrees reads as a diamond).
        angle = rng.uniform(-MAX_TILT, MAX_TILT)
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=fill)
    small = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def encode_image(image: np.ndarray, image_format: str = "jpeg", quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image_format = image_format.lower()
    if image_format in ("jpeg", "jpg"):
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    elif image_format == "png":
        Image.fromarray(image).save(buffer, format="PNG")
    else:
        raise ConfigError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    return buffer.getvalue()


def make_example(rng: np.random.Generator, image_size: int = 64, image_format: str | None = None,
                 shapes=SHAPES, colours=tuple(COLOURS)) -> ShapeExample:
    """One random example; `image_format` "jpeg" / "png" gives encoded bytes, None an array."""
    colour = colours[rng.integers(len(colours))]
    shape = shapes[rng.integers(len(shapes))]
    image = draw_shape(rng, colour, shape, image_size)
    if image_format is not None:
        image = encode_image(image, image_format, quality=int(rng.integers(80, 96)))
    return ShapeExample(image, make_caption(rng, colour, shape), f"{colour} {shape}", colour, shape)


def generate(count: int, seed: int = 0, image_size: int = 64, shapes=SHAPES,
             colours=tuple(COLOURS)) -> tuple[np.ndarray, list[str], list[str]]:
    """`count` examples as (uint8 images [count, S, S, 3], captions, class names); the same
    seed gives the same examples."""
    rng = np.random.default_rng(seed)
    examples = [make_example(rng, image_size, None, shapes, colours) for _ in range(count)]
    images = np.stack([e.image for e in examples]) if examples else np.zeros(
        (0, image_size, image_size, 3), np.uint8)
    return images, [e.caption for e in examples], [e.class_name for e in examples]


def write_demo_set(folder: str, count: int, seed: int = 0, image_size: int = 64,
                   image_format: str = "jpeg") -> str:
    """Write `count` examples as `images/NNNNN.jpg|png` plus `captions.tsv` (`image<TAB>caption`
    per line, paths relative to the folder) and `classes.tsv` (`image<TAB>class name`).
    Returns the captions.tsv path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    extension = "png" if image_format.lower() == "png" else "jpg"
    caption_lines, class_lines = [], []
    for i in range(count):
        example = make_example(rng, image_size, image_format)
        name = f"images/{i:05d}.{extension}"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(example.image)
        caption_lines.append(f"{name}\t{example.caption}\n")
        class_lines.append(f"{name}\t{example.class_name}\n")
    with open(os.path.join(folder, "classes.tsv"), "w", encoding="utf-8") as f:
        f.writelines(class_lines)
    path = os.path.join(folder, "captions.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(caption_lines)
    return path
