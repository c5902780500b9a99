"""Every code block of the README runs as written (issue: the README's first screen stays true).

- The first bash block (install, then classify the bundled examples) runs its `align-tf`
  command and must print the right label for each example.
- The second bash block (the test command) must be the command `.ci/run` runs.
- Every python block is executed in a fresh interpreter.
- The other fenced blocks are diagrams / tables, not code (no language tag).
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
BASH = [code.strip() for lang, code in BLOCKS if lang == "bash"]
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def test_readme_has_the_blocks_this_test_covers():
    assert len(BASH) == 2 and len(PYTHON) >= 1
    assert {lang for lang, _ in BLOCKS} <= {"bash", "python", ""}


@pytest.mark.slow  # a CLI process that loads TensorFlow and the demo model
def test_first_command_classifies_the_bundled_examples():
    install, classify = BASH[0].split(" && ", 1)
    assert install == "pip install -e ."
    argv = shlex.split(classify)
    assert argv[0] == "align-tf"
    result = subprocess.run([sys.executable, "-m", "align_tf.cli", *argv[1:]], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "demo model" in result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("align_tf/assets/examples/")]
    assert len(rows) == 4
    for row in rows:
        name = os.path.splitext(os.path.basename(row.split()[0]))[0]   # e.g. red_circle
        top_label = row.split("(")[0].split(maxsplit=1)[1].strip()       # e.g. a red circle
        assert top_label == "a " + name.replace("_", " "), row


def test_test_command_is_what_ci_runs():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert BASH[1] in ci


@pytest.mark.slow  # each block in a fresh interpreter; one trains an epoch
@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_block_runs(index, tmp_path):
    result = subprocess.run([sys.executable, "-c", PYTHON[index]], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
