"""Fixtures of the corpus tests: a folder of generated images with two corrupt files, and one
`align-tf embed` run over it with the tiny checkpoint (which exports the SavedModel that the
other tests load)."""

import os

import numpy as np
import pytest

def write_corpus(folder: str, count: int = 60, seed: int = 0) -> list[str]:
    """`count` small random images, JPEG and PNG, in nested folders, plus two corrupt files.
    Returns the good images' ids (paths relative to `folder`), sorted."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        sub = ("photos", "photos/2024", "drawings/a/b")[i % 3]
        fmt = "JPEG" if i % 2 else "PNG"
        key = f"{sub}/img{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        size = (int(rng.integers(20, 70)), int(rng.integers(20, 70)))
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
            os.path.join(folder, key), format=fmt)
        ids.append(key)
    os.makedirs(os.path.join(folder, "broken"), exist_ok=True)
    with open(os.path.join(folder, "broken/not_an_image.jpg"), "wb") as f:
        f.write(b"<html>this is not an image</html>")
    with open(os.path.join(folder, ids[0]), "rb") as f:
        png = f.read()
    with open(os.path.join(folder, "photos/truncated.png"), "wb") as f:
        f.write(png[:len(png) // 3])
    return sorted(ids)


@pytest.fixture(scope="session")
def corpus(tiny, tmp_path_factory):
    """{"folder", "ids", "output" (a finished local run by the tiny checkpoint, shards of 8),
    "saved_model" (exported by that run), "checkpoint"}."""
    from align_tf.corpus import embed_corpus

    root = tmp_path_factory.mktemp("corpus")
    folder = str(root / "images")
    ids = write_corpus(folder)
    output = str(root / "local")
    manifest = embed_corpus([folder], output, model=tiny["model_dir"], engine="local",
                            shard_size=8, batch_size=8, progress=False)
    return {"folder": folder, "ids": ids, "output": output, "manifest": manifest,
            "saved_model": os.path.join(output, "model", "1"), "checkpoint": tiny["model_dir"]}


@pytest.fixture(scope="session")
def embeddings_of():
    """A function: {id: vector} of a finished output folder's `column`, asserting that no id
    appears twice."""
    from align_tf.corpus.shards import read_shard, shard_paths

    def read(directory: str, column: str = "embedding") -> dict:
        found = {}
        for path in shard_paths(directory):
            shard = read_shard(path, ["id", column])
            for key, vector in zip(shard["id"], shard[column]):
                assert key not in found, f"id {key} twice"
                found[key] = vector
        return found

    return read
