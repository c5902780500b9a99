"""A bounded, seeded fuzz run (benchmarks/fuzz_decoder.py) over the decoder and the tokenizer,
eagerly and through an exported SavedModel: every case a result or a named error, no crash,
no hang. Run in a child process, so a native crash fails this test instead of ending pytest.
More cases: `FUZZ_CASES=2500 pytest tests/preprocessing/test_decode_fuzz.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT

from align_tf.preprocessing.tokenizer import AlignTokenizer, TextInputError


@pytest.mark.fuzz
def test_mutated_images_and_random_text_end_in_results_or_named_errors(tmp_path):
    cases = int(os.environ.get("FUZZ_CASES", "300"))
    out = tmp_path / "fuzz.json"
    script = os.path.join(REPO_ROOT, "benchmarks", "fuzz_decoder.py")
    done = subprocess.run([sys.executable, script, "--cases", str(cases), "--seed", "14", "--hang-s", "30",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), f"the fuzz run crashed or hung (exit {done.returncode}):\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["failures"] == [], result["failures"][:5]
    for name, target in result["targets"].items():
        assert target["cases"] == cases, name
        assert target["ok"] + target["clear_errors"] == cases, (name, target)
        assert target["slowest_case_s"] < 30, name
    # Mutations reach the decoders' error paths and still decode many files.
    decoder = result["targets"]["decoder_eager"]
    assert decoder["clear_errors"] > cases // 5 and decoder["ok"] > cases // 5, decoder
    # Inside the SavedModel, our own checks name most refusals (the rest are the codecs' words).
    assert result["targets"]["decoder_saved_model"]["our_message"] > 0


def test_lone_surrogate_is_a_text_input_error(tmp_path):
    # Found by the fuzz run: a Python str with a lone surrogate has no UTF-8 form; tf.constant
    # raised a bare ValueError ("Error converting unicode string").
    from support import minilm_folder

    tokenizer = AlignTokenizer(os.path.join(minilm_folder(), "vocab.txt"), max_length=16)
    with pytest.raises(TextInputError, match=r"text 1 of 2 is not valid Unicode: U\+D800 at position 3"):
        tokenizer(["fine", "abc\ud800def"])
    assert tokenizer(["abc\U0001f600def"])["input_ids"].shape == (1, 16)  # a real astral character is fine
