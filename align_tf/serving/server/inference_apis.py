"""Classify, Regress and MultiInference over `tf.Example`s, as TF Serving runs them on a SavedModel
(servables/tensorflow/classifier.cc, regressor.cc, multi_inference.cc, util.cc).

The request's `Input` becomes one string tensor of serialized examples (`example_list`, or
`example_list_with_context` with the context's bytes before each example's, which parsing
merges with the example's features winning), fed by one Session::Run of the version's session
bundle to the tensor of the signature's single input `inputs`, fetching the output tensors: a
classify signature's `classes` (string [N, C]) and / or `scores` (float [N, C]), a regress
signature's `outputs` (float [N] or [N, 1]); MultiInference feeds every task's input tensor and
fetches all their outputs in one run. The signature's method name is checked only with
`--enable_signature_method_name_check` (off by default, as in TF Serving, so native TF2 models,
whose signatures all say "predict", classify and regress); without it the signature's inputs and
outputs are checked instead. Every message is TF Serving's.

Requests are held to the server's `RequestLimits` before anything is built from them: at most
`max_batch_size` examples, and the examples' bytes (the context once per example, which is how a
small request could otherwise ask for gigabytes) at most `max_decoded_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from align_tf.errors import ServingError
from align_tf.serving.limits import STRING_OVERHEAD_BYTES, RequestLimits
from align_tf.serving.server.versions import LoadedVersion, invalid, run_error

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS = "inputs"                   # kClassifyInputs, kRegressInputs
CLASSES, SCORES = "classes", "scores"  # kClassifyOutputClasses, kClassifyOutputScores
OUTPUTS = "outputs"                 # kRegressOutputs
_WORD = {"classify": "classification", "regress": "regression"}
_METHOD = {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}


@dataclass
class Classification:
    """A ClassificationResult as columns: labels (bytes [N, C]) and / or scores (float32 [N, C])."""
    labels: np.ndarray | None
    scores: np.ndarray | None

    def to_proto(self, result) -> None:
        """Fill a ClassificationResult (PostProcessClassificationResult's loop)."""
        from tensorflow_serving.apis import classification_pb2

        rows = (self.labels if self.labels is not None else self.scores).shape[0]
        labels = _text_labels(self.labels) if self.labels is not None else None
        scores = self.scores.tolist() if self.scores is not None else None
        make = classification_pb2.Class
        for i in range(rows):
            if labels is not None and scores is not None:
                classes = [make(label=l, score=s) for l, s in zip(labels[i], scores[i])]
            elif labels is not None:
                classes = [make(label=l) for l in labels[i]]
            else:
                classes = [make(score=s) for s in scores[i]]
            result.classifications.add().classes.extend(classes)


def _text_labels(labels: np.ndarray) -> list:
    """Labels for `Class.label`, a proto3 string: UTF-8 text. TF Serving's C++ writes other
    bytes anyway, and no client can parse that reply; here it is one clear error."""
    try:
        return [[label.decode("utf-8") for label in row] for row in labels.tolist()]
    except UnicodeDecodeError:
        bad = next(v for v in labels.reshape(-1) if not _is_utf8(v))
        raise ServingError(grpc.StatusCode.INTERNAL,
                           f"class label {bad[:40]!r} is not UTF-8: Class.label is a proto3 string, "
                           "which a gRPC reply can only carry as UTF-8 (REST :classify returns its bytes)") from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# -- the input: util.cc InputToSerializedExampleTensor ------------------------------------------
def serialized_examples(request_input, limits: RequestLimits = RequestLimits()) -> np.ndarray:
    """The examples of an `Input` as a string vector, checked against `limits` first."""
    kind = request_input.WhichOneof("kind")
    context = b""
    if kind == "example_list":
        examples = request_input.example_list.examples
    elif kind == "example_list_with_context":
        examples = request_input.example_list_with_context.examples
        context = request_input.example_list_with_context.context.SerializeToString()
    else:
        examples = ()
    count = len(examples)
    if count == 0:
        raise invalid("Input is empty.")
    if limits.max_batch_size and count > limits.max_batch_size:
        raise invalid(f"input: Task size {count} is larger than maximum input batch size "
                      f"{limits.max_batch_size}")
    total = sum(e.ByteSize() for e in examples) + count * (len(context) + STRING_OVERHEAD_BYTES)
    if total > limits.max_decoded_bytes:
        with_context = f" with a context of {len(context)} bytes" if context else ""
        raise invalid(f"input: {count} examples{with_context} would take {total} bytes once "
                      f"serialized; the limit is {limits.max_decoded_bytes} bytes")
    out = np.empty(count, dtype=object)
    out[:] = [context + e.SerializeToString() for e in examples]
    return out


# -- signatures: classifier.cc / regressor.cc ---------------------------------------------------
def _debug_string(signature) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(signature)


def check_signature(kind: str, signature, method_check: bool) -> tuple[str, list[str]]:
    """PreProcessClassification / PreProcessRegression: (input tensor name, output tensor names)."""
    if method_check and signature.method_name != _METHOD[kind]:
        raise invalid(f"Expected {_WORD[kind]} signature method_name to be {_METHOD[kind]}. "
                      f"Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if kind == "classify":
        if len(signature.outputs) not in (1, 2):
            raise invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
        if INPUTS not in signature.inputs:
            raise invalid(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
        outputs = [signature.outputs[alias].name for alias in (CLASSES, SCORES) if alias in signature.outputs]
        if not outputs:
            raise invalid(f'Expected classification signature outputs to contain at least one of '
                          f'"{CLASSES}" or "{SCORES}". Signature was: {_debug_string(signature)}')
        return signature.inputs[INPUTS].name, outputs
    if len(signature.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise invalid(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if OUTPUTS not in signature.outputs:
        raise invalid(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")
    return signature.inputs[INPUTS].name, [signature.outputs[OUTPUTS].name]


def _signature_def(served: LoadedVersion, name: str):
    """The SignatureDef under `name`, or None (also for a name that is not UTF-8, which a REST
    body can hold and a proto map key cannot)."""
    try:
        return served.signature_defs.get(name)
    except (UnicodeEncodeError, ValueError):
        return None


def find_signature(kind: str, served: LoadedVersion, signature_name: str):
    """GetClassificationSignatureDef / GetRegressionSignatureDef."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = _signature_def(served, name)
    if signature is None:
        raise invalid(f"No signature was found with the name: {name}")
    if served.method_name_check:
        if signature.method_name != _METHOD[kind]:
            raise invalid(f"Expected {_WORD[kind]} signature method_name to be {_METHOD[kind]}. "
                          f"Was: {signature.method_name}")
    else:
        check_signature(kind, signature, False)
    return signature


def _dtype_name(array: np.ndarray) -> str:
    """DataType_Name of an output: DT_FLOAT, DT_STRING, ..."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    if array.dtype == object or array.dtype.kind in "SU":
        return "DT_STRING"
    return types_pb2.DataType.Name(tf.as_dtype(array.dtype).as_datatype_enum)


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"  # TensorShape::DebugString


def run_examples(served: LoadedVersion, input_names, output_names: list[str],
                 examples: np.ndarray) -> list[np.ndarray]:
    """PerformOneShotTensorComputation: one Session::Run feeding the examples to every input
    tensor name and fetching the output tensor names; errors are the runtime's."""
    try:
        return served.bundle.run([(name, examples) for name in sorted(input_names)], list(output_names))
    except Exception as e:  # tf.errors.OpError, or a feed the C API cannot convert
        raise run_error(e) from None


def regressions_to_proto(values: np.ndarray, result) -> None:
    """Fill a RegressionResult: one `value` per example."""
    from tensorflow_serving.apis import regression_pb2

    result.regressions.extend(regression_pb2.Regression(value=v) for v in values.tolist())


def classification_result(signature, count: int, output_names: list[str], outputs: list) -> Classification:
    """PostProcessClassificationResult's checks, in its order."""
    if len(outputs) != len(output_names):
        raise invalid(f"Expected {len(output_names)} output tensor(s).  Got: {len(outputs)}")
    classes_name = signature.outputs[CLASSES].name if CLASSES in signature.outputs else ""
    scores_name = signature.outputs[SCORES].name if SCORES in signature.outputs else ""
    classes = scores = None
    for name, array in zip(output_names, outputs):
        if name == classes_name:
            classes = array
        elif name == scores_name:
            scores = array
    for array, alias, dtype in ((classes, CLASSES, "DT_STRING"), (scores, SCORES, "DT_FLOAT")):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}")
        if _dtype_name(array) != dtype:
            raise invalid(f"Expected {alias} Tensor of {dtype}. Got: {_dtype_name(array)}")
        if array.shape[0] != count:
            raise invalid(f"Expected {alias} output batch size of {count}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(f"Tensors class and score should match in dim_size(1). Got "
                      f"{classes.shape[1]} vs. {scores.shape[1]}")
    if classes is not None:
        classes = np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode("utf-8"),
                               otypes=[object])(classes) if classes.size else classes.astype(object)
    return Classification(classes, scores)


def regression_result(signature, count: int, output_names: list[str], outputs: list) -> np.ndarray:
    """PostProcessRegressionResult's checks, in its order: float32 [N]."""
    if len(outputs) != len(output_names):
        raise invalid("Expected output_tensors and output_tensor_names to have the same size.")
    if OUTPUTS not in signature.outputs:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"No regression outputs found in SignatureDef: {_debug_string(signature)}")
    name = signature.outputs[OUTPUTS].name
    array = next((a for n, a in zip(output_names, outputs) if n == name), None)
    if array is None:
        raise invalid(f"Could not find output tensor '{name}'")
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                      f"but got {_shape(array)}")
    if count != array.shape[0]:
        raise invalid(f"Input batch size did not match output batch size: {count} vs. {array.shape[0]}")
    if _dtype_name(array) != "DT_FLOAT":
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(array)}")
    if array.size != count:
        raise invalid(f"Expected output batch size to be {count}.  Got: {array.size}")
    return array.reshape(-1)


def classify(served: LoadedVersion, signature_name: str, request_input,
             limits: RequestLimits = RequestLimits()) -> Classification:
    """RunClassify on one loaded version."""
    signature = find_signature("classify", served, signature_name)
    input_name, output_names = check_signature("classify", signature, served.method_name_check)
    examples = serialized_examples(request_input, limits)
    outputs = run_examples(served, [input_name], output_names, examples)
    return classification_result(signature, len(examples), output_names, outputs)


def regress(served: LoadedVersion, signature_name: str, request_input,
            limits: RequestLimits = RequestLimits()) -> np.ndarray:
    """RunRegress on one loaded version."""
    signature = find_signature("regress", served, signature_name)
    input_name, output_names = check_signature("regress", signature, served.method_name_check)
    examples = serialized_examples(request_input, limits)
    outputs = run_examples(served, [input_name], output_names, examples)
    return regression_result(signature, len(examples), output_names, outputs)


# -- multi_inference.cc -----------------------------------------------------------------------
def multi_inference(served: LoadedVersion, request, limits: RequestLimits = RequestLimits()):
    """TensorFlowMultiInferenceRunner::Infer on one loaded version: every task checked, one run
    feeding every task's input tensor and fetching all their outputs, the results in task order."""
    from tensorflow_serving.apis import inference_pb2

    model_name, seen, plan = "", set(), []
    input_names, output_names = set(), set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif model_name != task.model_spec.name:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        signature = _signature_def(served, name)
        if signature is None:
            raise invalid(f"Requested signature not found in model graph: {name}")
        kind = {CLASSIFY_METHOD: "classify", REGRESS_METHOD: "regress"}.get(task.method_name)
        if kind is None:
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
        input_name, outputs = check_signature(kind, signature, served.method_name_check)
        input_names.add(input_name)
        output_names.update(outputs)
        plan.append((task, kind, name, signature))

    fetches = sorted(output_names)  # a std::set's order
    examples = serialized_examples(request.input, limits)
    outputs = run_examples(served, input_names, fetches, examples)
    response = inference_pb2.MultiInferenceResponse()
    for task, kind, name, signature in plan:
        result = response.results.add()
        if kind == "classify":
            classification_result(signature, len(examples), fetches, outputs).to_proto(result.classification_result)
        else:
            regressions_to_proto(regression_result(signature, len(examples), fetches, outputs),
                                 result.regression_result)
        result.model_spec.name = task.model_spec.name
        result.model_spec.signature_name = name
        result.model_spec.version.value = served.version
    return response


def replay_warmup_record(served: LoadedVersion, entry) -> None:
    """One classify / regress / multi-inference record of a warm-up file, run as
    saved_model_warmup.cc RunWarmupRequest runs it (an error fails the load)."""
    kind = entry.WhichOneof("log_type")
    if kind == "classify_log":
        request = entry.classify_log.request
        classify(served, request.model_spec.signature_name, request.input)
    elif kind == "regress_log":
        request = entry.regress_log.request
        regress(served, request.model_spec.signature_name, request.input)
    else:
        multi_inference(served, entry.multi_inference_log.request)
