"""Packages whose public names live in submodules import them on first use: `import align_tf`
stays fast (no TensorFlow, no Ray), and a model under KERAS_BACKEND=jax never loads TensorFlow."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """`__getattr__` and `__dir__` for `package`: name -> the module that defines it."""

    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
