"""The tensorflow/serving 2.20 test cases of the ported files that are not applicable to
`align-tf serve`, each with its reason: a case is not applicable only when it tests another
platform (TF Lite) or an in-process C++ API that has no wire form. Printed by the suite's
terminal summary (conftest.py)."""

NOT_APPLICABLE: tuple[tuple[str, str], ...] = (
    ("model_servers/tensorflow_model_server_test.py::testPredictOnTfLite",
     "TF Lite platform (--prefer_tflite_model): this server loads SavedModels only"),
    ("model_servers/tensorflow_model_server_test.py::testPredictWithSignatureDefOnTfLite",
     "TF Lite platform (--prefer_tflite_model): this server loads SavedModels only"),
    ("servables/tensorflow/classification_service_test.cc::ModelSpecOverride",
     "ClassifyWithModelSpec: an in-process C++ entry point taking a ModelSpec apart from the "
     "request; a Classify RPC carries only the request's"),
    ("servables/tensorflow/regression_service_test.cc::ModelSpecOverride",
     "RegressWithModelSpec: an in-process C++ entry point taking a ModelSpec apart from the "
     "request; a Regress RPC carries only the request's"),
    ("servables/tensorflow/predict_impl_test.cc::PredictImplTest.ModelSpecOverride",
     "TensorflowPredictor::PredictWithModelSpec, an in-process C++ API: a PredictRequest on the wire "
     "has one model_spec, no override"),
    ("model_servers/get_model_status_impl_test.cc::GetModelStatusImplTest.ModelSpecOverride",
     "GetModelStatusImpl::GetModelStatusWithModelSpec, an in-process C++ API with no wire form"),
    ("servables/tensorflow/get_model_metadata_impl_test.cc::GetModelMetadataImplTest.ModelSpecOverride",
     "GetModelMetadataImpl::GetModelMetadataWithModelSpec, an in-process C++ API with no wire form"),
)
