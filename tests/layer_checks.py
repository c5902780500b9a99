"""One check for every layer and model of align-tf, after keras-hub's `TestCase.run_layer_test`:
`get_config` holds exactly the constructor arguments and rebuilds the same layer, dtype policies
reach every sub-layer (float32 variables, outputs in the compute dtype), and `.keras` saving
round-trips models."""

from __future__ import annotations

import inspect

import keras
import numpy as np


def _outputs(value):
    """The first tensor of a layer's output (a tensor, a tuple or a dict)."""
    if isinstance(value, dict):
        value = next(iter(value.values()))
    if isinstance(value, (tuple, list)):
        value = value[0]
    return value


def check_config_round_trip(make_layer, args, kwargs=None):
    """`get_config()` names every constructor argument; `from_config` rebuilds a layer that, given
    the same weights, computes the same outputs."""
    kwargs = kwargs or {}
    layer = make_layer()
    expected = _outputs(layer(*args, **kwargs))
    config = layer.get_config()
    parameters = [p for name, p in inspect.signature(type(layer).__init__).parameters.items()
                  if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    missing = [p.name for p in parameters if p.name not in config]
    assert not missing, f"{type(layer).__name__}.get_config() lacks {missing}"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    _outputs(clone(*args, **kwargs))  # builds it
    assert len(clone.weights) == len(layer.weights)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(_outputs(clone(*args, **kwargs))),
                                  keras.ops.convert_to_numpy(expected))


def check_dtype_policies(make_layer, args, kwargs=None, policies=("mixed_float16", "mixed_bfloat16")):
    """Under each policy every variable stays float32 and the output has the compute dtype (or
    float32 where the layer deliberately returns it)."""
    kwargs = kwargs or {}
    for policy in policies:
        layer = make_layer(dtype=policy)
        out = _outputs(layer(*args, **kwargs))
        compute = keras.DTypePolicy(policy).compute_dtype
        assert all(v.dtype == "float32" for v in layer.weights), policy
        sub_layers = [s for s in layer._flatten_layers(include_self=False) if s.weights]
        assert all(s.dtype_policy.name == policy for s in sub_layers), policy
        assert keras.backend.standardize_dtype(out.dtype) in (compute, "float32"), (policy, out.dtype)


def check_keras_saving(model, inputs, tmp_path):
    """`model.save(.keras)` and `keras.saving.load_model` give a model with the same outputs."""
    expected = model(inputs)
    path = str(tmp_path / f"{type(model).__name__}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    got = restored(inputs)
    for key in ("image_embeds", "text_embeds", "logits_per_image", "last_hidden_state", "pooler_output"):
        if key in expected:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(got[key]),
                                          keras.ops.convert_to_numpy(expected[key]))


def executed_kernels(fn, *args) -> list[tuple[str, tuple[str, ...]]]:
    """(op, fused_ops) of every node TensorFlow actually ran for the first call of `fn`, after
    grappler's and oneDNN's rewrites (the partition graphs of the run metadata)."""
    from tensorflow.python.eager import context

    ctx = context.context()
    ctx.enable_run_metadata()
    ctx.enable_graph_collection()
    ctx.export_run_metadata()  # drop what earlier calls (another test's fit) left collected
    try:
        fn(*args)
        metadata = ctx.export_run_metadata()
    finally:
        ctx.disable_graph_collection()
        ctx.disable_run_metadata()
    return [(node.op, tuple(s.decode() for s in node.attr["fused_ops"].list.s))
            for graph in metadata.function_graphs for partition in graph.partition_graphs
            for node in partition.node]
