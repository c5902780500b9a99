"""Every repository path and every `align-tf` command that README.md and docs/*.md name is real.

- Paths: relative links, and code spans / code-block words that start with a folder of the
  repository (`align_tf/...`, `tests/...`, `docs/...`, `benchmarks/...`, `notebooks/...`,
  `serving/...`) must exist; a pytest node id (`tests/x.py::test_y`) must name a function or
  class in that file. A file name alone in a code span (`recipe.py`) must be a file somewhere in
  the repository.
- Commands: each `align-tf SUB [SUB]` must be a command whose `--help` runs, and each `--flag`
  written after it must be one of that command's flags.
Placeholders (`<name>`, `PATH...`, globs) and example outputs (`saved_models/...`, `runs/...`)
are not paths of the repository and are left out.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import re
import shlex

import pytest

from support import REPO_ROOT

ROOT_FOLDERS = ("align_tf/", "tests/", "docs/", "benchmarks/", "notebooks/", "serving/", ".ci/")
DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO_ROOT)
                              for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
ROOMS = tuple(name + "/" for name in os.listdir(os.path.join(REPO_ROOT, "align_tf"))
              if os.path.isdir(os.path.join(REPO_ROOT, "align_tf", name)) and name != "__pycache__")
# <name>, {x}, globs, PATH..., and capitalised words such as DIR or INDEX (README.md is a name).
PLACEHOLDER = re.compile(r"[<>*{}$\[\]]|\.\.\.|\b[A-Z][A-Z_]{2,}\b(?!\.)")


def read(doc: str) -> str:
    with open(os.path.join(REPO_ROOT, doc), encoding="utf-8") as f:
        return f.read()


def code_texts(text: str) -> list[str]:
    """Fenced blocks (continuation lines joined) and inline code spans."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    rest = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.S)
    return [b.replace("\\\n", " ") for b in blocks] + re.findall(r"`([^`\n]+)`", rest)


def mentioned_paths(doc: str) -> set[str]:
    text, found = read(doc), set()
    folder = os.path.dirname(doc)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):  # markdown links
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        found.add(os.path.normpath(os.path.join(folder, target.split("#")[0])))
    for code in code_texts(text):
        for word in re.split(r"[\s,;()=\"']+", code):
            word = word.rstrip(".:")
            if PLACEHOLDER.search(word) or "/" not in word:
                continue
            if word.startswith(ROOMS) and word.endswith(".py"):  # a module named from inside
                found.add("align_tf/" + word)                     # the package: serving/client.py
            elif word.startswith(ROOT_FOLDERS):
                found.add(word)
    return found


def bare_file_names(doc: str) -> set[str]:
    """Python file names written alone in a code span (`recipe.py`)."""
    return {span for span in re.findall(r"`([A-Za-z0-9_]+\.py)`", read(doc))}


REPO_FILES = {os.path.basename(p) for p in glob.glob(os.path.join(REPO_ROOT, "**", "*.py"),
                                                      recursive=True)}


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_named_exists(doc):
    missing = []
    for path in sorted(mentioned_paths(doc)):
        file, _, node = path.partition("::")
        full = os.path.join(REPO_ROOT, file)
        if not os.path.exists(full):
            missing.append(path)
        elif node:
            name = node.split("::")[-1].split("[")[0]
            if not re.search(rf"^\s*(def|class) {re.escape(name)}\b", read(file), flags=re.M):
                missing.append(path)
    missing += sorted(f"`{n}` (no such file anywhere)" for n in bare_file_names(doc) - REPO_FILES)
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_the_path_finder_finds_what_it_should():
    """It would catch the stale names this test was written for."""
    assert "align_tf/cli/train.py" in mentioned_paths("docs/training.md")
    assert "docs/architecture.md" in mentioned_paths("README.md")
    assert "tests/models/test_parity.py::test_align_base_size_matches_reference" in mentioned_paths("README.md")
    assert "recipe.py" in bare_file_names("docs/training.md")
    assert not any(PLACEHOLDER.search(p) for doc in DOCS for p in mentioned_paths(doc))


def mentioned_commands(doc: str) -> list[list[str]]:
    """The words of each `align-tf ...` command (up to the end of its line or code span)."""
    commands = []
    for code in code_texts(read(doc)):
        for line in code.splitlines():
            # At the start of a line or span (after VAR=value settings), or after && ; | $(
            for match in re.finditer(r"(?:^\s*(?:[A-Z_]+=\S*\s+)*|(?:&&|;|\||\$\()\s*)"
                                     r"align-tf\s+([^|&;#`]*)", line):
                try:
                    words = shlex.split(match.group(1))
                except ValueError:  # an unbalanced quote in prose
                    words = match.group(1).split()
                commands.append(words)
    return commands


def leaf_parser(words: list[str]):
    """(the parser of the command that `words` name, the subcommand words used)."""
    from align_tf.cli import build_parser

    parser, used = build_parser(), []
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
        used.append(word)
    return parser, used


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_named_runs_its_help_and_knows_its_flags(doc):
    problems = []
    for words in mentioned_commands(doc):
        if not words or words[0].startswith("-") or words[0].isupper():
            continue  # `align-tf --help`, `align-tf COMMAND --help`
        parser, used = leaf_parser(words)
        if not used:
            problems.append(f"align-tf {words[0]}: no such command")
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            parser.parse_args(["--help"])
        if done.value.code != 0 or "usage: align-tf " + " ".join(used) not in out.getvalue():
            problems.append(f"align-tf {' '.join(used)} --help failed")
        known = set(parser._option_string_actions)
        for word in words[len(used):]:
            flag = word.split("=")[0]
            if flag.startswith("--") and flag not in known:
                problems.append(f"align-tf {' '.join(used)}: no flag {flag}")
    assert not problems, f"{doc}: {sorted(set(problems))}"


def test_the_command_finder_finds_what_it_should():
    assert ["train", "--data", "digits"] == mentioned_commands("docs/training.md")[0][:3] or any(
        w[:1] == ["train"] for w in mentioned_commands("docs/training.md"))
    assert any(w[:2] == ["index", "build"] for w in mentioned_commands("README.md"))
    parser, used = leaf_parser(["evaluate", "zero-shot", "--data", "x"])
    assert used == ["evaluate", "zero-shot"]
