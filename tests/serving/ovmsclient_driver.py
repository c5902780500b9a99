"""Drive a TF Serving endpoint with OpenVINO's `ovmsclient`, the way a user of that package
would, and print what it got as one JSON object. Run as its own process by
test_conformance.py: a third-party client, with no TensorFlow and none of this repository's code
imported (the driver checks both).

    python ovmsclient_driver.py grpc|http TARGET MODEL VERSION IMAGE_FILE... -- LABEL...

ovmsclient sends version 0 unless told otherwise (OpenVINO Model Server's "default version");
TF Serving reads a version that is present as that exact version (server_core.cc,
ServableRequestFromModelSpec), so a user of ovmsclient against TF Serving passes
`model_version`, as this driver does; it also records what the default gets.
"""

import json
import sys

import numpy as np
import ovmsclient


def plain(value):
    """ovmsclient's answers (numpy arrays, nested dicts) as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def main(argv):
    protocol, target, model, version = argv[0], argv[1], argv[2], int(argv[3])
    split = argv.index("--")
    images = [open(path, "rb").read() for path in argv[4:split]]
    labels = argv[split + 1:]
    make = ovmsclient.make_grpc_client if protocol == "grpc" else ovmsclient.make_http_client
    client = make(target)
    out = {"status": client.get_model_status(model_name=model, model_version=version),
           "metadata": client.get_model_metadata(model_name=model, model_version=version),
           # ovmsclient always calls the default signature (serving_default = classify here).
           "predict": client.predict(inputs={"image_bytes": images, "text": labels}, model_name=model,
                                     model_version=version)}
    for key, call in (("unknown model", lambda: client.predict(inputs={"text": labels}, model_name="no_such_model",
                                                              model_version=version)),
                      ("default version", lambda: client.get_model_status(model_name=model))):
        try:
            call()
            out[key] = None
        except Exception as e:  # the test reads the type and the message
            out[key] = {"type": type(e).__name__, "message": str(e)}
    out["imported"] = sorted(m for m in ("tensorflow", "align_tf", "tensorflow_serving") if m in sys.modules)
    print(json.dumps(plain(out)))


if __name__ == "__main__":
    main(sys.argv[1:])
