"""TensorProto <-> numpy, checked before anything is allocated, for the gRPC side of the client
and of the local server.

Decoding follows TensorFlow's `Tensor::FromProto` (tensorflow/core/framework/tensor.cc): the
declared shape must be valid (known rank, no negative dimension); `tensor_content` must hold
exactly the declared number of elements; typed values (`float_val`, `string_val`, ...) fill the
shape, a shorter list is padded with its last value (zeros when empty) and extra values are
ignored. Unlike `tf.make_ndarray`, the padded size is computed from the header and checked
against `RequestLimits` first, so a 43-byte message declaring 2**31 strings is refused, not
allocated. Encoding writes the typed fields (`Tensor::AsProtoField`, TF Serving's default) or
`tensor_content` (`--enable_serialization_as_tensor_content`).
"""

from __future__ import annotations

import math

import grpc
import numpy as np

from align_tf.errors import ServingError
from align_tf.serving.limits import STRING_OVERHEAD_BYTES, RequestLimits

# DataType enum value -> (numpy dtype, TensorFlow's name, the TensorProto field of its typed values).
_TYPES = {
    1: (np.float32, "float32", "float_val"), 2: (np.float64, "float64", "double_val"),
    3: (np.int32, "int32", "int_val"), 4: (np.uint8, "uint8", "int_val"),
    5: (np.int16, "int16", "int_val"), 6: (np.int8, "int8", "int_val"),
    7: (object, "string", "string_val"), 9: (np.int64, "int64", "int64_val"),
    10: (np.bool_, "bool", "bool_val"), 17: (np.uint16, "uint16", "int_val"),
    19: (np.float16, "float16", "half_val"), 22: (np.uint32, "uint32", "uint32_val"),
    23: (np.uint64, "uint64", "uint64_val"),
}
_INT64_MAX = 2 ** 63 - 1
_ENUM_BY_NUMPY = {np.dtype(t): enum for enum, (t, _, _) in _TYPES.items() if t is not object}


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


class TensorHeader:
    """What a TensorProto declares (dtype, shape, decoded size), read without decoding it."""

    def __init__(self, proto, alias: str, limits: RequestLimits):
        self.proto, self.alias = proto, alias
        if proto.dtype not in _TYPES:
            raise _invalid(f"tensor parsing error: {alias} (dtype enum {proto.dtype} is not one this "
                           f"server decodes: {', '.join(sorted(t[1] for t in _TYPES.values()))})")
        self.numpy_dtype, self.dtype_name, self.field = _TYPES[proto.dtype]
        shape = proto.tensor_shape
        if shape.unknown_rank:
            raise _invalid(f"tensor parsing error: {alias} (unknown rank; a request tensor needs a shape)")
        if len(shape.dim) > limits.max_rank:
            raise _invalid(f"tensor parsing error: {alias} (rank {len(shape.dim)} is more than "
                           f"{limits.max_rank} dimensions)")
        self.shape = tuple(int(d.size) for d in shape.dim)
        if any(d < 0 for d in self.shape):
            raise _invalid(f"tensor parsing error: {alias} (shape {list(self.shape)} has a negative "
                           "dimension; a tensor's dimensions are >= 0)")
        count = 1  # TensorShape::IsValid: the running product must not overflow int64
        for size in self.shape:
            count *= size
            if count > _INT64_MAX:
                raise _invalid(f"tensor parsing error: {alias} (shape {list(self.shape)} has more "
                               "elements than an int64 counts)")
        if count == 0 and math.prod(d for d in self.shape if d) > _INT64_MAX:
            raise _invalid(f"tensor parsing error: {alias} (shape {list(self.shape)} cannot be held "
                           "by an array here)")  # numpy sizes the dims of an empty array too
        self.num_elements = count

    def decoded_bytes(self) -> int:
        """Bytes the decoded tensor takes, padding included, computed from the header alone."""
        n = self.num_elements
        if self.numpy_dtype is not object:
            return n * np.dtype(self.numpy_dtype).itemsize
        values = self.proto.string_val
        k = len(values)
        stored = sum(map(len, values[:n] if k > n else values))
        padding = (n - k) * len(values[-1]) if 0 < k < n else 0
        return stored + padding + n * STRING_OVERHEAD_BYTES

    def decode(self) -> np.ndarray:
        n, proto, dtype = self.num_elements, self.proto, self.numpy_dtype
        if proto.tensor_content:
            if dtype is object:
                raise _invalid(f"tensor parsing error: {self.alias} (string tensors go in string_val, "
                               "not tensor_content)")
            expected = n * np.dtype(dtype).itemsize
            if len(proto.tensor_content) != expected:
                raise _invalid(f"tensor parsing error: {self.alias} (tensor_content holds "
                               f"{len(proto.tensor_content)} bytes; shape {list(self.shape)} of "
                               f"{self.dtype_name} needs {expected})")
            return np.frombuffer(proto.tensor_content, dtype=np.dtype(dtype).newbyteorder("<")) \
                .astype(dtype, copy=False).reshape(self.shape)
        values = getattr(proto, self.field)
        k = min(len(values), n)
        if dtype is object:
            flat = np.empty(n, dtype=object)
            flat[:k] = list(values[:k])
            flat[k:] = values[k - 1] if k else b""
        else:
            # int_val / half_val hold int32s: narrower dtypes take them cast (wrapped), as
            # FromProto does; half_val holds the float16 bit patterns.
            narrow = self.field in ("int_val", "half_val")
            flat = np.empty(n, dtype=dtype)
            head = np.fromiter(values[:k] if len(values) > n else values, dtype=np.int32 if narrow else dtype, count=k)
            if dtype is np.float16:
                head = head.astype(np.uint16).view(np.float16)
            flat[:k] = head.astype(dtype, copy=False) if narrow else head
            flat[k:] = flat[k - 1] if k else 0
        return flat.reshape(self.shape)


def check_total(headers, limits: RequestLimits, what: str = "request") -> None:
    """Refuse a request (or reply) whose tensors would take more than `max_decoded_bytes`."""
    total = sum(h.decoded_bytes() for h in headers)
    if total > limits.max_decoded_bytes:
        sizes = ", ".join(f"{h.alias} {h.dtype_name}{list(h.shape)}" for h in headers)
        raise _invalid(f"the {what}'s tensors ({sizes}) would take {total} bytes once decoded; "
                       f"the limit is {limits.max_decoded_bytes} bytes")


def decode_tensors(protos: dict, limits: RequestLimits, what: str = "request") -> dict[str, np.ndarray]:
    """Every TensorProto of a map, checked (headers and total size) before any is decoded."""
    headers = [TensorHeader(proto, alias, limits) for alias, proto in protos.items()]
    check_total(headers, limits, what)
    return {h.alias: h.decode() for h in headers}


def encode_tensor_proto(array: np.ndarray, tensor_content: bool = False):
    """A numpy array as a TensorProto: typed fields (TF Serving's default) or `tensor_content`."""
    from tensorflow.core.framework import tensor_pb2

    array = np.asarray(array)
    proto = tensor_pb2.TensorProto()
    if array.dtype == object or array.dtype.kind in "SU":
        proto.dtype = 7
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.flat)
    else:
        enum = _ENUM_BY_NUMPY.get(array.dtype)
        if enum is None:
            raise _invalid(f"cannot write a {array.dtype} tensor")
        proto.dtype = enum
        if tensor_content:
            proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        elif array.dtype == np.float16:
            proto.half_val.extend(array.ravel().view(np.uint16).tolist())
        else:
            getattr(proto, _TYPES[enum][2]).extend(array.ravel().tolist())
    proto.tensor_shape.SetInParent()  # Tensor::AsProtoField writes the shape, empty for a scalar
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto
