"""A SavedModel held as TF Serving holds it: a session bundle.

TF Serving loads every SavedModel, TF1 or TF2, with TensorFlow's TF1 loader
(`LoadSavedModel`, servables/tensorflow/saved_model_bundle_factory.cc): the meta graph with the
requested tags imported into a Session, the variables restored by the saver's restore op, the
asset files fed to their tensors, then the main op (or the legacy init op, or the
`__saved_model_init_op` signature) run once. A request is one `Session::Run` feeding the
signature's input tensors by name and fetching its output tensors (predict_util.cc, RunPredict).

So does this class, with the same consequences: TF1 exports with reference variables
(`float_ref`), legacy init ops and signature tensors of any shape load; a request is checked by
the graph, not by the signature's declared shapes (a `[None, 1]` input takes a `[3]` tensor when
the ops do); a tensor of another dtype gets the runtime's own "Expects arg[0] to be float but
bool is provided". Python's `Session.run` would check shapes and convert dtypes on its own, so
`run` calls the Session's C entry point (`_call_tf_sessionrun`, the call `Session.run` ends in)
with the feeds as given.
"""

from __future__ import annotations

import numpy as np


class SessionBundle:
    """One loaded SavedModel: `signature_defs` (name -> SignatureDef), `run(feeds, fetches)`."""

    def __init__(self, path: str, tags: tuple[str, ...] = ("serve",), session_config=None):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers TF Text's ops, as TF Serving links them in)

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        try:
            with self.graph.as_default():
                self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), path)
            self.session._extend_graph()  # every node in the runtime before the graph is frozen
        except Exception:
            self.session.close()
            raise
        self.graph.finalize()
        self.signature_defs = self.meta_graph.signature_def
        self._outputs: dict[str, object] = {}

    def _output(self, name: str):
        """A tensor name ("x:0") as the C API's TF_Output, cached (the graph is frozen)."""
        output = self._outputs.get(name)
        if output is None:
            output = self._outputs[name] = self.graph.get_tensor_by_name(name)._as_tf_output()
        return output

    def run(self, feeds: list[tuple[str, np.ndarray]], fetches: list[str]) -> list[np.ndarray]:
        """Session::Run: feed tensors by name, fetch tensors by name; errors are TensorFlow's
        OpErrors, with the runtime's messages."""
        feed_dict = {self._output(name): value for name, value in feeds}
        return self.session._call_tf_sessionrun(None, feed_dict, [self._output(n) for n in fetches], [], None)

    def close(self) -> None:
        self.session.close()
