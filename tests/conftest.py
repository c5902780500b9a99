"""Fixtures shared across test folders (helpers without pytest state live in support.py)."""

import pytest

from support import make_tiny_model_folder, write_shape_images

# Kinds of test that are slow by nature: each implies the `slow` marker, so that
# `pytest -m "not slow"` (the fast loop) leaves them out. The markers are registered in pyproject.toml.
SLOW_KINDS = ("multiprocess", "full_size", "fuzz", "notebooks")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """One tiny model for the CLI, search and application tests: every new model or processor
    instance pays for tracing its graphs again (seconds each on a busy CPU)."""
    root = tmp_path_factory.mktemp("tiny")
    folder = make_tiny_model_folder(str(root / "model"))
    images = write_shape_images(str(root / "data"))
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    return {"model_dir": folder, "data": str(root / "data"), "images": images,
            "model": AlignModel.from_pretrained(folder),
            "processor": AlignProcessor.from_pretrained(folder)}
