"""TensorFlow's profiler service on the gRPC port (`--enable_profiler`, on by default), as
tensorflow_model_server registers it (server.cc: tsl::profiler::CreateProfilerService).

`tensorflow.ProfilerService/Profile` (what `tf.profiler.experimental.client.trace` and
TensorBoard's "capture profile" call) profiles this process for the request's `duration_ms` with
TensorFlow's own profiler and writes the trace where the request says, as TF's service does:
`<repository_root>` is `<logdir>/plugins/profile`, and the trace lands in a run folder there
(`tf.profiler.experimental.stop` names it). The reply is an empty ProfileResponse, i.e.
`empty_trace: false` with the tool data left on disk. One profile at a time; the other methods
of the service (Monitor, Terminate, continuous profiling) answer UNIMPLEMENTED.

TensorFlow's Python package ships no classes for these messages, so the request is read with a
small message type declared here with the field numbers of tsl/profiler/protobuf/
profiler_service.proto (duration_ms = 1, repository_root = 5, session_id = 6); other fields are
skipped.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import grpc

log = logging.getLogger("align_tf.serving")

SERVICE = "tensorflow.ProfilerService"
_PLUGIN_DIR = os.path.join("plugins", "profile")
_lock = threading.Lock()
_request_class = None


def _profile_request_class():
    global _request_class
    if _request_class is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        field = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(name="align_tf/profile_request.proto",
                                                  package="align_tf_profiler", syntax="proto3")
        message = file.message_type.add(name="ProfileRequest")
        for name, number, kind in (("duration_ms", 1, field.TYPE_UINT64), ("repository_root", 5, field.TYPE_STRING),
                                   ("session_id", 6, field.TYPE_STRING), ("host_name", 7, field.TYPE_STRING)):
            message.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        _request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("align_tf_profiler.ProfileRequest"))
    return _request_class


def profile(request_bytes: bytes, context) -> bytes:
    """Profile: trace this process for duration_ms into the request's repository."""
    import tensorflow as tf

    request = _profile_request_class().FromString(request_bytes)
    root = os.path.normpath(request.repository_root or ".")
    logdir = root[:-len(_PLUGIN_DIR)] if root.endswith(_PLUGIN_DIR) else root
    if not _lock.acquire(blocking=False):
        context.abort(grpc.StatusCode.UNAVAILABLE, "Another profiling session is active.")
    try:
        tf.profiler.experimental.start(logdir or ".")
        try:
            time.sleep(max(int(request.duration_ms), 1) / 1000)
        finally:
            tf.profiler.experimental.stop()
    except tf.errors.OpError as e:
        context.abort(grpc.StatusCode.UNAVAILABLE, e.message)
    finally:
        _lock.release()
    log.info("profiled %d ms into %s", request.duration_ms, os.path.join(logdir, _PLUGIN_DIR))
    return b""  # ProfileResponse{empty_trace: false}: the trace is in the repository


def profiler_handler():
    """The generic gRPC handler of tensorflow.ProfilerService (Profile only)."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Profile": grpc.unary_unary_rpc_method_handler(profile),  # bytes in, bytes out
    })
