"""`align-tf` as a user meets it in a shell: a wrong argument gives one line on stderr naming the
problem and exit status 2 (no traceback), for every kind of subcommand; a successful run prints no
TensorFlow start-up lines; every error align-tf raises belongs to one family."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT

import align_tf.errors as errors


def run_cli(*args, cwd=None, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=REPO_ROOT, **env_overrides)
    return subprocess.run([sys.executable, "-m", "align_tf.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, named", [
    (["export", "--model", "/nonexistent", "--output", "unused"], "/nonexistent"),
    (["convert", "/nonexistent", "out"], "/nonexistent"),
    (["classify", "missing.jpg", "--labels", "cat", "dog"], "missing.jpg"),
    (["train", "--global-batch-size", "0", "--output", "unused"], "--global-batch-size"),
])
def test_user_errors_are_one_line_and_exit_2(args, named, tmp_path):
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"align-tf {args[0]}: ") and named in lines[0]
    assert "Traceback" not in done.stderr
    assert not os.listdir(tmp_path)  # nothing was written


@pytest.mark.slow  # two classify processes, each loading TensorFlow and the demo model
def test_successful_classify_prints_no_tensorflow_log_lines(tmp_path):
    from align_tf.assets import example_images_path

    done = run_cli("classify", example_images_path(), "--labels", "a red circle", "a blue square",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "red_circle.png" in done.stdout
    # The only line is our own note about the demo model.
    assert done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if line.startswith("Using the small demo model")]
    # --verbose (or the user's own TF_CPP_MIN_LOG_LEVEL) lets TensorFlow speak again.
    verbose = run_cli("classify", example_images_path(), "--labels", "a red circle", "--verbose",
                      cwd=tmp_path)
    assert verbose.returncode == 0 and len(verbose.stderr.strip().splitlines()) > 1


def test_verbose_shows_the_traceback(tmp_path):
    done = run_cli("convert", "/nonexistent", "out", "--verbose", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert "PretrainedNotFoundError" in done.stderr


def test_every_error_class_is_one_family_and_keeps_its_builtin_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, BaseException) and c.__module__ == errors.__name__]
    assert len(classes) >= 15
    for cls in classes:
        assert issubclass(cls, errors.AlignTFError), cls
        if cls is not errors.AlignTFError and cls is not errors.ServingError:
            # Each also is a builtin error, so `except ValueError:` code written before still works.
            assert any(base.__module__ in ("builtins", "_pickle", "pickle")
                       for base in cls.__mro__[1:-2]), cls
    # Errors raised by modules are the family's classes, not copies.
    from align_tf.checkpoints.convert import CheckpointMismatchError
    from align_tf.preprocessing.image import ImageDecodeError

    assert CheckpointMismatchError is errors.CheckpointMismatchError
    assert issubclass(ImageDecodeError, ValueError)
