"""SavedModel export for TF Serving: the signatures of docs/serving.md's contract, an op check, a loader."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from align_tf.models.normalize import l2_normalize
from align_tf.models import frozen
from align_tf.models.compiled import TOKENS_SPEC, trim_padding
from align_tf.protocol import WARMUP_FILE, encode_images, read_saved_model_proto
from align_tf.errors import AssetNotFoundError, ConfigError, ExportError, NotFoundError, UnsupportedOpError, XlaFunctionError  # noqa: F401  (public here too)

SERVING_DEFAULT = "serving_default"
# Endpoint name -> the signature keys it is saved under. `classify` comes first, so it is also
# `serving_default` (what a request without `signature_name` runs).
SIGNATURE_NAMES = ("classify", "embed_text", "embed_image", "embed_pixels", "embed_tokens", "similarity")
ALL_SIGNATURES = (SERVING_DEFAULT,) + SIGNATURE_NAMES

# tensorflow-text ops that stock `tensorflow_model_server` 2.20 links (tf-text 2.20.0 `ops_lib`).
SERVING_TEXT_OPS = frozenset({
    "CaseFoldUTF8", "ConstrainedSequence", "FastBertNormalize", "FastWordpieceTokenizeWithOffsets",
    "FindSourceOffsets", "MaxSpanningTree", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap",
    "PhraseTokenize", "RegexSplitWithOffsets", "RougeL", "SentenceFragments", "SentenceFragmentsV2",
    "SentencepieceDetokenizeOp", "SentencepieceIdToStringOp", "SentencepieceOp",
    "SentencepieceStringToIdOp", "SentencepieceTokenizeOp", "SentencepieceTokenizeWithOffsetsOp",
    "SentencepieceVocabSizeOp", "SplitMergeTokenizeWithOffsets", "TFText>BoiseTagsToOffsets",
    "TFText>ByteSplitByOffsets", "TFText>ByteSplitWithOffsets", "TFText>FastSentencepieceDetokenize",
    "TFText>FastSentencepieceTokenize", "TFText>FastWordpieceDetokenize", "TFText>NgramsStringJoin",
    "TFText>OffsetsToBoiseTags", "TFText>PhraseDetokenize", "TFText>Utf8Binarize",
    "TFText>WhitespaceTokenizeWithOffsetsV2", "TokenizerFromLogits", "UnicodeScriptTokenizeWithOffsets",
    "WhitespaceTokenizeWithOffsets", "WordpieceTokenizeWithOffsets",
})
# Registered by tensorflow-text but refused: TF Serving 2.12-2.19 link tf-text 2.12.1, which lacks
# them (TF Serving issue #2267), so a model using them only loads on some servers.
REFUSED_TEXT_OPS = {
    "TFText>RoundRobinTrim": "missing from the tf-text ops linked by TF Serving 2.12-2.19 "
                             "(issue #2267); truncate by slicing instead",
    "TFText>RoundRobinGenerateMasks": "missing from the tf-text ops linked by TF Serving 2.12-2.19",
    "RoundRobinTrim": "missing from the tf-text ops linked by TF Serving 2.12-2.19 (issue #2267)",
}
_XLA_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_noinline_xla")
# TF Serving replays these requests when it loads a version (--enable_model_warmup, on by
# default), so the first real request does not pay for kernel selection and lazy init.


# -- the signatures ---------------------------------------------------------------------------
def _assert_not_empty(tensor, name: str, what: str):
    # An Assert op, so real TF Serving answers INVALID_ARGUMENT as the local server does.
    return tf.debugging.assert_positive(
        tf.shape(tensor)[0], message=f"{name}: empty batch; send at least one {what}")


def _crop_hw(image_processor) -> tuple[int | None, int | None]:
    crop = getattr(image_processor, "output_size", None) or getattr(image_processor, "crop_size", None)
    if isinstance(crop, dict):
        crop = (crop.get("height"), crop.get("width"))
    if isinstance(crop, int):
        crop = (crop, crop)
    if isinstance(crop, (tuple, list)) and len(crop) == 2:
        return int(crop[0]), int(crop[1])
    return None, None


PRECISIONS = ("float32", "bfloat16", "float16")


def serving_functions(model, processor, precision: str | None = None,
                      ) -> dict[str, tf.types.experimental.GenericFunction]:
    """The contract's signatures as `tf.function`s with named, batch-polymorphic inputs.

    Text and images go through `processor.tokenizer` and `processor.image_processor`, the same
    objects that training and Python inference use. The towers are the frozen inference graphs
    that in-process inference runs (align_tf.models.frozen: weights as constants, BatchNorm
    folded, fused kernels), in `precision` (default: the model's compute dtype), each traced
    once and shared by every signature that uses it; with `model.frozen_inference = False`,
    the Keras layers reading the model's variables. Outputs are float32 in every precision.
    """
    tokenizer = processor.tokenizer
    image_processor = processor.image_processor
    config = model.config
    dim = config.projection_dim
    height, width = _crop_hw(image_processor)
    vocab_size = config.text_config.vocab_size
    max_positions = config.text_config.max_position_embeddings

    precision = precision or model.dtype_policy.compute_dtype
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if getattr(model, "frozen_inference", True):
        # One function per tower, called by each signature: its constants are stored once. The
        # image tower's depthwise convs stay DepthwiseConv2dNative (the graph must run in any
        # runtime: TF Serving's standard build, oneDNN off, GPUs).
        text_tower = tf.function(frozen.text_features_graph(model, precision), autograph=False,
                                 input_signature=TOKENS_SPEC)
        image_tower = tf.function(
            frozen.image_features_graph(model.vision_model, precision), autograph=False,
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixel_values")])
        temperature = float(np.asarray(model.effective_temperature()))
    else:
        def text_tower(input_ids, attention_mask, token_type_ids):
            return tf.cast(model.get_text_features(input_ids, attention_mask, token_type_ids,
                                                   training=False), tf.float32)

        def image_tower(pixel_values):
            return tf.cast(model.get_image_features(pixel_values, training=False), tf.float32)

        temperature = None

    def text_features(input_ids, attention_mask, token_type_ids):
        # Columns that are padding in every row change nothing but cost time: drop them, as the
        # in-process inference path does (align_tf.models.compiled).
        return l2_normalize(text_tower(*trim_padding(input_ids, attention_mask, token_type_ids)))

    def image_features(pixel_values):
        return l2_normalize(image_tower(pixel_values))

    def logits(image_embeds, text_embeds):
        scale = temperature if temperature is not None else tf.cast(model.effective_temperature(), tf.float32)
        return tf.matmul(image_embeds, text_embeds, transpose_b=True) / scale

    def tokens(text):
        with tf.control_dependencies([_assert_not_empty(text, "text", "string")]):
            encoded = tokenizer(text)
        return {k: tf.cast(encoded[k], tf.int32)
                for k in ("input_ids", "attention_mask", "token_type_ids")}

    def pixels(image_bytes):
        with tf.control_dependencies([_assert_not_empty(image_bytes, "image_bytes", "image")]):
            pixel_values = image_processor.preprocess_bytes(image_bytes, training=False)
        return tf.cast(pixel_values, tf.float32)

    string_vector = dict(shape=[None], dtype=tf.string)
    token_matrix = dict(shape=[None, None], dtype=tf.int32)

    def classify(image_bytes, text):
        image_embeds = image_features(pixels(image_bytes))
        text_embeds = text_features(**tokens(text))
        logits_per_image = logits(image_embeds, text_embeds)
        return {"logits_per_image": logits_per_image, "probs": tf.nn.softmax(logits_per_image, axis=-1)}

    def embed_text(text):
        return {"text_embeds": text_features(**tokens(text))}

    def embed_image(image_bytes):
        return {"image_embeds": image_features(pixels(image_bytes))}

    def embed_pixels(pixel_values):
        checks = [_assert_not_empty(pixel_values, "pixel_values", "image")]
        if height and width:  # TF Serving does not check shapes: the graph must
            checks.append(tf.debugging.assert_equal(
                tf.shape(pixel_values)[1:], tf.constant([height, width, 3]),
                message=f"pixel_values: expected images of {height}x{width}x3 (NHWC)"))
        with tf.control_dependencies(checks):
            return {"image_embeds": image_features(tf.identity(pixel_values))}

    def embed_tokens(input_ids, attention_mask, token_type_ids):
        checks = [
            _assert_not_empty(input_ids, "input_ids", "row"),
            tf.debugging.assert_equal(tf.shape(input_ids), tf.shape(attention_mask),
                                      message="attention_mask: shape differs from input_ids"),
            tf.debugging.assert_equal(tf.shape(input_ids), tf.shape(token_type_ids),
                                      message="token_type_ids: shape differs from input_ids"),
            tf.debugging.assert_non_negative(input_ids, message="input_ids: negative id"),
            tf.debugging.assert_less(input_ids, vocab_size,
                                     message=f"input_ids: ids must be < vocab_size {vocab_size}"),
            tf.debugging.assert_less_equal(
                tf.shape(input_ids)[1], max_positions,
                message=f"input_ids: sequences longer than {max_positions} positions"),
        ]
        with tf.control_dependencies(checks):
            input_ids = tf.identity(input_ids)
        return {"text_embeds": text_features(input_ids, attention_mask, token_type_ids)}

    def similarity(image_embeds, text_embeds):
        # Normalising again keeps the logits right for unnormalised features too.
        return {"logits_per_image": logits(l2_normalize(image_embeds), l2_normalize(text_embeds))}

    specs = {
        "classify": (classify, [tf.TensorSpec(name="image_bytes", **string_vector),
                                tf.TensorSpec(name="text", **string_vector)]),
        "embed_text": (embed_text, [tf.TensorSpec(name="text", **string_vector)]),
        "embed_image": (embed_image, [tf.TensorSpec(name="image_bytes", **string_vector)]),
        "embed_pixels": (embed_pixels, [tf.TensorSpec([None, height, width, 3], tf.float32,
                                                      name="pixel_values")]),
        "embed_tokens": (embed_tokens, [tf.TensorSpec(name=n, **token_matrix)
                                        for n in ("input_ids", "attention_mask", "token_type_ids")]),
        "similarity": (similarity, [tf.TensorSpec([None, dim], tf.float32, name="image_embeds"),
                                    tf.TensorSpec([None, dim], tf.float32, name="text_embeds")]),
    }
    # autograph off and no jit_compile: plain graphs that TF Serving runs without XLA.
    return {name: tf.function(fn, input_signature=sig, autograph=False, jit_compile=False)
            for name, (fn, sig) in specs.items()}


# -- the zero-shot classify signature (export --labels) ----------------------------------------
ZERO_SHOT = "zero_shot"
IMAGE_FEATURE = "image/encoded"  # the feature name TF's image datasets use for encoded images
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"


def zero_shot_function(model, functions: dict, labels, templates="single", batch_size: int = 64):
    """`zero_shot`, a classify signature over fixed labels: serialized `tf.Example`s with the
    image bytes under `image/encoded` (input `inputs`) -> `classes` string [N, C] (the labels)
    and `scores` float32 [N, C] (softmax over the labels), so that TF Serving's Classify API
    answers `[[label, score], ...]` per image.

    The class matrix is computed here, once, with the export's own `embed_text` over the
    prompts (`templates` as `align-tf classify` takes them; several are ensembled), and stored
    as a constant; images go through the export's `embed_image`. With one template, the scores
    are the `classify` signature's `probs` for the images and the prompted labels.
    """
    from align_tf.applications.templates import resolve_templates
    from align_tf.applications.zero_shot import class_prompts, ensemble_class_embeddings

    labels = [str(label) for label in labels]
    if not labels:
        raise ConfigError("labels: expected at least one label")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"labels: duplicate labels {sorted({n for n in labels if labels.count(n) > 1})}")
    prompts = class_prompts(labels, resolve_templates(templates))
    embeds = np.concatenate([functions["embed_text"](text=tf.constant(prompts[i:i + batch_size]))["text_embeds"]
                             .numpy() for i in range(0, len(prompts), batch_size)])
    class_matrix = tf.constant(ensemble_class_embeddings(embeds, len(labels)), tf.float32)
    label_row = tf.constant([[label.encode("utf-8") for label in labels]])
    embed_image = functions["embed_image"]
    temperature = float(np.asarray(model.effective_temperature()))  # fixed, as the class matrix

    def zero_shot(inputs):
        parsed = tf.io.parse_example(inputs, {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        image_embeds = embed_image(image_bytes=parsed[IMAGE_FEATURE])["image_embeds"]
        logits = tf.matmul(image_embeds, class_matrix, transpose_b=True) / temperature
        return {"classes": tf.tile(label_row, [tf.shape(inputs)[0], 1]),
                "scores": tf.nn.softmax(logits, axis=-1)}

    return tf.function(zero_shot, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
                       autograph=False, jit_compile=False)


def set_signature_method_name(saved_model_dir: str, signature_key: str, method_name: str) -> None:
    """Give one signature of a written SavedModel another method name (TF2 writes every
    signature as predict) and rewrite its fingerprint."""
    proto = read_saved_model_proto(saved_model_dir)
    for meta_graph in proto.meta_graphs:
        meta_graph.signature_def[signature_key].method_name = method_name
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "wb") as f:
        f.write(proto.SerializeToString())
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    with open(os.path.join(saved_model_dir, "fingerprint.pb"), "wb") as f:
        f.write(fingerprinting.CreateFingerprintDef(saved_model_dir))


# -- writing ----------------------------------------------------------------------------------
def next_version(base_path: str) -> int:
    """1 + the largest numeric version folder under `base_path` (1 when there is none)."""
    versions = [int(n) for n in os.listdir(base_path) if n.isdigit()] if os.path.isdir(base_path) else []
    return max(versions, default=0) + 1


def export_saved_model(model, processor, path: str, version: int | None = None, *,
                       check_ops: bool = True, overwrite: bool = False, warmup: bool = True,
                       extra_functions: dict[str, Callable] | None = None,
                       precision: str | None = None,
                       labels: Iterable[str] | None = None, templates="single") -> str:
    """Write `path/<version>/` (TF Serving's layout, tag `serve`) with every signature of the
    contract and return that folder. `version=None` takes the next free number.

    The SavedModel is written to a hidden folder and renamed into place once complete and
    checked, so a server polling `path` never sees half a model. `warmup` writes
    `assets.extra/tf_serving_warmup_requests` (one small request per signature that takes raw
    input). `extra_functions` (name -> `tf.function` with an input signature) adds endpoints;
    they go through the same op check. `precision` ("float32", "bfloat16", "float16"; default
    the model's compute dtype) is what the towers compute in (see `serving_functions`); the
    frozen towers' weights are stored in it, as graph constants, and the model's variables
    are not written (a SavedModel for serving, not for training: fine-tune the Keras model).
    `labels` adds the classify signature `zero_shot` over them (`zero_shot_function`, with
    `templates`).
    """
    import keras

    if version is None:
        version = next_version(path)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(f"version must be a positive int, got {version!r}")
    target = os.path.join(path, str(version))
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True or another version")
    if not model.built:
        model.build()

    archive = keras.export.ExportArchive()
    if not getattr(model, "frozen_inference", True):
        archive.track(model)  # the signatures read its variables
    for resource in (processor.tokenizer, processor.image_processor):
        if isinstance(resource, tf.__internal__.tracking.Trackable):
            archive.track(resource)  # lookup tables and other resources inside preprocessing
    functions = serving_functions(model, processor, precision)
    functions.update(extra_functions or {})
    if labels is not None:
        functions[ZERO_SHOT] = zero_shot_function(model, functions, labels, templates)
    for name, fn in functions.items():
        fn.get_concrete_function()
        archive.add_endpoint(name, fn)

    os.makedirs(path, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".export-{version}-", dir=path)
    try:
        archive.write_out(staging, verbose=False)
        if labels is not None:
            set_signature_method_name(staging, ZERO_SHOT, CLASSIFY_METHOD_NAME)
        if warmup:
            write_warmup_requests(staging)
        if check_ops:
            check_serving_ops(staging)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_warmup_requests(version_dir: str) -> str | None:
    """TF Serving's warm-up file: PredictionLog records for embed_text, embed_image and classify
    with one short text and one small PNG. Skipped (None) without tensorflow-serving-api."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return None
    ramp = tf.cast(tf.reshape(tf.range(64 * 64 * 3) % 256, [64, 64, 3]), tf.uint8)
    png = tf.io.encode_png(ramp).numpy()
    requests = [("embed_text", {"text": [b"a photo"]}), ("embed_image", {"image_bytes": [png]}),
                ("classify", {"image_bytes": [png], "text": [b"a photo", b"a drawing"]})]
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature_name
            for name, values in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


# -- the op check -----------------------------------------------------------------------------
def graph_op_types(saved_model_dir: str) -> dict[str, set[str]]:
    """Every op type in the SavedModel's graph and function library -> where it is used."""
    ops: dict[str, set[str]] = {}
    for meta_graph in read_saved_model_proto(saved_model_dir).meta_graphs:
        library = meta_graph.graph_def.library
        function_names = {f.signature.name for f in library.function}
        for node in meta_graph.graph_def.node:
            if node.op not in function_names:
                ops.setdefault(node.op, set()).add("<graph>")
        for function in library.function:
            for node in function.node_def:
                if node.op not in function_names:  # a call by name is a library function
                    ops.setdefault(node.op, set()).add(function.signature.name)
    return ops


def xla_functions(saved_model_dir: str) -> list[str]:
    """Names of functions (or call nodes) marked for XLA compilation."""
    found = []
    for meta_graph in read_saved_model_proto(saved_model_dir).meta_graphs:
        for function in meta_graph.graph_def.library.function:
            if any(function.attr[a].b for a in _XLA_ATTRS if a in function.attr):
                found.append(function.signature.name)
            for node in function.node_def:
                if any(node.attr[a].b for a in _XLA_ATTRS if a in node.attr):
                    found.append(f"{function.signature.name}/{node.name}")
    return found


def core_op_names() -> frozenset[str]:
    """Ops with a public TensorFlow wrapper (`tf.raw_ops`): those every TF build registers.
    Ops from loaded libraries (tensorflow-text, test ops) are not among them."""
    return frozenset(n for n in dir(tf.raw_ops) if not n.startswith("_"))


def non_core_ops(saved_model_dir: str) -> dict[str, set[str]]:
    core = core_op_names()
    return {op: where for op, where in graph_op_types(saved_model_dir).items() if op not in core}


def check_serving_ops(saved_model_dir: str,
                      allowed_text_ops: Iterable[str] = SERVING_TEXT_OPS) -> list[str]:
    """Raise `UnsupportedOpError` naming the first op stock TF Serving lacks, or
    `XlaFunctionError`; return the sorted non-core ops found (all allow-listed)."""
    allowed = frozenset(allowed_text_ops)
    found = non_core_ops(saved_model_dir)
    for op in sorted(found):
        if op in REFUSED_TEXT_OPS:
            raise UnsupportedOpError(op, found[op], REFUSED_TEXT_OPS[op])
        if op not in allowed:
            raise UnsupportedOpError(
                op, found[op], "neither a TensorFlow core op nor a tensorflow-text op that "
                               "TF Serving 2.20 links")
    xla = xla_functions(saved_model_dir)
    if xla:
        raise XlaFunctionError(
            f"{len(xla)} function(s) are XLA-compiled ({', '.join(xla[:3])}); TF Serving runs them "
            "only with --xla_gpu_compilation_enabled: export without jit_compile")
    return sorted(found)


# -- loading ----------------------------------------------------------------------------------
def resolve_version_dir(path: str) -> str:
    """`path` itself if it holds saved_model.pb, else its newest numeric version folder."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(n) for n in os.listdir(path) if n.isdigit()
                       and os.path.isfile(os.path.join(path, n, "saved_model.pb"))),
                      reverse=True) if os.path.isdir(path) else []
    if not versions:
        raise AssetNotFoundError(f"{path}: no saved_model.pb and no numeric version folder with one")
    return os.path.join(path, str(versions[0]))


class AlignSavedModel:
    """An exported ALIGN SavedModel with its signatures as Python callables.

    `embed_text(["a cat"])`, `embed_image([jpeg_bytes or path])`, `classify(images, labels)`,
    `similarity(image_embeds, text_embeds)`, `embed_pixels(array)`, `embed_tokens(...)`, and
    `run(signature_name, **inputs)` for any signature; results are numpy arrays.
    """

    def __init__(self, path: str):
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops before loading)

        self.path = resolve_version_dir(path)
        self.version = int(os.path.basename(self.path)) if os.path.basename(self.path).isdigit() else None
        self.loaded = tf.saved_model.load(self.path)
        self.signatures = dict(self.loaded.signatures)

    def run(self, signature_name: str, **inputs) -> dict[str, np.ndarray]:
        if signature_name not in self.signatures:
            raise NotFoundError(f"no signature {signature_name!r}; have {sorted(self.signatures)}")
        fn = self.signatures[signature_name]
        specs = fn.structured_input_signature[1]
        tensors = {name: tf.convert_to_tensor(value, dtype=specs[name].dtype)
                   for name, value in inputs.items()}
        return {name: value.numpy() for name, value in fn(**tensors).items()}

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.run("embed_text", text=_strings(texts))["text_embeds"]

    def embed_image(self, images) -> np.ndarray:
        return self.run("embed_image", image_bytes=encode_images(images))["image_embeds"]

    def embed_pixels(self, pixel_values) -> np.ndarray:
        return self.run("embed_pixels", pixel_values=np.asarray(pixel_values, np.float32))["image_embeds"]

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None) -> np.ndarray:
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        return self.run("embed_tokens", input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids)["text_embeds"]

    def classify(self, images, labels: list[str]) -> dict[str, np.ndarray]:
        return self.run("classify", image_bytes=encode_images(images), text=_strings(labels))

    def similarity(self, image_embeds, text_embeds) -> np.ndarray:
        return self.run("similarity", image_embeds=np.asarray(image_embeds, np.float32),
                        text_embeds=np.asarray(text_embeds, np.float32))["logits_per_image"]


def load_saved_model(path: str) -> AlignSavedModel:
    """Load an export (a version folder, or a base path: its newest version)."""
    return AlignSavedModel(path)


def _strings(texts) -> list[bytes]:
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    return [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
