"""`embed_corpus` in this process: the SavedModel's embeddings equal the model's own, every
input is either embedded once or in errors.jsonl with its reason, the output folder refuses
another model, and a rerun skips finished shards."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from align_tf.errors import CorpusOutputError


def in_process_image_embeddings(tiny, paths):
    from align_tf.applications.embedder import l2_normalize

    pixels = tiny["processor"](images=paths)["pixel_values"]
    return l2_normalize(tiny["model"].get_image_features(pixels))


def test_every_good_image_embedded_once_as_the_model_does(corpus, tiny, embeddings_of):
    found = embeddings_of(corpus["output"])
    assert sorted(found) == corpus["ids"]  # each good id exactly once, nothing else
    paths = [os.path.join(corpus["folder"], key) for key in corpus["ids"]]
    expected = in_process_image_embeddings(tiny, paths)
    got = np.stack([found[key] for key in corpus["ids"]])
    assert got.shape == (60, tiny["model"].config.projection_dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_corrupt_files_are_reported_not_lost(corpus):
    with open(os.path.join(corpus["output"], "errors.jsonl"), encoding="utf-8") as f:
        errors = [json.loads(line) for line in f]
    assert sorted(e["id"] for e in errors) == ["broken/not_an_image.jpg", "photos/truncated.png"]
    reasons = {e["id"]: e["reason"] for e in errors}
    assert reasons["broken/not_an_image.jpg"].startswith("not a JPEG/PNG/GIF/BMP (first bytes 3c 68")
    assert "PNG" in reasons["photos/truncated.png"]
    manifest = corpus["manifest"]
    assert manifest["status"] == "complete"
    assert manifest["counts"]["inputs"] == 62
    assert manifest["counts"]["embedded"] == 60 and manifest["counts"]["errors"] == 2
    assert manifest["model"]["checkpoint"] == os.path.abspath(corpus["checkpoint"])


def test_rerun_skips_finished_shards_and_reuses_the_export(corpus, tiny):
    from align_tf.corpus import embed_corpus

    pb = os.path.join(corpus["saved_model"], "saved_model.pb")
    before = {n: os.path.getmtime(os.path.join(corpus["output"], n))
              for n in os.listdir(corpus["output"]) if n.startswith("shard-")}
    exported = os.path.getmtime(pb)
    manifest = embed_corpus([corpus["folder"]], corpus["output"], model=corpus["checkpoint"],
                            shard_size=8, batch_size=8, progress=False)
    assert manifest["counts"]["shards_this_run"] == 0
    assert manifest["counts"]["embedded"] == 60
    assert os.path.getmtime(pb) == exported
    assert before == {n: os.path.getmtime(os.path.join(corpus["output"], n)) for n in before}


def test_another_model_over_an_existing_output_is_refused(corpus, tmp_path):
    from align_tf.corpus import embed_corpus

    with pytest.raises(CorpusOutputError, match="another model"):
        embed_corpus([corpus["folder"]], corpus["output"], model=corpus["saved_model"],
                     shard_size=8, progress=False)
    # Shards of other inputs under the same folder are refused too, not mixed in.
    with pytest.raises(CorpusOutputError, match="inputs changed|not among these"):
        embed_corpus([corpus["folder"]], corpus["output"], model=corpus["checkpoint"],
                     shard_size=5, progress=False)


def test_float16_and_a_savedmodel_from_align_tf_export(corpus, tmp_path, embeddings_of):
    from align_tf.corpus import embed_corpus

    output = str(tmp_path / "half")
    manifest = embed_corpus([os.path.join(corpus["folder"], "photos")], output,
                            model=os.path.dirname(corpus["saved_model"]), dtype="float16",
                            batch_size=5, progress=False)
    assert manifest["model"]["checkpoint"] is None
    assert manifest["counts"]["errors"] == 1  # photos/truncated.png; ids relative to photos/
    half = embeddings_of(output)
    full = embeddings_of(corpus["output"])
    assert len(half) == 40 and all(("photos/" + k) in full for k in half)
    for key, vector in half.items():
        np.testing.assert_allclose(vector, full["photos/" + key], atol=2e-3)


def test_import_align_tf_does_not_import_ray():
    code = ("import sys, align_tf, align_tf.cli, align_tf.corpus, align_tf.corpus.embed, "
            "align_tf.cli.embed; assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
