"""`--serving-url`: the workers send images to a TF Serving endpoint (here the local server on
loopback, same gRPC API) instead of loading the model, and get the same embeddings and errors."""

import json
import os

import numpy as np

from support import free_port


def test_serving_url_gives_the_savedmodel_embeddings(corpus, tmp_path, embeddings_of):
    from align_tf.corpus import embed_corpus
    from align_tf.serving.server import ModelConfig, ModelManager, start_grpc_server

    manager = ModelManager([ModelConfig(name="align", base_path=os.path.dirname(
        corpus["saved_model"]))], poll_seconds=0, warmup=False)
    manager.poll()
    address = f"127.0.0.1:{free_port()}"
    server, _ = start_grpc_server(manager, address, 64 << 20, 4)
    try:
        output = str(tmp_path / "served")
        manifest = embed_corpus([os.path.join(corpus["folder"], "photos", "2024"),
                                 os.path.join(corpus["folder"], "broken")], output,
                                serving_url=address, serving_model_name="align", batch_size=8,
                                progress=False)
    finally:
        server.stop(0)
        manager.stop()
    assert manifest["model"]["identity"] == f"serving:{address}/align"
    assert manifest["counts"] == {"inputs": 21, "embedded": 20, "errors": 1, "shards": 2,
                                  "shards_this_run": 2}
    served, local = embeddings_of(output), embeddings_of(corpus["output"])
    for key, vector in served.items():
        np.testing.assert_allclose(vector, local["photos/2024/" + key], atol=1e-6)
    with open(os.path.join(output, "errors.jsonl")) as f:
        error = json.loads(f.readline())
    assert error["id"] == "not_an_image.jpg"
    assert "not a JPEG/PNG/GIF/BMP" in error["reason"]
