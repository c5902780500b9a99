"""The tensorflow/serving 2.20 test cases of the ported files that are not applicable to
`align-tf serve`, each with its reason: a case is not applicable only when it tests another
platform (TF Lite) or an in-process C++ API that has no wire form. Printed by the suite's
terminal summary (conftest.py).

- model_servers/tensorflow_model_server_test.py testPredictOnTfLite and
  testPredictWithSignatureDefOnTfLite: the TF Lite platform (`--prefer_tflite_model`); this
  server loads SavedModels only.
- predict_impl_test.cc ModelSpecOverride, get_model_status_impl_test.cc ModelSpecOverride,
  get_model_metadata_impl_test.cc ModelSpecOverride: the `...WithModelSpec` C++ entry points take
  a ModelSpec that overrides the request's; a request on the wire has one model_spec.

Ported in part (counted as run): predict_util_test.cc ThreadPoolOptions and predict_impl_test.cc
ThreadPoolFactory check the response as upstream does; their count of tasks run on a
caller-supplied C++ thread pool has no wire form. Not ported: upstream's private `_TestBadModel`
helpers in tensorflow_model_server_test.py (no `test` prefix, so no test cases).
"""

NOT_APPLICABLE: tuple[tuple[str, str], ...] = (
    ("model_servers/tensorflow_model_server_test.py::testPredictOnTfLite",
     "TF Lite platform (--prefer_tflite_model): this server loads SavedModels only"),
    ("model_servers/tensorflow_model_server_test.py::testPredictWithSignatureDefOnTfLite",
     "TF Lite platform (--prefer_tflite_model): this server loads SavedModels only"),
    ("servables/tensorflow/predict_impl_test.cc::PredictImplTest.ModelSpecOverride",
     "TensorflowPredictor::PredictWithModelSpec, an in-process C++ API: a PredictRequest on the wire "
     "has one model_spec, no override"),
    ("model_servers/get_model_status_impl_test.cc::GetModelStatusImplTest.ModelSpecOverride",
     "GetModelStatusImpl::GetModelStatusWithModelSpec, an in-process C++ API with no wire form"),
    ("servables/tensorflow/get_model_metadata_impl_test.cc::GetModelMetadataImplTest.ModelSpecOverride",
     "GetModelMetadataImpl::GetModelMetadataWithModelSpec, an in-process C++ API with no wire form"),
    ("servables/tensorflow/classification_service_test.cc::ModelSpecOverride",
     "ClassifyWithModelSpec: an in-process C++ entry point taking a ModelSpec apart from the "
     "request; a Classify RPC carries only the request's"),
    ("servables/tensorflow/regression_service_test.cc::ModelSpecOverride",
     "RegressWithModelSpec: an in-process C++ entry point taking a ModelSpec apart from the "
     "request; a Regress RPC carries only the request's"),
)
