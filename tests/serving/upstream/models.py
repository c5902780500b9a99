"""TF Serving's test models, written by our own code following tensorflow/serving's generator
scripts (release 2.20, `tensorflow_serving/servables/tensorflow/testdata/`):

- `saved_model_half_plus_two.py`: the TF1 half_plus_two models (`a`, `b`, `c` variables, a
  `tf_example` placeholder parsed with `parse_example`, predict / classify / regress signatures,
  an asset `foo.txt` assigned to `filename_tensor` by the main op) and the native TF2 one
  (`HalfPlusTwoModel`, a `tf.Module` with the same signatures);
- the checked-in models those scripts produced in older TF releases, which the tests load:
  `saved_model_half_plus_two_cpu` (TF 1.14: reference variables, `tf_example` of unknown rank,
  `saved_model_main_op`), `saved_model_half_plus_two_2_versions` (TF 1.1: versions `00000123/`
  and `00000124/`, `legacy_init_op`, a `classify_x2_to_y3` signature),
  `saved_model_half_plus_three` (TF 1.0: `legacy_init_op`, signature tensors without shapes);
- TensorFlow's `cc/saved_model/testdata/half_plus_two`, which the C++ tests load (the same
  script's model, with `classify_x2_to_y3`), and a model without signatures in place of
  `bad_half_plus_two` (a SessionBundle export upstream; no wire difference: nothing to serve);
- `export_counter.py`: `saved_model_counter`, a reference variable with assign ops behind four
  stateful predict signatures;
- `tensorflow_model_server_test.py`'s own models (`tf.saved_model.save` of a `tf.train.Checkpoint`,
  multiple signatures, Keras Sequential models, one under `tf.distribute.MirroredStrategy`);
- `tf_text_regression/01`: a model that runs a TF Text op (a whitespace tokenizer) next to
  half_plus_two, in a zero-padded version folder `01/`;
- the config files of the testdata folder (good / bad model config, batching, monitoring).

Run as a script (`python models.py OUT_DIR`), once per test session, by the `upstream_models`
fixture: a process of its own can still split the CPU into the two virtual devices that the
MirroredStrategy model needs, and TF1 graph building leaves no state in the test process.

Upstream's Keras tests save a Keras 2 model with `tf.saved_model.save`, whose signature is named
after the Input layer (`x`) and the last layer (`y`). A Keras 3 model saved that way gets
`inputs` / `output_0`, and its checkpoint is not restored into the serving function's variables
by TensorFlow's TF1 loader, which TF Serving uses (a Dense layer reads "Could not find variable").
The Keras models here are Keras 3 models written by Keras 3's SavedModel exporter
(`keras.export.ExportArchive`, what `model.export` uses), with Keras 2's signature names.
"""

from __future__ import annotations

import os
import sys

# A Keras 3 Sequential model under MirroredStrategy over two CPUs, as upstream's
# test_distrat_sequential_keras_saved_model_save (SetVirtualCpus(2)).
VIRTUAL_CPUS = 2


def _tf1():
    import tensorflow as tf

    return tf.compat.v1


def _write_asset(folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "foo.txt")
    with open(path, "w") as f:
        f.write("asset-file-contents")
    return path


def _original_assets(export_dir: str) -> str:
    """Where the generator writes foo.txt before the builder copies it into assets/ (upstream:
    /tmp/original/export/assets): beside the model's base path."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(export_dir))), "original_assets")


def _signature(inputs: dict, outputs: dict, method: str, shapes: bool = True):
    tf1 = _tf1()
    signature = tf1.saved_model.signature_def_utils.build_signature_def(
        {k: tf1.saved_model.utils.build_tensor_info(t) for k, t in inputs.items()},
        {k: tf1.saved_model.utils.build_tensor_info(t) for k, t in outputs.items()}, method)
    if not shapes:  # TF 1.0's build_tensor_info recorded no shapes
        for info in list(signature.inputs.values()) + list(signature.outputs.values()):
            info.ClearField("tensor_shape")
    return signature


PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def half_plus_two_tf1(export_dir: str, *, b: float = 2.0, c: float = 3.0, main_op: str = "main_op",
                      separate_y3_variables: bool = True, classify_x2_to_y3: bool = False,
                      signature_shapes: bool = True, as_text: bool = False,
                      mlmd_uuid: str | None = None) -> str:
    """saved_model_half_plus_two.py's `_generate_saved_model_for_half_plus_two` (cpu): y = a*x + b,
    y2 = a*x + c, y3 = a*x2 + c (own variables a2, c2 unless `separate_y3_variables` is off, as in
    the older checked-in models). `main_op` picks the init collection: "main_op" (main_op=,
    `saved_model_main_op`), "main_op_with_init" (use_main_op=True: tables and variables
    initialised too) or "legacy_init_op" (TF 1.0 / 1.1 exports)."""
    tf1 = _tf1()
    builder = tf1.saved_model.Builder(export_dir)
    with tf1.Session(graph=tf1.Graph()) as sess:
        with tf1.device("/cpu:0"):
            def variable(value, name):
                # TF1 variables: VariableV2 ops with reference-typed outputs (float_ref).
                return tf1.Variable(value, name=name, use_resource=False)

            a, b_var, c_var = variable(0.5, "a"), variable(b, "b"), variable(c, "c")
            # The checked-in models' placeholder has unknown rank (the script says [None]).
            serialized = tf1.placeholder(tf1.string, name="tf_example", shape=None)
            features = tf1.parse_example(serialized, {
                "x": tf1.FixedLenFeature([1], dtype=tf1.float32),
                "x2": tf1.FixedLenFeature([1], dtype=tf1.float32, default_value=[0.0])})
            # TF 1.x's ParseExample gave [batch, 1] outputs for any serialized input; TF 2's
            # ParseExampleV2 gives unknown rank for an input of unknown rank.
            features["x"].set_shape([None, 1])
            features["x2"].set_shape([None, 1])
            x = tf1.identity(features["x"], name="x")
            y = tf1.identity(tf1.add(tf1.multiply(a, x), b_var), name="y")
            y2 = tf1.identity(tf1.add(tf1.multiply(a, x), c_var), name="y2")
            x2 = tf1.identity(features["x2"], name="x2")
            if separate_y3_variables:
                a2, c2 = variable(0.5, "a2"), variable(c, "c2")
                y3 = tf1.identity(tf1.add(tf1.multiply(a2, x2), c2), name="y3")
            else:
                y3 = tf1.identity(tf1.add(tf1.multiply(a, x2), c_var), name="y3")

        asset_path = _write_asset(_original_assets(export_dir))
        asset_tensor = tf1.constant(asset_path)
        tf1.add_to_collection(tf1.GraphKeys.ASSET_FILEPATHS, asset_tensor)
        filename = tf1.Variable("foo.txt", name="filename_tensor", trainable=False, collections=[],
                                use_resource=False)
        assign_filename = filename.assign("foo.txt")

        shapes = signature_shapes
        signatures = {
            "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS, shapes),
            "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, REGRESS, shapes),
            "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS, shapes),
            "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, CLASSIFY, shapes),
            "serving_default": _signature({"x": x}, {"y": y}, PREDICT, shapes),
        }
        if classify_x2_to_y3:
            signatures["classify_x2_to_y3"] = _signature({"inputs": x2}, {"scores": y3}, CLASSIFY, shapes)
        sess.run(tf1.global_variables_initializer())
        assets = tf1.get_collection(tf1.GraphKeys.ASSET_FILEPATHS)
        if main_op == "legacy_init_op":
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map=signatures, assets_collection=assets,
                legacy_init_op=tf1.group(assign_filename), strip_default_attrs=True)
        else:
            op = tf1.group(tf1.saved_model.main_op.main_op(), assign_filename) \
                if main_op == "main_op_with_init" else tf1.group(assign_filename)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map=signatures, assets_collection=assets,
                main_op=op, strip_default_attrs=True)
    builder.save(as_text)
    if mlmd_uuid is not None:
        os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
        with open(os.path.join(export_dir, "assets.extra", "mlmd_uuid"), "w") as f:
            f.write(mlmd_uuid)
    return export_dir


def no_signatures(export_dir: str) -> str:
    """bad_half_plus_two (predict_util_test.cc ModelMissingSignatures): a model that loads but
    has no signature to serve."""
    tf1 = _tf1()
    with tf1.Session(graph=tf1.Graph()) as sess:
        a = tf1.Variable(0.5, name="a", use_resource=False)
        x = tf1.placeholder(tf1.float32, name="x")
        tf1.identity(a * x + 2.0, name="y")
        sess.run(tf1.global_variables_initializer())
        builder = tf1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(sess, ["serve"])
        builder.save()
    return export_dir


def half_plus_two_tf2(export_dir: str) -> str:
    """saved_model_half_plus_two.py's `HalfPlusTwoModel` (tf2=True)."""
    import tensorflow as tf

    spec = {"x": tf.io.FixedLenFeature([1], dtype=tf.float32),
            "x2": tf.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0])}
    asset_path = _write_asset(_original_assets(export_dir))

    class HalfPlusTwoModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")
            self.asset = tf.saved_model.Asset(asset_path)

        def compute(self, x, inc):
            return tf.add(tf.multiply(self.a, x), inc)

        @tf.function(input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32)])
        def predict(self, x):
            return {"y": self.compute(x, self.b)}

        @tf.function(input_signature=[tf.TensorSpec([None], dtype=tf.string, name="inputs")])
        def regress_xy(self, serialized_proto):
            x = tf.io.parse_example(serialized_proto, spec)["x"]
            return {"outputs": self.compute(x, self.b)}

        @tf.function(input_signature=[tf.TensorSpec([None], dtype=tf.string, name="inputs")])
        def regress_xy2(self, serialized_proto):
            x = tf.io.parse_example(serialized_proto, spec)["x"]
            return {"outputs": self.compute(x, self.c)}

        @tf.function(input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32, name="inputs")])
        def regress_x2y3(self, x2):
            return {"outputs": self.compute(x2, self.c)}

        @tf.function(input_signature=[tf.TensorSpec([None], dtype=tf.string, name="inputs")])
        def classify_xy(self, serialized_proto):
            x = tf.io.parse_example(serialized_proto, spec)["x"]
            return {"scores": self.compute(x, self.b)}

        @tf.function(input_signature=[tf.TensorSpec(shape=[1], dtype=tf.float32, name="inputs")])
        def classify_x2y3(self, x2):
            return {"scores": self.compute(x2, self.c)}

    model = HalfPlusTwoModel()
    tf.saved_model.save(model, export_dir, signatures={
        "regress_x_to_y": model.regress_xy, "regress_x_to_y2": model.regress_xy2,
        "regress_x2_to_y3": model.regress_x2y3, "classify_x_to_y": model.classify_xy,
        "classify_x2_to_y3": model.classify_x2y3, "serving_default": model.predict})
    return export_dir


def counter(export_dir: str) -> str:
    """export_counter.py: get_counter, incr_counter, incr_counter_by, reset_counter over one
    reference variable (the checked-in model is a TF 1.5 export: VariableV2, float_ref)."""
    tf1 = _tf1()
    with tf1.Session(graph=tf1.Graph()) as sess:
        count = tf1.Variable(0.0, dtype=tf1.float32, name="counter", use_resource=False)
        with tf1.name_scope("incr_counter_op"):
            incr = count.assign_add(1.0)
        delta = tf1.placeholder(dtype=tf1.float32, name="delta")
        with tf1.name_scope("incr_counter_by_op"):
            incr_by = count.assign_add(delta)
        with tf1.name_scope("reset_counter_op"):
            reset = count.assign(0.0)
        sess.run(tf1.global_variables_initializer())
        signatures = {
            "get_counter": _signature({}, {"output": count}, PREDICT),
            "incr_counter": _signature({}, {"output": incr}, PREDICT),
            "incr_counter_by": _signature({"delta": delta}, {"output": incr_by}, PREDICT),
            "reset_counter": _signature({}, {"output": reset}, PREDICT),
        }
        builder = tf1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
        builder.save()
    return export_dir


def checkpoint_function(export_dir: str) -> str:
    """tensorflow_model_server_test.py test_tf_saved_model_save: y = v1 * v2 * x, x of any shape."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.)
    root.v2 = tf.Variable(2.)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    to_save = root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))
    tf.saved_model.save(root, export_dir, to_save)
    return export_dir


def multiple_signatures(export_dir: str) -> str:
    """tensorflow_model_server_test.py test_tf_saved_model_save_multiple_signatures."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, export_dir, signatures={"serving_default": root.f,
                                                      "custom_signature_key": root.g})
    return export_dir


def keras_sequential(export_dir: str, distributed: bool = False) -> str:
    """test_sequential_keras_saved_model_save (an identity Lambda named y over Input x) and
    test_distrat_sequential_keras_saved_model_save (Dense(1) with ones / zeros first, built under
    MirroredStrategy over two virtual CPUs), exported with serving_default: x -> y."""
    import contextlib

    import tensorflow as tf

    scope = tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1")).scope() if distributed \
        else contextlib.nullcontext()
    with scope:
        model = tf.keras.models.Sequential()
        model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
        if distributed:
            model.add(tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
        model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))

    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: {"y": model(x)},
                         input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    archive.write_out(export_dir, verbose=False)
    return export_dir


def tf_text(export_dir: str) -> str:
    """tf_text_regression: half_plus_two where the 2 is the number of tokens TF Text's whitespace
    tokenizer finds in "hello world", so the model only loads where TF Text's ops are registered."""
    import tensorflow as tf
    import tensorflow_text as text

    module = tf.Module()
    module.a = tf.Variable(0.5)
    tokenizer = text.WhitespaceTokenizer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(x):
        tokens = tokenizer.tokenize(tf.constant(["hello world"]))
        return {"y": module.a * x + tf.cast(tf.size(tokens.flat_values), tf.float32)}

    module.serve = serve
    tf.saved_model.save(module, export_dir, signatures={"serving_default": serve})
    return export_dir


CONFIG_FILES = {
    # testdata/good_model_config.txt (a template: tensorflow_model_server_test.py fills in paths)
    "good_model_config.txt": """model_config_list: {
  config: {
    name: "half_plus_two",
    base_path: "${TEST_HALF_PLUS_TWO_DIR}",
    model_platform: "tensorflow"
  },
  config: {
    name: "half_plus_three",
    base_path: "${TEST_HALF_PLUS_THREE_DIR}",
    model_platform: "tensorflow"
  }
}
""",
    "bad_model_config.txt": "improperly formatted file",
    "batching_config.txt": """max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
""",
    "monitoring_config.txt": """prometheus_config: {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
""",
}


def write_all(root: str) -> dict[str, str]:
    """Every model and config file under `root`, laid out as upstream's testdata folder; returns
    name -> model base path (the folder holding version folders) or config file path."""
    j = os.path.join
    paths = {
        "saved_model_half_plus_two_cpu": half_plus_two_tf1(
            j(root, "saved_model_half_plus_two_cpu", "00000123")),
        "saved_model_half_plus_two_main_op": half_plus_two_tf1(
            j(root, "saved_model_half_plus_two_main_op", "00000123"), main_op="main_op_with_init"),
        "saved_model_half_plus_two_pbtxt": half_plus_two_tf1(
            j(root, "saved_model_half_plus_two_pbtxt", "00000123"), as_text=True),
        "saved_model_half_plus_two_mlmd": half_plus_two_tf1(
            j(root, "saved_model_half_plus_two_mlmd", "00000123"), mlmd_uuid="test_mlmd_uuid"),
        "saved_model_half_plus_two_tf2_cpu": half_plus_two_tf2(
            j(root, "saved_model_half_plus_two_tf2_cpu", "00000123")),
        "saved_model_half_plus_three": half_plus_two_tf1(
            j(root, "saved_model_half_plus_three", "00000123"), b=3.0, c=4.0, main_op="legacy_init_op",
            separate_y3_variables=False, signature_shapes=False),
        "saved_model_counter": counter(j(root, "saved_model_counter", "00000123")),
        # TensorFlow's cc/saved_model/testdata/half_plus_two (the C++ tests' model): the same
        # script, with classify_x2_to_y3.
        "half_plus_two": half_plus_two_tf1(j(root, "half_plus_two", "00000123"), main_op="legacy_init_op",
                                           separate_y3_variables=False, classify_x2_to_y3=True),
        "bad_half_plus_two": no_signatures(j(root, "bad_half_plus_two", "00000123")),
        "tf_saved_model_save": checkpoint_function(j(root, "tf_saved_model_save", "00000123")),
        "tf_saved_model_save_multiple_signatures": multiple_signatures(
            j(root, "tf_saved_model_save_multiple_signatures", "00000123")),
        "keras_sequential_saved_model_save": keras_sequential(
            j(root, "keras_sequential_saved_model_save", "00000123")),
        "keras_distrat_sequential_saved_model_save": keras_sequential(
            j(root, "keras_distrat_sequential_saved_model_save", "00000123"), distributed=True),
        "tf_text_regression": tf_text(j(root, "tf_text_regression", "01")),
    }
    paths = {name: os.path.dirname(path) for name, path in paths.items()}  # base paths
    for version in ("00000123", "00000124"):
        half_plus_two_tf1(j(root, "saved_model_half_plus_two_2_versions", version),
                          main_op="legacy_init_op", separate_y3_variables=False, classify_x2_to_y3=True)
    paths["saved_model_half_plus_two_2_versions"] = j(root, "saved_model_half_plus_two_2_versions")
    for name, text in CONFIG_FILES.items():
        with open(j(root, name), "w") as f:
            f.write(text)
        paths[name] = j(root, name)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python models.py OUT_DIR", file=sys.stderr)
        return 2
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(VIRTUAL_CPUS)])
    paths = write_all(os.path.abspath(argv[1]))
    for name, path in sorted(paths.items()):
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
