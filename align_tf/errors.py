"""Every error align-tf raises on purpose: one family under `AlignTFError`.

Each class also keeps the builtin base it always had (`ValueError`, `TypeError`, `OSError`, ...),
so `except ValueError:` written against earlier versions still catches it. The `align-tf` command
turns any of them into one line on stderr and exit code 2.
"""

from __future__ import annotations

import pickle


class AlignTFError(Exception):
    """Base class of every error align-tf raises on purpose."""

    # Raised inside a Keras layer's call (an input dict with a key the model does not take),
    # the message already names what was wrong: Keras's traceback filter re-raises an exception
    # that carries this marker as it is, instead of a copy whose first line is its "Exception
    # encountered when calling AlignModel.call()" banner (keras/src/utils/traceback_utils.py;
    # tests/models/test_call_errors.py checks the first line).
    _keras_call_info_injected = True


# -- configuration and checkpoints -------------------------------------------------------------
class ConfigError(AlignTFError, ValueError):
    """A configuration field (or config.json), an option or an argument whose value is out of
    range or not one of the accepted ones."""


class ArgumentTypeError(AlignTFError, TypeError):
    """An argument of the wrong type, or a keyword the function does not take."""


class NotFoundError(AlignTFError, KeyError):
    """A named thing (a signature, a class folder) that is not there."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EngineError(AlignTFError, RuntimeError):
    """An execution engine align-tf starts (a local Ray, a server socket) did not come up as
    required."""


class AssetNotFoundError(AlignTFError, FileNotFoundError):
    """A file align-tf needs is missing: a vocabulary, a preprocessor config, a checkpoint's
    weights, a SavedModel, the bundled demo model."""


class PretrainedNotFoundError(AlignTFError, OSError):
    """A name is neither a local folder nor a hub id that can be resolved."""


class CheckpointMismatchError(AlignTFError, ValueError):
    """A checkpoint's keys or shapes do not match the model; nothing was loaded."""

    def __init__(self, message, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)

    @classmethod
    def from_keys(cls, missing, unexpected, mismatched, source=""):
        def listing(rows, fmt):
            shown = ", ".join(fmt(r) for r in rows[:20])
            return shown + (f" ... ({len(rows) - 20} more)" if len(rows) > 20 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): "
                         + listing(missing, lambda r: f"{r[0]} {tuple(r[1])}"))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): "
                         + listing(unexpected, lambda r: f"{r[0]} {tuple(r[1])}"))
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): " + listing(
                mismatched, lambda r: f"{r[0]} checkpoint {tuple(r[1])} vs model {tuple(r[2])}"))
        where = f" {source}" if source else ""
        return cls(f"checkpoint{where} does not match the model; nothing was loaded. "
                   + "; ".join(parts), missing, unexpected, mismatched)


class CheckpointFormatError(AlignTFError, ValueError):
    """A checkpoint file that is not what its name says: a torch archive without one data.pkl, a
    pickle that is not a state dict, an unreadable safetensors header."""


class CheckpointSecurityError(AlignTFError, pickle.UnpicklingError):
    """The pickle asks for a Python object outside the allow-list of a plain state dict."""


# -- preprocessing and data --------------------------------------------------------------------
class ImageDecodeError(AlignTFError, ValueError):
    """Image bytes that are not a supported, sane image (message names the input)."""


class ImageSizeError(ImageDecodeError):
    """An image too large to take: its header declares more pixels than `max_pixels`, or its
    file is larger than what is read into memory for an image (refused before decoding)."""


class TextInputError(AlignTFError, TypeError):
    """A text given to the tokenizer is not a string."""


class DataSpecError(AlignTFError, ValueError):
    """A data path / spec that names nothing readable, or a file in an unexpected layout."""


# -- applications ------------------------------------------------------------------------------
class NoImagesError(AlignTFError, FileNotFoundError):
    """A path, folder or pattern that was given matched no image file."""


class EmbeddingInputError(AlignTFError, ValueError):
    """An input in a batch could not be embedded; the message names it (a path when it is one)."""


class IndexFormatError(AlignTFError, ValueError):
    """A folder is not a readable align-tf embedding index."""


class CorpusOutputError(AlignTFError, ValueError):
    """An `align-tf embed` output folder holds other embeddings (another model, other inputs, an
    unfinished run) than the ones asked for; nothing there was changed."""


# -- export and serving ------------------------------------------------------------------------
class ExportError(AlignTFError, RuntimeError):
    """The model cannot be exported as asked."""


class UnsupportedOpError(ExportError):
    """The graph uses an op that stock TF Serving does not have."""

    def __init__(self, op: str, functions, reason: str):
        self.op = op
        self.functions = sorted(functions)
        self.reason = reason
        where = ", ".join(self.functions[:3]) + (" ..." if len(self.functions) > 3 else "")
        super().__init__(f"op {op!r} (in {where}) cannot be served by stock TF Serving: {reason}")


class XlaFunctionError(ExportError):
    """A function in the graph is marked for XLA compilation (TF Serving needs a flag for it)."""


class RequestError(AlignTFError, ValueError):
    """A request body or tensor that cannot be decoded (TF Serving's INVALID_ARGUMENT / HTTP 400)."""


class InputError(AlignTFError, TypeError):
    """An input given to the serving client is not something it can send."""


class ServerConfigError(AlignTFError, ValueError):
    """A local-server setting (a flag, a model config file) that cannot be served as given."""


class ServingError(AlignTFError):
    """A request failed: `code` is a `grpc.StatusCode`, `message` the server's words,
    `http_status` the REST status when the REST API answered."""

    def __init__(self, code, message: str, http_status: int | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
