"""`embed_corpus`: a corpus of images (and captions) into Parquet shards of embeddings, on one
process or on Ray, resumable, from the same SavedModel TF Serving runs.

The model is a SavedModel from `align-tf export`, or a checkpoint folder / hub id / the demo
model, exported first into `<output>/model/1` (that SavedModel is what the workers load).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import time

from align_tf.corpus import shards as out
from align_tf.corpus.engines import ENGINES, run_local, run_on_ray
from align_tf.corpus.sources import partition_fingerprint, plan_partitions
from align_tf.errors import ConfigError, CorpusOutputError
from align_tf.progress import progress_bar

EXPORTED_MODEL = "model"  # <output>/model/1: the SavedModel exported from a checkpoint


def _hash_files(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode("utf-8"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def saved_model_fingerprint(version_dir: str) -> str:
    """The graph and the variables' index (which stores every tensor's checksum)."""
    return _hash_files([os.path.join(version_dir, "saved_model.pb"),
                        os.path.join(version_dir, "variables", "variables.index")])


def _saved_model_dir(model: str | None) -> str | None:
    from align_tf.export import resolve_version_dir

    if not model or not os.path.isdir(model):
        return None
    try:
        return resolve_version_dir(model)
    except FileNotFoundError:
        return None


def resolve_corpus_model(model: str | None, output: str, existing: dict | None) -> dict:
    """{"identity", "saved_model", "source", ...}: the SavedModel the workers will load. A
    checkpoint (or the demo model) is exported into `<output>/model/1` unless an earlier run of
    the same checkpoint already did."""
    from align_tf.assets import resolve_model

    saved_model = _saved_model_dir(model)
    if saved_model:
        fingerprint = saved_model_fingerprint(saved_model)
        return {"identity": f"saved_model:{fingerprint}", "fingerprint": fingerprint,
                "saved_model": os.path.abspath(saved_model), "source": os.path.abspath(saved_model),
                "checkpoint": None}
    folder, is_demo = resolve_model(model)
    if os.path.isdir(folder):
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                       if os.path.isfile(os.path.join(folder, f)))
        source_fingerprint = _hash_files(files)
        checkpoint = "demo" if is_demo else os.path.abspath(folder)
    else:  # a hub id: its name is all we know before downloading it
        source_fingerprint = hashlib.sha256(folder.encode("utf-8")).hexdigest()[:16]
        checkpoint = folder
    identity = f"checkpoint:{source_fingerprint}"
    target = os.path.join(output, EXPORTED_MODEL)
    version_dir = os.path.join(target, "1")
    reuse = (existing is not None and existing["model"]["identity"] == identity
             and os.path.isfile(os.path.join(version_dir, "saved_model.pb")))
    if not reuse:
        if existing is not None and existing["model"]["identity"] != identity:
            raise _different_model(output, existing, checkpoint)
        from align_tf.applications.embedder import load_embedder
        from align_tf.export import export_saved_model

        embedder = load_embedder(model)
        export_saved_model(embedder.model, embedder.processor, target, version=1, overwrite=True,
                           warmup=False)
    return {"identity": identity, "fingerprint": saved_model_fingerprint(version_dir),
            "saved_model": os.path.abspath(version_dir), "source": checkpoint,
            "checkpoint": checkpoint, "source_fingerprint": source_fingerprint}


def _different_model(output, existing, given) -> CorpusOutputError:
    return CorpusOutputError(
        f"{output}: holds embeddings of another model ({existing['model']['source']}, "
        f"{existing['model']['identity']}); refusing to add {given}'s to them: use a new "
        "--output folder (or --restart to discard what is there)")


def embed_corpus(images, output: str, *, model: str | None = None, texts=None,
                 engine: str = "local", ray_address: str | None = None, workers: int = 1,
                 batch_size: int = 32, gpus_per_worker: float = 0,
                 cpus_per_worker: float | None = None, dtype: str = "float32",
                 shard_size: int = 1000, serving_url: str | None = None,
                 serving_model_name: str = "align", image_root: str | None = None,
                 image_column: str | None = None, caption_column: str | None = None,
                 id_column: str | None = None, restart: bool = False, progress="auto",
                 verbose: bool = False) -> dict:
    """Embed every input into Parquet shards in `output`; returns the manifest.

    `verbose`: on Ray, the workers' own output (TensorFlow's start-up lines, Ray's worker logs)
    is shown in this process too.

    Running the same call again skips finished shards (after a crash or Ctrl-C) and ends with
    the same output; a different model over an existing output is refused."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    if dtype not in out.DTYPES:
        raise ConfigError(f"dtype must be one of {out.DTYPES}, got {dtype!r}")
    for name, value in (("workers", workers), ("batch_size", batch_size),
                        ("shard_size", shard_size)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    started = time.time()
    partitions = plan_partitions(images, texts=texts, shard_size=shard_size, image_root=image_root,
                                 image_column=image_column, caption_column=caption_column,
                                 id_column=id_column)
    os.makedirs(output, exist_ok=True)
    if restart:
        _clear(output)
    existing = out.read_manifest(output)
    if serving_url:
        identity = f"serving:{serving_url}/{serving_model_name}"
        if existing is not None and existing["model"]["identity"] != identity:
            raise _different_model(output, existing, serving_url)
        model_info = {"identity": identity, "fingerprint": None, "saved_model": None,
                      "source": f"{serving_url} ({serving_model_name})", "checkpoint": None}
    else:
        model_info = resolve_corpus_model(model, output, existing)
        if existing is not None and existing["model"]["identity"] != model_info["identity"]:
            raise _different_model(output, existing, model_info["source"])
    out.remove_stale_temporaries(output)
    done = _finished_partitions(output, partitions, model_info["identity"], dtype)
    pending = [p for p in partitions if p["name"] not in done]

    manifest = {"format": out.FORMAT, "version": out.VERSION, "status": "running",
                "model": dict(model_info, signatures=["embed_image", "embed_text"]),
                "inputs": [str(s) for s in ([images] if isinstance(images, str) else images or [])],
                "texts": [str(t) for t in ([texts] if isinstance(texts, str) else texts or [])],
                "dtype": dtype, "engine": engine, "workers": workers, "batch_size": batch_size,
                "shard_size": shard_size}
    out.write_json_atomically(os.path.join(output, out.MANIFEST), manifest)

    info = {"model": model_info["identity"], "dim": None}
    worker_kwargs = dict(output_dir=output, info=info, batch_size=batch_size, dtype=dtype,
                         saved_model=model_info["saved_model"], serving_url=serving_url,
                         serving_model_name=serving_model_name)
    known = [len(p["items"]) for p in partitions if "items" in p]
    total = sum(known) if len(known) == len(partitions) else None
    initial = sum(len(p.get("items", ())) for p in partitions if p["name"] in done)
    bar = progress_bar(total, "embedding", progress, unit="img", initial=initial)
    try:
        if pending and engine == "local":
            run_local(pending, worker_kwargs, on_shard=lambda rows, errors: None,
                      on_batch=bar.update)
        elif pending:
            run_on_ray(pending, worker_kwargs, lambda rows, errors: bar.update(rows + errors),
                       workers=workers, cpus_per_worker=cpus_per_worker,
                       gpus_per_worker=gpus_per_worker, ray_address=ray_address,
                       verbose=verbose)
    finally:
        bar.close()
    return _finish(output, partitions, manifest, started, len(pending))


def _clear(output: str) -> None:
    for name in os.listdir(output):
        path = os.path.join(output, name)
        if name.startswith(("shard-", ".shard-")) or name in (out.MANIFEST, out.ERRORS):
            os.remove(path)
        elif name == EXPORTED_MODEL and os.path.isdir(path):
            shutil.rmtree(path)


def _finished_partitions(output, partitions, identity, dtype) -> set[str]:
    """Names of partitions whose shard exists and matches; a shard of other inputs, of another
    model or of another dtype is refused rather than mixed in."""
    planned = {p["name"]: p for p in partitions}
    done = set()
    for name in sorted(os.listdir(output)):
        if not (name.startswith("shard-") and name.endswith(".parquet")):
            continue
        partition = planned.get(name[len("shard-"):-len(".parquet")])
        info = out.shard_info(os.path.join(output, name))
        why = None
        if partition is None:
            why = "comes from inputs that are not among these"
        elif info.get("partition_fingerprint") != partition_fingerprint(partition):
            why = "holds another list of inputs under that name (inputs changed since)"
        elif info.get("model") != identity:
            why = f"was embedded by another model ({info.get('model')})"
        elif info.get("dtype") != dtype:
            why = f"is {info.get('dtype')}, not {dtype}"
        if why:
            raise CorpusOutputError(f"{output}/{name} {why}: use a new --output folder, or "
                                    "--restart to discard the shards there")
        done.add(partition["name"])
    return done


def _finish(output, partitions, manifest, started, ran) -> dict:
    shard_list, errors, rows, dim = [], [], 0, None
    for partition in partitions:
        name = out.shard_file(partition["name"])
        info = out.shard_info(os.path.join(output, name))
        shard_list.append({"file": name, "rows": info["rows"], "errors": len(info["errors"])})
        errors += [dict(e, shard=name) for e in info["errors"]]
        rows += info["rows"]
        dim = dim or info.get("dim")
    out.write_errors(output, errors)
    now = datetime.datetime.now(datetime.timezone.utc)
    manifest.update(status="complete", dim=dim, shards=shard_list,
                    counts={"inputs": rows + len(errors), "embedded": rows,
                            "errors": len(errors), "shards": len(shard_list),
                            "shards_this_run": ran},
                    time={"started": datetime.datetime.fromtimestamp(
                              started, datetime.timezone.utc).isoformat(timespec="seconds"),
                          "finished": now.isoformat(timespec="seconds"),
                          "seconds_this_run": round(time.time() - started, 3)})
    if manifest["engine"] == "ray":
        import ray

        manifest["ray_version"] = ray.__version__
    out.write_json_atomically(os.path.join(output, out.MANIFEST), manifest)
    return manifest
