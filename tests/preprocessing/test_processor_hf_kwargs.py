"""AlignProcessor called like transformers' AlignProcessor: positional order, call-time options
(flat, per modality, common), return_tensors, decode / batch_decode; each against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.preprocessing import AlignProcessor
from support import build_corpus, write_processor_files

transformers = pytest.importorskip("transformers")

TEXTS = ["a photo of a cat", "Two dogs, playing in the snow!", "hi",
         " ".join(["a long caption about many things"] * 15)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Real bert-base-uncased vocab; align-base's tokenizer and preprocessor configs, smaller sizes."""
    return write_processor_files(tmp_path_factory.mktemp("processor"), size=60, crop_size=48)


@pytest.fixture(scope="module")
def processors(folder):
    reference = transformers.AlignProcessor(
        image_processor=transformers.EfficientNetImageProcessor.from_pretrained(str(folder)),
        tokenizer=transformers.BertTokenizer.from_pretrained(str(folder)))
    return AlignProcessor.from_pretrained(str(folder)), reference


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (71, 93, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8))]


def as_lists(value):
    if isinstance(value, tf.RaggedTensor):
        return value.to_list()
    return np.asarray(value).tolist()


def assert_rows_equal(got, expected):
    """Row for row; the one documented difference: padding="max_length" without truncation gives
    the reference rows of different lengths (64 and longer), ours one rectangle (more padding)."""
    assert len(got) == len(expected)
    for row, reference_row in zip(got, expected):
        assert row[:len(reference_row)] == reference_row
        assert set(row[len(reference_row):]) <= {0}
    assert len({len(r) for r in got}) == 1 or len({len(r) for r in expected}) > 1


TEXT_CASES = [
    dict(padding=True),
    dict(padding="longest"),
    dict(padding="max_length", max_length=24, truncation=True),
    dict(padding="max_length"),
    dict(padding=False),
    dict(padding="do_not_pad", truncation=True, max_length=10),
    dict(padding=True, truncation=True, max_length=12),
    dict(padding=True, return_attention_mask=False),
    dict(padding=True, return_token_type_ids=False),
]


@pytest.mark.parametrize("options", TEXT_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_text_options_equal_the_reference(processors, options):
    ours, reference = processors
    expected = reference(text=TEXTS, **options)  # lists (no return_tensors)
    got = ours(text=TEXTS, **options)
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key in expected:
        assert_rows_equal(as_lists(got[key]), expected[key])
    if options.get("padding") in (False, "do_not_pad"):
        assert isinstance(got["input_ids"], tf.RaggedTensor)


IMAGE_CASES = [
    dict(size={"height": 50, "width": 70}),
    dict(crop_size={"height": 30, "width": 20}),
    dict(do_center_crop=False),
    dict(do_resize=False, crop_size={"height": 32, "width": 32}),
    dict(resample=3),
    dict(do_rescale=False),
    dict(rescale_factor=1 / 255, rescale_offset=False),
    dict(do_normalize=True, image_mean=[0.2, 0.4, 0.6], image_std=[0.3, 0.5, 0.7]),
]


@pytest.mark.parametrize("options", IMAGE_CASES, ids=lambda o: ",".join(f"{k}" for k in o))
def test_image_options_give_the_reference_pixels(processors, images, options):
    ours, reference = processors
    expected = reference(images=images, return_tensors="np", **options)["pixel_values"]
    got = ours(images=images, return_tensors="np", **options)["pixel_values"]
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, expected.transpose(0, 2, 3, 1))  # bit-identical
    nchw = ours(images=images, return_tensors="np", data_format="channels_first", **options)
    np.testing.assert_array_equal(nchw["pixel_values"], expected)


def test_default_truncation_is_the_documented_difference(processors):
    ours, reference = processors
    # Without options ours truncates to 64 (as Kakao's pipeline); the reference does not.
    assert len(reference(text=TEXTS)["input_ids"][3]) > 64
    assert ours(text=TEXTS)["input_ids"].shape == (len(TEXTS), 64)
    assert_rows_equal(as_lists(ours(text=TEXTS, truncation=False)["input_ids"]),
                      reference(text=TEXTS)["input_ids"])


def test_documented_per_modality_call_and_positional_order(processors, images):
    ours, reference = processors
    kwargs = dict(images_kwargs={"crop_size": {"height": 40, "width": 40}},
                  text_kwargs={"padding": "do_not_pad"}, common_kwargs={"return_tensors": "np"})
    expected = reference(images=images[0], text=["What is that?"], **kwargs)
    got = ours(images=images[0], text=["What is that?"], **kwargs)
    np.testing.assert_array_equal(got["pixel_values"][0], expected["pixel_values"][0].transpose(1, 2, 0))
    assert [r.tolist() for r in got["input_ids"]] == expected["input_ids"].tolist()
    # images first, then text, positionally too
    positional = ours(images[0], ["What is that?"], **kwargs)
    np.testing.assert_array_equal(positional["pixel_values"], got["pixel_values"])
    # flat options win over common_kwargs
    flat = ours(text=TEXTS[:2], common_kwargs={"padding": "max_length"}, padding=True)
    assert flat["input_ids"].shape[1] == len(reference(text=TEXTS[:2], padding=True)["input_ids"][0])


def test_return_tensors(processors, images):
    ours, _ = processors
    assert isinstance(ours(text=TEXTS, return_tensors="np")["input_ids"], np.ndarray)
    assert isinstance(ours(text=TEXTS, return_tensors=None)["input_ids"], list)
    assert isinstance(ours(images=images, return_tensors="tf")["pixel_values"], tf.Tensor)
    jnp = pytest.importorskip("jax.numpy")
    out = ours(text=TEXTS, images=images, return_tensors="jax")
    assert isinstance(out["input_ids"], jnp.ndarray) and isinstance(out["pixel_values"], jnp.ndarray)


def test_bad_options_are_named(processors):
    ours, _ = processors
    with pytest.raises(TypeError, match="paddding"):
        ours(text=TEXTS, paddding=True)
    with pytest.raises(TypeError, match="images_kwargs: 'padding'"):
        ours(text=TEXTS, images_kwargs={"padding": True})
    with pytest.raises(ValueError, match="'padding' was given twice"):
        ours(text=TEXTS, padding="max_length", text_kwargs={"padding": "do_not_pad"})
    with pytest.raises(ValueError, match="padding must be"):
        ours(text=TEXTS, padding="sideways")
    with pytest.raises(ValueError, match="return_tensors"):
        ours(text=TEXTS, return_tensors="pt")


def test_batch_decode_equals_the_reference(processors):
    ours, reference = processors
    texts = build_corpus(size=400, seed=3)
    ids = reference.tokenizer(texts, padding=True)["input_ids"]
    for skip in (False, True):
        for clean in (False, True):
            expected = reference.batch_decode(ids, skip_special_tokens=skip,
                                              clean_up_tokenization_spaces=clean)
            got = ours.batch_decode(np.array(ids), skip_special_tokens=skip,
                                    clean_up_tokenization_spaces=clean)
            mismatches = [(e, g) for e, g in zip(expected, got) if e != g]
            assert not mismatches, (skip, clean, mismatches[:3])
    ragged = ours(text=texts[:20], padding=False)["input_ids"]
    assert ours.batch_decode(ragged) == reference.batch_decode(
        reference(text=texts[:20], padding=False)["input_ids"])
    assert ours.decode(ids[5]) == reference.decode(ids[5])


@pytest.mark.parametrize("clean_up", [None, True, False])
def test_decode_defaults_follow_the_tokenizer_config(folder, tmp_path, clean_up):
    """With default arguments, decode / batch_decode clean up spaces as the tokenizer config says
    (`clean_up_tokenization_spaces`), and as transformers 5 does when it says nothing (no
    clean-up: "don ' t"). 400 texts, each mode against the reference read from the same files."""
    import json
    import shutil

    for name in ("vocab.txt", "preprocessor_config.json"):
        shutil.copyfile(folder / name, tmp_path / name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert "clean_up_tokenization_spaces" not in config  # align-base's published config has none
    if clean_up is not None:
        config["clean_up_tokenization_spaces"] = clean_up
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    reference = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    ours = AlignProcessor.from_pretrained(str(tmp_path))

    texts = build_corpus(size=400, seed=11) + ["xxx don't stop", "it's a dog , isn't it ?"]
    ids = reference(texts, padding=True)["input_ids"]
    expected = reference.batch_decode(ids)
    assert ours.batch_decode(np.array(ids)) == expected
    assert [ours.decode(row) for row in ids[-2:]] == [reference.decode(row) for row in ids[-2:]]
    assert ours.tokenizer.decode(ids[-2]) == expected[-2]
    cleaned = "[CLS] xxx don't stop [SEP]" in expected[-2]
    assert cleaned == bool(clean_up), expected[-2]  # the two modes really differ on this text
    # Saved and read back (by us and by transformers), the setting stays.
    ours.save_pretrained(str(tmp_path / "saved"))
    assert AlignProcessor.from_pretrained(str(tmp_path / "saved")).batch_decode(ids[-2:]) == expected[-2:]
    assert transformers.BertTokenizer.from_pretrained(str(tmp_path / "saved")).batch_decode(ids[-2:]) == expected[-2:]
