"""BERT uncased WordPiece tokenizer as TensorFlow graph code, token for token equal to Hugging Face's.

Over 450 lines for one reason: the character tables that make it equal to the Rust `tokenizers`
(about 60 lines of code point ranges) live beside the graph code that uses them; the rest is one
class (graph code, call options, decoding, the HF files) and its small helpers.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from align_tf.errors import AssetNotFoundError, ConfigError, TextInputError  # noqa: F401  (public here too)

VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"

# HF's WordPiece gives [UNK] for a word longer than this many characters (code points, not bytes).
MAX_CHARS_PER_WORD = 100

# Removed before anything else, as HF's BertNormalizer (Rust `tokenizers`) does: NUL, U+FFFD and
# Unicode "other" (Cc, Cf, Co, Cs) except tab / newline / carriage return. \x01, \x03 and \x04
# are kept out of this class because they are markers below (raw ones are turned into \x02 first).
_CONTROL = r"[\x00\x02\x05-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\p{Co}\p{Cs}\x{FFFD}\x{1734}]"
# HF maps tab, newline, carriage return and Unicode separators (Zs, Zl, Zp) to a space.
_WHITESPACE = r"[\t\n\r\p{Z}]"
# BERT's punctuation: ASCII symbol ranges plus Unicode P*; CJK ideographs are split like it.
_PUNCTUATION = r"[!-/:-@\[-`{-~\x04]|\p{P}"
# (`tokenizers` starts Extension E at U+2B920, not U+2B820: 256 ideographs stay letters there.)
_CJK = (
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
_SPLIT_OFF = f"({_PUNCTUATION}|{_CJK})"

# Markers that survive every normalisation step: a special token written in the text, a letter
# WordPiece cannot know, a symbol that is split off like punctuation.
_SPECIAL_MARK = "\x01"
_UNKNOWN_LETTER = "\x03"
_UNKNOWN_SYMBOL = "\x04"
# `tokenizers` 0.23 classifies characters with older Unicode tables than TensorFlow's RE2 / ICU.
# These code points, assigned or re-categorised since (Mn, Po, Cf, ...), are ordinary letters
# there (so their word becomes [UNK]); U+166D and U+111C9 are punctuation there; U+1734 is a
# removed mark there (it is in _CONTROL). Found by tokenizing every code point with both;
# tests/test_tokenizer.py checks all of them.
_RUST_LETTERS = (
    r"["
    r"\x{61D}\x{7FD}\x{890}-\x{891}\x{898}-\x{89F}\x{8CA}-\x{8E2}\x{9FD}-\x{9FE}\x{A76}"
    r"\x{AFA}-\x{AFF}\x{B55}\x{C04}\x{C3C}\x{C77}\x{C84}\x{D00}\x{D3B}-\x{D3C}\x{D81}\x{EBA}"
    r"\x{ECE}\x{180F}\x{1885}-\x{1886}\x{1ABF}-\x{1ACE}\x{1B7D}-\x{1B7E}\x{1DF6}-\x{1DFB}"
    r"\x{2E43}-\x{2E4F}\x{2E52}-\x{2E5D}\x{A82C}\x{A8C5}\x{A8FF}\x{A9BD}\x{10D24}-\x{10D27}"
    r"\x{10EAB}-\x{10EAD}\x{10EFD}-\x{10EFF}\x{10F46}-\x{10F50}\x{10F55}-\x{10F59}"
    r"\x{10F82}-\x{10F89}\x{11070}\x{11073}-\x{11074}\x{110C2}\x{110CD}\x{111CF}\x{1123E}"
    r"\x{11241}\x{1133B}\x{11438}-\x{1143F}\x{11442}-\x{11444}\x{11446}\x{1144B}-\x{1144F}"
    r"\x{1145A}-\x{1145B}\x{1145D}-\x{1145E}\x{11660}-\x{1166C}\x{116B9}\x{1182F}-\x{11837}"
    r"\x{11839}-\x{1183B}\x{1193B}-\x{1193C}\x{1193E}\x{11943}-\x{11946}\x{119D4}-\x{119D7}"
    r"\x{119DA}-\x{119DB}\x{119E0}\x{119E2}\x{11A01}-\x{11A0A}\x{11A33}-\x{11A38}"
    r"\x{11A3B}-\x{11A47}\x{11A51}-\x{11A56}\x{11A59}-\x{11A5B}\x{11A8A}-\x{11A96}"
    r"\x{11A98}-\x{11A9C}\x{11A9E}-\x{11AA2}\x{11B00}-\x{11B09}\x{11C30}-\x{11C36}"
    r"\x{11C38}-\x{11C3D}\x{11C3F}\x{11C41}-\x{11C45}\x{11C70}-\x{11C71}\x{11C92}-\x{11CA7}"
    r"\x{11CAA}-\x{11CB0}\x{11CB2}-\x{11CB3}\x{11CB5}-\x{11CB6}\x{11D31}-\x{11D36}\x{11D3A}"
    r"\x{11D3C}-\x{11D3D}\x{11D3F}-\x{11D45}\x{11D47}\x{11D90}-\x{11D91}\x{11D95}\x{11D97}"
    r"\x{11EF3}-\x{11EF4}\x{11EF7}-\x{11EF8}\x{11F00}-\x{11F01}\x{11F36}-\x{11F3A}\x{11F40}"
    r"\x{11F42}-\x{11F4F}\x{11FFF}\x{12FF1}-\x{12FF2}\x{13430}-\x{13440}\x{13447}-\x{13455}"
    r"\x{16E97}-\x{16E9A}\x{16F4F}\x{16FE2}\x{16FE4}\x{1CF00}-\x{1CF2D}\x{1CF30}-\x{1CF46}"
    r"\x{1E000}-\x{1E006}\x{1E008}-\x{1E018}\x{1E01B}-\x{1E021}\x{1E023}-\x{1E024}"
    r"\x{1E026}-\x{1E02A}\x{1E08F}\x{1E130}-\x{1E136}\x{1E2AE}\x{1E2EC}-\x{1E2EF}"
    r"\x{1E4EC}-\x{1E4EF}\x{1E944}-\x{1E94A}\x{1E95E}-\x{1E95F}"
    r"]"
)
_RUST_PUNCTUATION = r"[\x{166D}\x{111C9}]"


class AlignTokenizer(tf.Module):
    """BERT WordPiece tokenizer (`[CLS] ... [SEP]`, padding, truncation) built from TF ops.

    Normalisation follows HF's BertNormalizer: drop control characters, map whitespace to
    spaces, strip accents (NFD, drop Mn) and lower-case character by character, split
    punctuation and CJK ideographs off as words; then greedy longest-match WordPiece with
    `[UNK]` for words that do not tokenize or exceed 100 characters. Special tokens written in
    the text (`[MASK]`, `[SEP]`, ...) become their ids, as in HF.

    It is plain graph code (core TF ops plus tensorflow-text's `NormalizeUTF8` and
    `FastWordpieceTokenizeWithOffsets`, both linked by stock TF Serving), so it runs eagerly,
    in `tf.data.Dataset.map`, in a `tf.function` with an unknown batch size, and in exported
    SavedModels (pass it to `ExportArchive.track`).
    """

    def __init__(
        self,
        vocab_file: str | None = None,
        max_length: int = 64,
        padding: str = "max_length",
        truncation: bool = True,
        do_lower_case: bool = True,
        *,
        vocabulary: Sequence[str] | None = None,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        clean_up_tokenization_spaces: bool = False,
        name: str | None = None,
    ):
        super().__init__(name=name or "align_tokenizer")
        if (vocab_file is None) == (vocabulary is None):
            raise ConfigError("give exactly one of vocab_file (a vocab.txt path) or vocabulary (a list)")
        if vocab_file is not None:
            vocabulary = read_vocabulary(vocab_file)
        vocabulary = list(vocabulary)
        if padding not in ("max_length", "longest", "do_not_pad"):
            raise ConfigError(f"padding must be 'max_length', 'longest' or 'do_not_pad', got {padding!r}")
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length must be an int >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
        index = {token: i for i, token in enumerate(vocabulary)}
        for role, token in (("unk", unk_token), ("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            if token not in index:
                raise ConfigError(f"{role}_token {token!r} is not in the vocabulary")

        self.vocab_file = vocab_file
        self.max_length = max_length
        self.padding = padding
        self.truncation = bool(truncation)
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        # `decode`'s default, as transformers 5's tokenizers: the config's value, else False.
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._vocabulary = vocabulary
        self.cls_token_id = index[cls_token]
        self.sep_token_id = index[sep_token]
        self.pad_token_id = index[pad_token]
        self.unk_token_id = index[unk_token]
        # Special tokens present in the vocabulary, matched in raw text like HF's added tokens.
        self._special_tokens = [
            t for t in dict.fromkeys([unk_token, sep_token, pad_token, cls_token, mask_token]) if t and t in index
        ]
        # 4 bytes per code point at most; the 100-character limit is applied separately.
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocabulary,
            suffix_indicator="##",
            max_bytes_per_word=4 * MAX_CHARS_PER_WORD + 4,
            token_out_type=tf.int32,
            unknown_token=unk_token,
            no_pretokenization=True,
        )
        self._tokenize_batch = tf.function(
            self.tokenize, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
        )

    # ----------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self._vocabulary)

    @property
    def vocabulary(self) -> list[str]:
        return list(self._vocabulary)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._vocabulary[int(i)] for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        index = {token: i for i, token in enumerate(self._vocabulary)}
        return [index.get(t, self.unk_token_id) for t in tokens]

    # ----------------------------------------------------------------------------- graph code
    def normalize(self, texts: tf.Tensor) -> tf.Tensor:
        """Normalised text with words separated by single spaces (special tokens as `\\x01<n>`)."""
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
        texts = tf.strings.regex_replace(texts, "[\x01\x03\x04]", "\x02")
        for n, token in enumerate(self._special_tokens):
            texts = tf.strings.regex_replace(texts, _re_escape(token), f" {_SPECIAL_MARK}{n} ")
        texts = tf.strings.regex_replace(texts, _RUST_LETTERS, _UNKNOWN_LETTER)
        texts = tf.strings.regex_replace(texts, _RUST_PUNCTUATION, _UNKNOWN_SYMBOL)
        texts = tf.strings.regex_replace(texts, _CONTROL, "")
        texts = tf.strings.regex_replace(texts, _WHITESPACE, " ")
        strip_accents = self.do_lower_case if self.strip_accents is None else self.strip_accents
        if strip_accents:
            texts = tf_text.normalize_utf8(texts, "NFD")
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        if self.do_lower_case:
            # ICU lower-cases a word-final capital sigma to "ς"; HF maps each character alone.
            texts = tf.strings.regex_replace(texts, "\u03a3", "\u03c3")
            texts = tf.strings.lower(texts, encoding="utf-8")
        split_off = _SPLIT_OFF if self.tokenize_chinese_chars else f"({_PUNCTUATION})"
        return tf.strings.regex_replace(texts, split_off, r" \1 ")

    def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Ragged [M, words] of the strings WordPiece sees; over-long words become `[UNK]`."""
        words = tf.strings.split(self.normalize(texts))
        flat = words.flat_values
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        flat = tf.where(too_long, self.unk_token, flat)
        for n, token in enumerate(self._special_tokens):
            flat = tf.where(tf.equal(flat, f"{_SPECIAL_MARK}{n}"), token, flat)
        return words.with_flat_values(flat)

    def tokenize(self, texts: tf.Tensor, padding: str | None = None, max_length: int | None = None,
                 truncation: bool | None = None) -> dict[str, tf.Tensor]:
        """Graph-safe core: string [M] -> dict of int32 [M, L] (ragged [M, None] with
        padding="do_not_pad"). Options default to the tokenizer's own."""
        padding = self.padding if padding is None else padding
        max_length = self.max_length if max_length is None else max_length
        truncation = self.truncation if truncation is None else truncation
        texts = tf.convert_to_tensor(texts, tf.string)
        pieces = self._wordpiece.tokenize(self.words(texts)).merge_dims(1, 2)
        if truncation:
            pieces = pieces[:, : max_length - 2]
        lengths = tf.cast(pieces.row_lengths(), tf.int32)[:, tf.newaxis]
        fixed = padding == "max_length" and truncation
        if fixed:
            width = max_length
        else:
            width = tf.reduce_max(tf.concat([lengths[:, 0] + 2, [2]], 0))
            if padding == "max_length":
                width = tf.maximum(width, max_length)
        batch = tf.shape(texts)[0]
        # Dense assembly ([CLS] body, [SEP] written at each row's end): concatenating ragged rows
        # would transpose int64 row splits, which oneDNN does not support (and logs about).
        body = pieces.to_tensor(default_value=self.pad_token_id, shape=tf.stack([batch, width - 1]))
        cls = tf.fill(tf.stack([batch, 1]), self.cls_token_id)
        input_ids = tf.concat([cls, body], axis=1)
        positions = tf.range(width)[tf.newaxis, :]
        input_ids = tf.where(positions == lengths + 1, self.sep_token_id, input_ids)
        attention_mask = tf.cast(positions < lengths + 2, tf.int32)
        if fixed:
            input_ids = tf.ensure_shape(input_ids, [None, max_length])
            attention_mask = tf.ensure_shape(attention_mask, [None, max_length])
        out = {"input_ids": input_ids, "attention_mask": attention_mask,
               "token_type_ids": tf.zeros_like(input_ids)}
        if padding == "do_not_pad":
            out = {k: tf.RaggedTensor.from_tensor(v, lengths=lengths[:, 0] + 2) for k, v in out.items()}
        return out

    # ----------------------------------------------------------------------------- public call
    def __call__(self, texts, padding=None, max_length=None, truncation=None,
                 return_attention_mask=None, return_token_type_ids=None, return_tensors="tf"):
        """Tokenize a str, a list of str, or a string tensor ([M] -> [M, L]; a scalar -> [L]).

        A Python str is a batch of one ([1, L]); a scalar tensor (one `tf.data` element) gives [L].
        The call-time options are transformers' (`padding`: True / "longest", "max_length",
        False / "do_not_pad"; `max_length`; `truncation`; `return_attention_mask`,
        `return_token_type_ids`; `return_tensors`: "tf", "np", "jax" or None for lists); left
        out, the tokenizer's own settings apply.
        """
        options = call_options(padding, max_length, truncation)
        if isinstance(texts, (tf.Tensor, tf.Variable)) or tf.is_symbolic_tensor(texts):
            texts = tf.convert_to_tensor(texts)
            if texts.dtype != tf.string:
                raise TextInputError(f"texts must be a string tensor, got dtype {texts.dtype.name}")
            if texts.shape.rank == 0:
                out = {k: v[0] for k, v in self._run(texts[tf.newaxis], options).items()}
                return self._finish(out, return_attention_mask, return_token_type_ids, return_tensors)
            if texts.shape.rank not in (None, 1):
                raise ConfigError(f"texts must be a scalar or a vector of strings, got shape {texts.shape}")
            return self._finish(self._run(texts, options), return_attention_mask,
                                return_token_type_ids, return_tensors)
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            try:
                texts = list(texts)
            except TypeError:
                raise TextInputError(f"texts must be a str or a list of str, got {type(texts).__name__}") from None
        for i, text in enumerate(texts):
            if not isinstance(text, (str, bytes)):
                raise TextInputError(f"text {i} of {len(texts)} is not a string (got {type(text).__name__})")
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:  # a lone surrogate: not a character, no UTF-8 for it
                    raise TextInputError(f"text {i} of {len(texts)} is not valid Unicode: U+{ord(text[e.start]):04X} "
                                         f"at position {e.start} is a lone surrogate") from None
        out = self._run(tf.constant(list(texts), dtype=tf.string, shape=[len(texts)]), options)
        return self._finish(out, return_attention_mask, return_token_type_ids, return_tensors)

    def _run(self, texts: tf.Tensor, options: dict | None = None) -> dict[str, tf.Tensor]:
        options = {k: v for k, v in (options or {}).items() if v is not None}
        if not tf.executing_eagerly():
            return self.tokenize(texts, **options)
        if not options:
            return self._tokenize_batch(texts)
        key = tuple(sorted(options.items()))
        cache = self.__dict__.setdefault("_tokenize_with_options", {})
        if key not in cache:  # one traced graph per set of call-time options
            cache[key] = tf.function(lambda t: self.tokenize(t, **options),
                                     input_signature=[tf.TensorSpec([None], tf.string)])
        return cache[key](texts)

    def _finish(self, out, return_attention_mask, return_token_type_ids, return_tensors):
        if return_attention_mask is False:
            out.pop("attention_mask")
        if return_token_type_ids is False:
            out.pop("token_type_ids")
        return convert_tensors(out, return_tensors)

    # ----------------------------------------------------------------------------- decoding
    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids back to text as transformers' BERT tokenizers do: WordPiece pieces joined
        (`##` continuations glued), special tokens dropped with `skip_special_tokens`, and
        the spaces before punctuation and English contractions removed with
        `clean_up_tokenization_spaces`. Left out (None), that option is the tokenizer's own
        `clean_up_tokenization_spaces` (tokenizer_config.json's value; False without one, as
        transformers 5)."""
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        ids = [int(i) for i in np.asarray(_as_numpy(token_ids)).reshape(-1)]
        if skip_special_tokens:
            special = {self._index().get(t) for t in self._special_tokens}
            ids = [i for i in ids if i not in special]
        # As the `tokenizers` WordPiece decoder: "##" glues a piece to the previous one (not the
        # first piece), and each piece gets its own clean-up, whatever the option says.
        pieces = []
        for i, token in enumerate(self.convert_ids_to_tokens(ids)):
            if i > 0:
                token = token[2:] if token.startswith("##") else " " + token
            pieces.append(_replace_all(token, _WORDPIECE_CLEANUP))
        text = "".join(pieces)
        if clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """`decode` for each row of a [M, L] array / tensor, a ragged tensor or a list of lists."""
        if isinstance(sequences, tf.RaggedTensor):
            sequences = sequences.to_list()
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces)
                for row in _as_numpy(sequences)]

    def _index(self) -> dict:
        if "_token_index" not in self.__dict__:
            self.__dict__["_token_index"] = {t: i for i, t in enumerate(self._vocabulary)}
        return self.__dict__["_token_index"]

    # ----------------------------------------------------------------------------- files
    def get_config(self) -> dict:
        """tokenizer_config.json content (HF field names)."""
        return {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "model_max_length": self.max_length,
            "padding": self.padding,
            "truncation": self.truncation,
            "unk_token": self.unk_token,
            "sep_token": self.sep_token,
            "pad_token": self.pad_token,
            "cls_token": self.cls_token,
            "mask_token": self.mask_token,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }

    @classmethod
    def from_pretrained(cls, name_or_path: str, **overrides) -> "AlignTokenizer":
        """Read `vocab.txt` and `tokenizer_config.json` from a folder or a hub id."""
        folder = resolve_folder(name_or_path)
        vocab_file = os.path.join(folder, VOCAB_NAME)
        if not os.path.isfile(vocab_file):
            raise AssetNotFoundError(f"{name_or_path}: no {VOCAB_NAME} in {folder}")
        config = {}
        config_file = os.path.join(folder, TOKENIZER_CONFIG_NAME)
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)
        kwargs = {}
        max_length = config.get("model_max_length")
        # HF writes a huge sentinel when a tokenizer has no limit; ALIGN's reference pads to 64.
        if isinstance(max_length, int) and 2 <= max_length <= 1_000_000:
            kwargs["max_length"] = max_length
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "padding", "truncation",
                    "clean_up_tokenization_spaces"):
            if key in config and config[key] is not None:
                kwargs[key] = config[key]
        for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            value = config.get(key)
            if isinstance(value, dict):  # HF's serialised AddedToken
                value = value.get("content")
            if isinstance(value, str):
                kwargs[key] = value
        kwargs.update(overrides)
        return cls(vocab_file, **kwargs)

    def save_pretrained(self, folder: str) -> list[str]:
        """Write `vocab.txt`, `tokenizer_config.json` and `special_tokens_map.json`."""
        os.makedirs(folder, exist_ok=True)
        vocab_path = os.path.join(folder, VOCAB_NAME)
        if self.vocab_file and os.path.abspath(self.vocab_file) != os.path.abspath(vocab_path):
            shutil.copyfile(self.vocab_file, vocab_path)
        elif not self.vocab_file:
            with open(vocab_path, "w", encoding="utf-8") as f:
                f.writelines(token + "\n" for token in self._vocabulary)
        config_path = os.path.join(folder, TOKENIZER_CONFIG_NAME)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, indent=2, ensure_ascii=False)
            f.write("\n")
        special_path = os.path.join(folder, SPECIAL_TOKENS_MAP_NAME)
        special = {k: getattr(self, k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
        with open(special_path, "w", encoding="utf-8") as f:
            json.dump(special, f, indent=2, ensure_ascii=False)
            f.write("\n")
        return [vocab_path, config_path, special_path]

    def __repr__(self) -> str:
        return (
            f"AlignTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length}, "
            f"padding={self.padding!r}, truncation={self.truncation}, do_lower_case={self.do_lower_case})"
        )


PADDING = {True: "longest", "longest": "longest", "max_length": "max_length",
           False: "do_not_pad", "do_not_pad": "do_not_pad"}
TRUNCATION = {True: True, "longest_first": True, "only_first": True, False: False,
              "do_not_truncate": False}
RETURN_TENSORS = ("tf", "np", "jax", None)


def call_options(padding=None, max_length=None, truncation=None) -> dict:
    """transformers' call-time tokenizer options as this tokenizer's (None: not given)."""
    if padding is not None and (isinstance(padding, (list, dict)) or padding not in PADDING):
        raise ConfigError(f"padding must be True / 'longest', 'max_length' or False / 'do_not_pad', "
                         f"got {padding!r}")
    if truncation is not None and (isinstance(truncation, (list, dict)) or truncation not in TRUNCATION):
        raise ConfigError(f"truncation must be True / 'longest_first' / 'only_first' or False / "
                         f"'do_not_truncate' (one sequence per text), got {truncation!r}")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                   or max_length < 2):
        raise ConfigError(f"max_length must be an int >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
    padding = PADDING.get(padding) if padding is not None else None
    if truncation is None and (padding is not None or max_length is not None):
        # transformers' rule when an option is given at call time but truncation is not: it
        # truncates only to a max_length given without padding.
        truncation = max_length is not None and padding in (None, "do_not_pad")
    return {"padding": padding, "max_length": max_length,
            "truncation": TRUNCATION.get(truncation) if truncation is not None else None}


def convert_tensors(out: dict, return_tensors="tf") -> dict:
    """A dict of tf tensors as `return_tensors` asks: "tf" as is, "np" / "jax" arrays, None
    lists. Ragged rows (no padding) become a list of 1-D arrays (or of lists)."""
    if return_tensors not in RETURN_TENSORS:
        raise ConfigError(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}")
    if return_tensors == "tf":
        return out
    if return_tensors == "jax":
        try:
            import jax.numpy as jnp
        except ImportError:
            raise ImportError("return_tensors='jax' needs jax installed") from None
        to_array = jnp.asarray
    else:
        to_array = np.asarray

    def convert(value):
        if isinstance(value, tf.RaggedTensor):
            rows = value.to_list()
            return rows if return_tensors is None else [to_array(np.asarray(r, np.int32)) for r in rows]
        array = value.numpy()
        return array.tolist() if return_tensors is None else to_array(array)

    return {k: convert(v) for k, v in out.items()}


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
# The `tokenizers` WordPiece decoder's per-piece list has one more entry.
_WORDPIECE_CLEANUP = _CLEANUP[:7] + ((" do not", " don't"),) + _CLEANUP[7:]


def _replace_all(text: str, pairs) -> str:
    for before, after in pairs:
        text = text.replace(before, after)
    return text


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization`: no space before . ? ! , and English contractions."""
    return _replace_all(text, _CLEANUP)


def _as_numpy(value):
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value.numpy()
    if hasattr(value, "tolist") and not isinstance(value, np.ndarray):  # torch / jax arrays
        return np.asarray(value.tolist())
    return value


def read_vocabulary(vocab_file: str) -> list[str]:
    """One token per line, as BERT's vocab.txt (line order = id)."""
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    while tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise ConfigError(f"{vocab_file}: empty vocabulary")
    return tokens


def resolve_folder(name_or_path: str) -> str:
    """A local folder as is; anything else goes through the hub resolver."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from align_tf.checkpoints.hub import resolve_pretrained

    return resolve_pretrained(name_or_path)


def _re_escape(literal: str) -> str:
    return "".join("\\" + c if not c.isalnum() and c != "_" and ord(c) < 128 else c for c in literal)
