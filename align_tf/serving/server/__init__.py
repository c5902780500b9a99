"""A local stand-in for `tensorflow_model_server`: TF Serving's gRPC and REST APIs over SavedModels.

For development and CI, where no TF Serving binary can be installed. It speaks the same wire
protocol (the servicer classes of `tensorflow-serving-api`, the REST routes and JSON formats),
loads versions the way TF Serving does (version policy, polling the base path) and answers
errors with TF Serving's status codes. It is not a production server: no request batching,
no GPU memory management, Python threads around `tf.saved_model.load`.

One file per concern: `model_config` (config files), `versions` (one model's versions),
`manager` (all models, request entry points), `replies` (status / metadata replies for both
protocols), `grpc_service`, `rest`, and `main` (`ServerOptions`, `serve`).
"""

from align_tf.serving.json_tensor import outputs_to_json, parse_predict_body
from align_tf.serving.server.grpc_service import start_grpc_server
from align_tf.serving.server.main import ServerOptions, serve
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.model_config import ModelConfig, read_model_config_file, read_text_proto
from align_tf.serving.server.rest import start_rest_server

__all__ = ["ModelConfig", "ModelManager", "ServerOptions", "outputs_to_json", "parse_predict_body",
           "read_model_config_file", "read_text_proto", "serve", "start_grpc_server",
           "start_rest_server"]
