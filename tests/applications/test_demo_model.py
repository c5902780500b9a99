"""The demo model bundled in the package: small, made by the documented command, right on fresh
shapes (and on the bundled example images of the README's first command); and a short run of
the same recipe from scratch learns far above chance."""

from __future__ import annotations

import json
import os
import shlex

import numpy as np
import pytest

from align_tf.assets import DEMO_TRAIN_COMMAND, demo_model_path, example_images_path

FRESH_SEED = 987_654  # never used to generate training data


@pytest.fixture(scope="module")
def demo():
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    folder = demo_model_path()
    return AlignModel.from_pretrained(folder), AlignProcessor.from_pretrained(folder)


def test_demo_model_folder_is_complete_and_small():
    folder = demo_model_path()
    names = set(os.listdir(folder))
    for required in ("config.json", "model.weights.h5", "vocab.txt", "tokenizer_config.json",
                     "preprocessor_config.json"):
        assert required in names
    total = sum(os.path.getsize(os.path.join(folder, n)) for n in names
                if os.path.isfile(os.path.join(folder, n)))
    assert total < 8 * 2**20, f"the demo model takes {total / 2**20:.1f} MB"
    assert not {"backup", "checkpoints", "logs"} & names


def test_demo_model_was_made_by_the_documented_command():
    """training_summary.json records the run's settings: they are the documented command's."""
    from dataclasses import asdict

    from align_tf.cli import build_parser
    from align_tf.cli.train import config_from_args

    argv = shlex.split(DEMO_TRAIN_COMMAND)
    assert argv[:2] == ["align-tf", "train"]
    documented = asdict(config_from_args(build_parser().parse_args(argv[1:])))
    with open(os.path.join(demo_model_path(), "training_summary.json")) as f:
        recorded = json.load(f)
    for where in ("output", "logdir"):  # where files went, not what was trained
        documented.pop(where), recorded["config"].pop(where)
    assert recorded["config"] == documented
    assert recorded["summary"]["zero_shot_accuracy"] >= 0.9


def test_demo_model_classifies_fresh_shapes(demo):
    from align_tf.training.heldout import zero_shot_accuracy
    from align_tf.training.inputs import demo_pairs

    model, processor = demo
    fresh = demo_pairs(240, seed=FRESH_SEED, image_size=processor.image_processor.output_size[0])
    accuracy = zero_shot_accuracy(model, processor, fresh)
    assert accuracy >= 0.9, f"demo model: {accuracy:.1%} zero-shot top-1 over 24 classes"


def test_bundled_examples_get_the_right_labels():
    """The README's first command: `align-tf classify align_tf/assets/examples --labels ...`."""
    from align_tf.applications.zero_shot import zero_shot_classify

    folder = example_images_path()
    files = sorted(f for f in os.listdir(folder) if f.endswith((".png", ".jpg")))
    assert len(files) >= 4
    labels = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    results = zero_shot_classify([os.path.join(folder, f) for f in files], labels)
    for name, ranked in zip(files, results):
        expected = "a " + os.path.splitext(name)[0].replace("_", " ")
        assert ranked[0]["label"] == expected, (name, ranked)
        assert ranked[0]["score"] > 0.5


def test_short_run_of_the_recipe_learns(tmp_path):
    """The documented recipe cut to a short run: far above chance (1 in 24), and the colour,
    learned first, nearly always right."""
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor
    from align_tf.training.heldout import zero_shot_predictions
    from align_tf.training.inputs import demo_pairs
    from align_tf.training.recipe import TrainingConfig, train

    output = str(tmp_path / "short")
    summary = train(TrainingConfig(
        data="demo:2000", model="demo-config", output=output, global_batch_size=64,
        steps=SHORT_STEPS, learning_rate=4e-3, warmup_steps=20, optimizer="adamw",
        keep_checkpoints=0, eval_count=24, verbose=0))
    assert summary.final_loss < np.log(64)
    model, processor = AlignModel.from_pretrained(output), AlignProcessor.from_pretrained(output)
    fresh = demo_pairs(240, seed=FRESH_SEED, image_size=64)
    predicted = zero_shot_predictions(model, processor, fresh)
    top1 = np.mean([p == t for p, t in zip(predicted, fresh.labels)])
    colour = np.mean([p.split()[0] == t.split()[0] for p, t in zip(predicted, fresh.labels)])
    print(f"short run ({SHORT_STEPS} steps): top-1 {top1:.1%}, colour {colour:.1%}")
    assert top1 >= 0.15, top1  # chance: 1/24 = 4.2%
    assert colour >= 0.8, colour  # chance: 1/6


SHORT_STEPS = 160
