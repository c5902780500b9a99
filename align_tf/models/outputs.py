"""Model outputs: a dict (so fit(), predict(), tf.nest, SavedModel signatures and `out["key"]`
keep working) that also reads like transformers' ModelOutput (`out.logits_per_image`,
`out.to_tuple()`, `out[0]`)."""

from __future__ import annotations


def _register_tree_node(cls) -> None:
    """Make Keras's tree utilities (optree, namespace "keras") and JAX see through the type, as
    they see through a dict; tf.nest already does (it rebuilds dict subclasses from pairs)."""
    def flatten(out):
        keys = sorted(dict.keys(out))
        return [dict.__getitem__(out, k) for k in keys], keys, keys

    def unflatten(keys, values):
        return cls(zip(keys, values))

    try:
        import optree

        optree.register_pytree_node(cls, flatten, unflatten, namespace="keras")
    except (ImportError, ValueError):  # no optree, or registered already (module reloaded)
        pass
    import sys

    if "jax" in sys.modules:  # only when JAX is in use; importing it here would cost seconds
        try:
            import jax

            jax.tree_util.register_pytree_node(cls, lambda o: flatten(o)[:2],
                                               lambda keys, values: cls(zip(keys, values)))
        except ValueError:
            pass


class ModelOutput(dict):
    """A dict of the fields that were computed, in the reference's field order.

    A field of the class that was not computed reads as None by attribute (as in transformers);
    `on_request` names fields that exist only when the call asked for them, and reading one of
    those that is absent says how to ask for it instead of returning None.
    """

    fields: tuple[str, ...] = ()
    on_request: dict[str, str] = {}

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self:
            return self[name]
        if name in self.on_request:
            raise AttributeError(f"{type(self).__name__}.{name} was not computed: {self.on_request[name]}")
        if name in self.fields:
            return None
        raise AttributeError(f"{type(self).__name__} has no field {name!r} (it has {sorted(self)})")

    def __getitem__(self, key):
        # Integer / slice indexing reads the tuple form, like transformers' ModelOutput.
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return dict.__getitem__(self, key)

    def to_tuple(self) -> tuple:
        """The present fields in the reference's order; nested outputs as their own tuples."""
        order = [k for k in self.fields if k in self] + [k for k in self if k not in self.fields]
        values = (dict.__getitem__(self, k) for k in order)
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    def __reduce__(self):
        return type(self), (dict(self),)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _register_tree_node(cls)


class TextModelOutput(ModelOutput):
    """transformers' BaseModelOutputWithPooling (AlignTextModel, get_text_features)."""

    fields = ("last_hidden_state", "pooler_output", "hidden_states", "attentions")


class VisionModelOutput(ModelOutput):
    """transformers' BaseModelOutputWithPoolingAndNoAttention (AlignVisionModel), NHWC maps."""

    fields = ("last_hidden_state", "pooler_output", "hidden_states")


_TOWERS_HINT = ("call with return_dict=True (or output_hidden_states / output_attentions); "
                "the default call computes only the embeddings and logits, on the fast path")


class AlignOutput(ModelOutput):
    """transformers' AlignOutput: loss, logits_per_image, logits_per_text, text_embeds,
    image_embeds, text_model_output, vision_model_output."""

    fields = ("loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds",
              "text_model_output", "vision_model_output")
    on_request = {"text_model_output": _TOWERS_HINT, "vision_model_output": _TOWERS_HINT}


_register_tree_node(ModelOutput)
