"""The package's layering (docs/architecture.md) holds, checked by import-linter's contract in pyproject.toml,
and the contract really fails when a forbidden import is added (a copy of the package with one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from support import REPO_ROOT


def lint_imports(root: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=root)  # the package under `root`, not the installed one
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_layering_contract_is_kept():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_contract_fails_on_a_forbidden_lazy_import(tmp_path):
    # models may not import training, not even inside a function.
    root = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO_ROOT, "align_tf"), root / "align_tf",
                    ignore=shutil.ignore_patterns("*.h5", "*.png", "*.jpg", "__pycache__"))
    shutil.copy(os.path.join(REPO_ROOT, "pyproject.toml"), root / "pyproject.toml")
    with open(root / "align_tf" / "models" / "bert.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _forbidden():\n    from align_tf.training import recipe  # noqa: F401\n")
    done = lint_imports(str(root))
    assert done.returncode != 0
    assert "align_tf.models.bert -> align_tf.training.recipe" in done.stdout
