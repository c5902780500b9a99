"""The bounds every request is held to before anything is allocated for it, in one place for the
local server (requests it receives) and the client (replies it reads)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 256
# TensorFlow allows rank 254; numpy stops at 64. No model input here goes past 4.
DEFAULT_MAX_RANK = 32
# A decoded string costs its bytes plus about this much bookkeeping (a TF tstring is 24 bytes,
# a numpy object slot 8): counted so that a million empty strings are not "free".
STRING_OVERHEAD_BYTES = 32


@dataclass(frozen=True)
class RequestLimits:
    """`max_message_bytes` bounds a gRPC message or a REST body as received; `max_decoded_bytes`
    bounds the tensors of one request (or reply) once decoded, where TensorFlow's rule that a
    short value list is padded to the declared shape could otherwise make a few bytes into
    gigabytes; `max_batch_size` bounds the leading dimension; `max_rank` the number of
    dimensions (and so the nesting of a JSON tensor)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_decoded_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE
    max_rank: int = DEFAULT_MAX_RANK

    @property
    def max_json_depth(self) -> int:
        # {"instances": [{"name": <rank-deep lists>}]} nests three levels above the tensor.
        return self.max_rank + 3
