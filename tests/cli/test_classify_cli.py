"""`align-tf classify` and `align-tf evaluate zero-shot / retrieval` on a tiny random model,
checked against the model's own forward pass (`model(processor(text=..., images=...))`)."""

import json
import os

import numpy as np
import pytest

from support import CLASSES

from align_tf import cli
from align_tf.applications import embedder as embedding
from align_tf.evaluation.retrieval import retrieval_metrics


@pytest.fixture
def reuse_model(tiny, monkeypatch):
    """Commands get the fixture's loaded model instead of loading it again (loading from
    --model is covered by the first test); returns the list of model names they asked for."""
    asked = []

    def loaded(model=None, batch_size=32):
        asked.append(model)
        return embedding.Embedder(tiny["model"], tiny["processor"], batch_size,
                                  source=embedding.DEMO_MODEL if model is None else model)

    monkeypatch.setattr(embedding, "load_embedder", loaded)
    return asked


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def model_probs(tiny, prompts, paths):
    """The uncached reference: one forward pass of the model on prompts and images."""
    outputs = tiny["model"](tiny["processor"](text=prompts, images=paths))
    logits = np.asarray(outputs["logits_per_image"], np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_classify_json_matches_the_models_forward_pass(tiny, capsys):
    paths = sorted(p for name in CLASSES for p in tiny["images"][name])
    code, out, err = run_cli(capsys, "classify", tiny["data"], "--labels", *CLASSES,
                             "--top-k", 3, "--json", "--model", tiny["model_dir"])
    assert code == 0, err
    results = json.loads(out)
    assert [r["image"] for r in results] == paths          # folder expanded recursively, sorted
    probs = model_probs(tiny, [f"a photo of {c}." for c in CLASSES], paths)
    for row, result in zip(probs, results):
        assert [r["label"] for r in result["labels"]] == [CLASSES[i] for i in np.argsort(-row)]
        np.testing.assert_allclose([r["score"] for r in result["labels"]], np.sort(row)[::-1],
                                   rtol=1e-4, atol=1e-6)
    assert "demo model" not in err


def test_classify_table_glob_comma_labels_and_demo_note(tiny, capsys, reuse_model):
    # Without --model the bundled demo model is used and the user is told so (the tiny model
    # stands in for it here, so this test does not depend on the demo weights).
    pattern = os.path.join(tiny["data"], "*", "0.png")
    code, out, err = run_cli(capsys, "classify", pattern, "--labels", "cat, dog",
                             "--template", "a drawing of a {}.", "--top-k", 1)
    assert code == 0, err
    assert "demo model" in err and "--model kakaobrain/align-base" in err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["image", "#1", "label", "(score)"]
    assert len(lines) == 2 + len(CLASSES)
    probs = model_probs(tiny, ["a drawing of a cat.", "a drawing of a dog."],
                        sorted(tiny["images"][c][0] for c in CLASSES))
    for line, row in zip(lines[2:], probs):
        assert line.split()[1] == ["cat", "dog"][int(np.argmax(row))]
        assert f"({row.max():.3f})" in line
    assert reuse_model == [None]


def test_classify_reports_missing_and_broken_images(tiny, capsys, tmp_path, reuse_model):
    code, out, err = run_cli(capsys, "classify", tmp_path / "nothing*.jpg", "--labels", "a", "b")
    assert code == 2 and "no image files" in err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"<html>not an image</html>")
    good = tiny["images"]["red circle"][0]
    code, out, err = run_cli(capsys, "classify", good, broken, "--labels", "a", "b")
    assert code == 2 and str(broken) in err, err


def test_evaluate_zero_shot_writes_metrics_and_confusion_png(tiny, capsys, tmp_path,
                                                             reuse_model):
    out_dir = tmp_path / "eval"
    code, out, err = run_cli(capsys, "evaluate", "zero-shot", "--data", tiny["data"],
                             "--model", tiny["model_dir"], "--output", out_dir)
    assert code == 0, err
    results = json.loads((out_dir / "results.json").read_text())
    names = sorted(CLASSES, key=lambda c: c.replace(" ", "_"))     # subfolder order
    assert results["class_names"] == names
    paths = [p for name in names for p in tiny["images"][name]]
    labels = np.repeat(np.arange(len(names)), 2)
    predicted = model_probs(tiny, [f"a photo of {c}." for c in names], paths).argmax(axis=1)
    assert results["top1"] == pytest.approx(100 * np.mean(predicted == labels))
    assert results["top5"] == 100.0                                 # 3 classes
    confusion = np.array(results["confusion_matrix"])
    assert confusion.sum() == len(paths)
    np.testing.assert_array_equal(confusion.sum(axis=1), [2, 2, 2])
    for i, name in enumerate(names):
        assert results["per_class"][name] == pytest.approx(100 * confusion[i, i] / 2)
    assert (out_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert f"top-1 {results['top1']:.2f}%" in out


def test_evaluate_retrieval_on_a_tsv_matches_metrics_and_caches(tiny, capsys, tmp_path,
                                                                  monkeypatch, reuse_model):
    data = tiny["data"]
    rows, paths, captions, text_to_image = [], [], [], []
    for i, name in enumerate(CLASSES):
        path = tiny["images"][name][0]
        paths.append(path)
        for caption in (f"a {name}", f"a photo of a {name}."):
            rows.append(f"{os.path.relpath(path, data)}\t{caption}\n")
            captions.append(caption)
            text_to_image.append(i)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("image\tcaption\n" + "".join(rows))
    cache = tmp_path / "cache"
    argv = ["evaluate", "retrieval", "--data", tsv, "--images", data, "--model",
            tiny["model_dir"], "--cache", cache, "--json"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    metrics = json.loads(out)
    outputs = tiny["model"](tiny["processor"](text=captions, images=paths))
    expected = retrieval_metrics(outputs["image_embeds"], outputs["text_embeds"], text_to_image)
    for direction in ("image_to_text", "text_to_image"):
        for key, value in expected[direction].items():
            assert metrics[direction][key] == pytest.approx(value)
    assert len(list(cache.glob("*.npy"))) == 2
    # Second run: embeddings come from the cache; the model is not asked again.
    def refuse(*args, **kwargs):
        raise AssertionError("embedded again despite the cache")
    monkeypatch.setattr(embedding.Embedder, "embed_images", refuse)
    monkeypatch.setattr(embedding.Embedder, "embed_texts", refuse)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["text_to_image"] == metrics["text_to_image"]


def test_demo_zero_shot_cli_agrees_with_the_training_figure(capsys, tmp_path):
    """`align-tf evaluate zero-shot` (no --model: the demo model) on fresh demo images gives the
    held-out accuracy the training run recorded, within sampling error."""
    from PIL import Image

    from align_tf.data import synthetic

    from align_tf.assets import demo_model_path

    folder = demo_model_path()
    with open(os.path.join(folder, "training_summary.json"), encoding="utf-8") as f:
        training = json.load(f)
    recorded = training["summary"]["zero_shot_accuracy"]
    recorded_n = training["config"].get("eval_count", 480)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        size = json.load(f)["vision_config"]["image_size"]
    per_class = 20
    rng = np.random.default_rng(77)                    # images neither run has seen
    for name in synthetic.class_names():
        colour, shape = name.split()
        sub = tmp_path / "data" / name.replace(" ", "_")
        sub.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(synthetic.draw_shape(rng, colour, shape, size)).save(sub / f"{i}.png")
    code, out, err = run_cli(capsys, "evaluate", "zero-shot", "--data", tmp_path / "data",
                             "--template", "a photo of a {}.", "--output", tmp_path / "out")
    assert code == 0, err
    assert "demo model" in err
    measured = json.loads((tmp_path / "out" / "results.json").read_text())["top1"] / 100
    n = per_class * len(synthetic.class_names())
    p = (measured + recorded) / 2
    tolerance = 3 * np.sqrt(p * (1 - p) * (1 / n + 1 / recorded_n)) + 0.01   # 3 sigma, two samples
    print(f"\ndemo zero-shot top-1: CLI {measured:.3f} on {n} fresh images, training summary "
          f"{recorded:.3f} (tolerance {tolerance:.3f})")
    assert abs(measured - recorded) <= tolerance
