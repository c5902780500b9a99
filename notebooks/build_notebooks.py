"""Write the notebooks from the cells below and execute them, so the committed .ipynb files
carry the outputs that this same code produces (CI executes them again with nbmake).

    python notebooks/build_notebooks.py            # write and execute all four
    python notebooks/build_notebooks.py 03         # only those whose name contains "03"
"""

from __future__ import annotations

import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
# Keep TensorFlow's start-up log lines out of the committed outputs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SWITCH = '''# ▶ To use the real ALIGN (needs internet once; ~700 MB), set:
# MODEL = "kakaobrain/align-base"
'''

SETUP = '''import os, tempfile
import numpy as np
import matplotlib.pyplot as plt
from align_tf import AlignModel, AlignProcessor
from align_tf.assets import demo_model_path, example_images_path

MODEL = demo_model_path()   # the bundled demo model: it knows coloured shapes only
'''

NOTEBOOKS = {}

NOTEBOOKS["01_zero_shot.ipynb"] = [
    ("md", """# Zero-shot classification with ALIGN

Load a model and its processor, classify images against free-text labels, and look at the
image x text similarity matrix. This runs offline with the small demo model bundled in
align-tf (trained on coloured shapes); one cell switches to `kakaobrain/align-base`."""),
    ("code", SETUP),
    ("code", SWITCH),
    ("code", '''model = AlignModel.from_pretrained(MODEL)
processor = AlignProcessor.from_pretrained(MODEL)
demo = MODEL == demo_model_path()
print("model:", "demo (shapes x colours)" if demo else MODEL, "| embedding width", model.config.projection_dim)'''),
    ("md", """## Images

The bundled example images, and real photos from scikit-image (astronaut, chelsea the cat,
coffee, a rocket). The demo model only knows shapes and colours, so on photos its answers are
guesses; with `kakaobrain/align-base` the photo labels below become meaningful."""),
    ("code", '''from PIL import Image
from skimage import data as skdata

examples = sorted(os.path.join(example_images_path(), f) for f in os.listdir(example_images_path()))
photos = {"astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(),
          "coffee": skdata.coffee(), "rocket": skdata.rocket()}
images = [Image.open(p).convert("RGB") for p in examples] + [Image.fromarray(a) for a in photos.values()]
names = [os.path.basename(p) for p in examples] + list(photos)

fig, axes = plt.subplots(1, len(images), figsize=(2 * len(images), 2.2))
for ax, image, name in zip(axes, images, names):
    ax.imshow(image); ax.set_title(name, fontsize=8); ax.axis("off")
plt.show()'''),
    ("code", '''from align_tf.applications import ZeroShotClassifier
from align_tf.data.synthetic import class_names

if demo:
    labels = class_names()   # the 24 "colour shape" classes
else:
    labels = ["an astronaut", "a cat", "a cup of coffee", "a rocket", "a dog",
              "a red circle", "a blue square", "a green triangle", "a yellow star"]
classifier = ZeroShotClassifier(model, processor, labels, templates="a photo of a {}.")
predictions = classifier(images, top_k=3)
for name, top in zip(names, predictions):
    print(f"{name:>18}: " + ", ".join(f"{p['label']} {p['score']:.2f}" for p in top))'''),
    ("md", "## Label probabilities per image"),
    ("code", '''probs = classifier.probabilities(images)   # [images, labels], softmax over labels
top = np.argsort(-probs, axis=1)[:, :5]
fig, axes = plt.subplots(2, (len(images) + 1) // 2, figsize=(3.2 * ((len(images) + 1) // 2), 6))
for ax, p, t, name in zip(axes.flat, probs, top, names):
    ax.barh([labels[i] for i in t][::-1], p[t][::-1], color="tab:blue")
    ax.set_xlim(0, 1); ax.set_title(name, fontsize=9); ax.tick_params(labelsize=7)
for ax in list(axes.flat)[len(images):]:
    ax.axis("off")
fig.tight_layout(); plt.show()'''),
    ("md", """## Image x text similarity

`model(inputs)` returns `logits_per_image` = cosine similarity / temperature, exactly as the
Hugging Face `AlignModel` does."""),
    ("code", '''captions = labels[:8] if demo else ["an astronaut", "a cat", "a cup of coffee", "a rocket"]
inputs = processor(text=captions, images=images)
out = model(inputs)
similarity = np.asarray(out["image_embeds"]) @ np.asarray(out["text_embeds"]).T
fig, ax = plt.subplots(figsize=(7, 5))
im = ax.imshow(similarity, cmap="viridis")
ax.set_xticks(range(len(captions)), captions, rotation=45, ha="right", fontsize=8)
ax.set_yticks(range(len(names)), names, fontsize=8)
fig.colorbar(im, label="cosine similarity"); ax.set_title("image x text similarity")
fig.tight_layout(); plt.show()
print("logits_per_image shape:", out["logits_per_image"].shape, "temperature:", float(model.temperature.numpy()))'''),
]

NOTEBOOKS["02_fine_tune_with_fit.ipynb"] = [
    ("md", """# Fine-tuning ALIGN with `model.fit`

A `tf.data` pipeline from image-caption pairs (decoded, augmented and tokenized in-graph),
`model.fit` inside a `tf.distribute` strategy scope — the same code on one CPU, several GPUs
(`MirroredStrategy`) or several workers (`MultiWorkerMirroredStrategy`) — with the contrastive
loss built into the model. Here: teach the demo model (coloured shapes) a new task, scikit-learn's
handwritten digits, and measure zero-shot accuracy before and after."""),
    ("code", SETUP),
    ("code", SWITCH + '''# (align-base is 172M parameters: fine-tune it on a GPU, not in this CPU notebook.)'''),
    ("md", "## Image-caption pairs on disk: digits as PNG files plus a captions TSV"),
    ("code", '''from PIL import Image
from sklearn.datasets import load_digits

digits = load_digits()
words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
work = tempfile.mkdtemp(prefix="align_finetune_")
os.makedirs(f"{work}/images")
rng = np.random.default_rng(0)
order = rng.permutation(len(digits.images))
train_ids, test_ids = order[:1400], order[1400:]

def digit_image(i):
    # 8x8 grey levels 0..16 -> a 64x64 RGB image, dark digit on a light background.
    grey = (255 - digits.images[i] * 15).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey).resize((64, 64), Image.BILINEAR).convert("RGB")

with open(f"{work}/captions.tsv", "w") as f:
    for i in train_ids:
        digit_image(i).save(f"{work}/images/{i}.png")
        f.write(f"images/{i}.png\\ta photo of the digit {words[digits.target[i]]}\\n")
print(open(f"{work}/captions.tsv").read().splitlines()[:3])'''),
    ("code", '''import keras
import tensorflow as tf
from align_tf.data.pipelines import training_dataset

strategy = tf.distribute.get_strategy()   # or tf.distribute.MirroredStrategy() on several GPUs
with strategy.scope():
    model = AlignModel.from_pretrained(MODEL)
    processor = AlignProcessor.from_pretrained(MODEL)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=5e-4, weight_decay=1e-5))

dataset = training_dataset(f"{work}/captions.tsv", processor, batch_size=64, seed=0)
batch = next(iter(dataset))
print({k: (v.shape, v.dtype.name) for k, v in batch.items()})'''),
    ("md", "## Zero-shot accuracy before fine-tuning"),
    ("code", '''from align_tf.applications import ZeroShotClassifier

test_images = [np.asarray(digit_image(i)) for i in test_ids]
truth = digits.target[test_ids]

def zero_shot_accuracy():
    classifier = ZeroShotClassifier(model, processor, words, templates="a photo of the digit {}")
    return float(np.mean(classifier.logits(test_images).argmax(axis=1) == truth))

before = zero_shot_accuracy()
print(f"zero-shot accuracy on {len(test_ids)} held-out digits before: {before:.1%} (chance 10%)")'''),
    ("code", '''history = model.fit(dataset.repeat(), steps_per_epoch=25, epochs=6, verbose=2)'''),
    ("code", '''fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, key in zip(axes, ["loss", "temperature", "image_to_text_accuracy"]):
    ax.plot(range(1, len(history.history[key]) + 1), history.history[key], marker="o")
    ax.set_title(key); ax.set_xlabel("epoch")
fig.tight_layout(); plt.show()
after = zero_shot_accuracy()
print(f"zero-shot accuracy before {before:.1%} -> after {after:.1%}")'''),
    ("md", """## Saving

`save_pretrained` writes config, weights and the tokenizer / preprocessor files (load it back
with `AlignModel.from_pretrained`); `format="hf"` writes a `model.safetensors` that PyTorch
users load with `transformers.AlignModel.from_pretrained`."""),
    ("code", '''model.save_pretrained(f"{work}/digits-align", processor=processor)
model.save_pretrained(f"{work}/digits-align-hf", format="hf", processor=processor)
print(sorted(os.listdir(f"{work}/digits-align")), sorted(os.listdir(f"{work}/digits-align-hf")))
reloaded = AlignModel.from_pretrained(f"{work}/digits-align")
x = processor(images=test_images[:2])["pixel_values"]
print("reloaded == trained:", np.allclose(reloaded.get_image_features(x), model.get_image_features(x), atol=1e-5))'''),
    ("code", '''try:
    import torch, transformers
    hf = transformers.AlignModel.from_pretrained(f"{work}/digits-align-hf").eval()
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=torch.tensor(np.asarray(x)).permute(0, 3, 1, 2)).pooler_output
    print("PyTorch max |diff|:", float(np.abs(ref.numpy() - np.asarray(model.get_image_features(x))).max()))
except ImportError:
    print("transformers / torch not installed: skipping the PyTorch check")'''),
]

NOTEBOOKS["03_export_and_serve.ipynb"] = [
    ("md", """# Export to a SavedModel and serve it (TF Serving's API)

Export with named signatures, inspect them, start the local server that speaks TF Serving's
gRPC and REST APIs (`align-tf serve`), query it with the client, reload the SavedModel in
Python and inside a Keras model. The last cell has the commands for real TF Serving on a GPU."""),
    ("code", SETUP),
    ("code", SWITCH),
    ("code", '''from align_tf.export import export_saved_model

model = AlignModel.from_pretrained(MODEL)
processor = AlignProcessor.from_pretrained(MODEL)
base = os.path.join(tempfile.mkdtemp(prefix="align_export_"), "align")
version_dir = export_saved_model(model, processor, base)
print(version_dir, sorted(os.listdir(version_dir)))'''),
    ("code", '''import subprocess, sys
show = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                       "--dir", version_dir, "--all"], capture_output=True, text=True).stdout
print("\\n".join(l for l in show.splitlines() if "signature_def[" in l or "name:" in l or "dtype:" in l)[:3000])'''),
    ("md", "## The local server: `align-tf serve`, the same flags as `tensorflow_model_server`"),
    ("code", '''import socket
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
grpc_port, rest_port = free_port(), free_port()
server = subprocess.Popen([sys.executable, "-m", "align_tf.cli", "serve", "--model_name", "align",
                           "--model_base_path", base, "--port", str(grpc_port),
                           "--rest_api_port", str(rest_port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

from align_tf.serving import AlignServingClient
client = AlignServingClient(f"127.0.0.1:{grpc_port}", "align")
print(client.wait_until_available(timeout=300))'''),
    ("code", '''images = sorted(os.path.join(example_images_path(), f) for f in os.listdir(example_images_path()))[:4]
labels = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
result = client.classify(images, labels)
for path, p in zip(images, result["probs"]):
    print(f"{os.path.basename(path):>18}: {labels[int(np.argmax(p))]} ({p.max():.2f})")
print("embed_text over gRPC:", client.embed_text(["a red circle"]).shape)
rest = AlignServingClient(f"127.0.0.1:{rest_port}", "align", protocol="rest")
print("same over REST:", np.allclose(rest.embed_text(["a red circle"]), client.embed_text(["a red circle"]), atol=1e-5))'''),
    ("code", '''import json, urllib.request
# Plain REST, as any HTTP client would send it (TF Serving's :predict format).
body = json.dumps({"signature_name": "embed_text", "instances": [{"text": "a red circle"}]}).encode()
reply = json.load(urllib.request.urlopen(urllib.request.Request(
    f"http://127.0.0.1:{rest_port}/v1/models/align:predict", body, {"Content-Type": "application/json"})))
print(np.asarray(reply["predictions"][0]).shape)
server.terminate(); print("server exit code:", server.wait(timeout=60))'''),
    ("md", "## Loading the SavedModel back: `tf.saved_model.load` and `keras.layers.TFSMLayer`"),
    ("code", '''import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops the SavedModel uses
import keras

loaded = tf.saved_model.load(version_dir)
embeds = loaded.signatures["embed_text"](text=tf.constant(labels))["text_embeds"]
print("signatures:", sorted(loaded.signatures.keys()))
in_process = model(processor(text=labels))["text_embeds"]
print("SavedModel == Keras model:", np.allclose(embeds, in_process, atol=1e-5))

text = keras.Input(shape=(), dtype="string")
features = keras.layers.TFSMLayer(version_dir, call_endpoint="embed_text")(text)["text_embeds"]
head = keras.Model(text, keras.layers.Dense(4, activation="softmax")(features))
print(head(tf.constant(labels)).shape)'''),
    ("md", """## Real TF Serving on a GPU

```bash
align-tf export --model kakaobrain/align-base --output saved_models/align
docker compose -f serving/docker-compose.gpu.yml up -d      # tensorflow/serving:2.20.0-gpu
python -c "from align_tf.serving import AlignServingClient as C; print(C('localhost:8500', 'align').status())"
```

`serving/README.md` has the whole path: model config, batching, GPU memory, monitoring."""),
]

NOTEBOOKS["04_cross_modal_search.ipynb"] = [
    ("md", """# Cross-modal search

Build an embedding index over a folder of images, then search it by text, by image, and by
an image plus or minus text (ALIGN's embedding composition)."""),
    ("code", SETUP),
    ("code", SWITCH),
    ("code", '''from align_tf.data.synthetic import write_demo_set
from align_tf.applications import Embedder
from align_tf.applications.search import EmbeddingIndex

model = AlignModel.from_pretrained(MODEL)
processor = AlignProcessor.from_pretrained(MODEL)
work = tempfile.mkdtemp(prefix="align_search_")
write_demo_set(work, count=240, seed=7, image_format="png")     # fresh, unseen images
paths = sorted(os.path.join(work, "images", f) for f in os.listdir(os.path.join(work, "images")))
embedder = Embedder(model, processor, batch_size=64)
index = EmbeddingIndex.build(paths, embedder, os.path.join(work, "index"), progress=False)
print(index)'''),
    ("code", '''from PIL import Image

def show(hits, title):
    fig, axes = plt.subplots(1, len(hits), figsize=(1.6 * len(hits), 2))
    for ax, hit in zip(axes, hits):
        ax.imshow(Image.open(hit["path"])); ax.axis("off"); ax.set_title(f"{hit['score']:.2f}", fontsize=8)
    fig.suptitle(title); plt.show()

for query in ["a red circle", "a blue star", "a yellow triangle"]:
    show(index.query(text=query, k=6), f"text: {query!r}")'''),
    ("code", '''query_image = paths[0]
show(index.query(image=query_image, k=6), f"image: {os.path.basename(query_image)} (itself first)")'''),
    ("md", '## Image + text composition: a blue circle, plus "red", minus "blue"'),
    ("code", '''from align_tf.data.synthetic import draw_shape
blue_circle = draw_shape(np.random.default_rng(3), "blue", "circle", image_size=64)
Image.fromarray(blue_circle).save(os.path.join(work, "blue_circle.png"))
show(index.query(image=os.path.join(work, "blue_circle.png"), k=6), "image query: a new blue circle")
# Colour words are embedded inside shape phrases and averaged (prompt ensembling), so that
# "red" - "blue" moves the colour and leaves the shape alone.
phrases = ["a {} circle", "a {} square", "a {} triangle", "a {} star"]
show(index.query(image=os.path.join(work, "blue_circle.png"), plus_text="red", minus_text="blue",
                 text_templates=phrases, k=6), "blue circle + 'red' - 'blue'")'''),
    ("code", '''# The index is a folder: shards of embeddings + metadata, loadable later without re-embedding.
again = EmbeddingIndex.load(os.path.join(work, "index"), embedder=embedder)
print(len(again), again.query(text="a green square", k=3)[0])'''),
]


def build(name, cells, execute=True):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    path = os.path.join(HERE, name)
    if execute:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": HERE}}).execute()
    nbformat.write(nb, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for name, cells in NOTEBOOKS.items():
        if not wanted or any(w in name for w in wanted):
            build(name, cells)
