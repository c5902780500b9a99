"""Reading a model call's inputs the way transformers' models take them: a dict (what fit() and
predict() pass) or keyword arguments, never dropping a key it does not know."""

from __future__ import annotations

from collections.abc import Mapping
from align_tf.errors import ArgumentTypeError

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
               "head_mask")
VISION_INPUTS = ("pixel_values",)
ALIGN_INPUTS = TEXT_INPUTS + VISION_INPUTS


def gather_inputs(owner: str, first, first_name: str, accepted, named: dict) -> dict:
    """{name: value} of the given (non-None) inputs.

    `first` is the call's first positional argument: a mapping of inputs (a dict call) or the
    value of `first_name`. A key the model does not take, or one given both in the mapping and
    as a keyword, raises TypeError naming it. Ragged tensors (a tokenizer's `padding=False`
    output) are padded with zeros, which is what their attention mask then says."""
    named = {k: v for k, v in named.items() if v is not None}
    if isinstance(first, Mapping):
        unknown = sorted(set(first) - set(accepted))
        if unknown:
            raise ArgumentTypeError(f"{owner} got input(s) it does not take: {', '.join(map(str, unknown))}; "
                            f"it takes {', '.join(accepted)}")
        twice = sorted(k for k in first if k in named and first[k] is not None)
        if twice:
            raise ArgumentTypeError(f"{owner} got {', '.join(twice)} both in the input dict and as keyword(s)")
        named.update({k: v for k, v in first.items() if v is not None})
    elif first is not None:
        if first_name in named:
            raise ArgumentTypeError(f"{owner} got {first_name} both positionally and as a keyword")
        named[first_name] = first
    return {k: _dense(v) for k, v in named.items()}


def _dense(value):
    if type(value).__name__ == "RaggedTensor":  # TF only; checked by name to stay backend-free
        return value.to_tensor()
    return value


def wants_tower_outputs(return_dict, output_hidden_states, output_attentions) -> bool:
    """Whether a call asked for more than the default (fast path) outputs."""
    return return_dict is not None or bool(output_hidden_states) or bool(output_attentions)


def finish(output, return_dict):
    """The output as asked: the mapping, or with return_dict=False the reference's tuple."""
    return output.to_tuple() if return_dict is False else output
