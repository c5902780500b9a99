"""The towers are backend-agnostic: under KERAS_BACKEND=jax they give the TensorFlow outputs."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")

from align_tf.models.align import AlignModel  # noqa: E402
from support import REPO_ROOT, pixel_batch, text_batch, tiny_align_config  # noqa: E402

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from align_tf.models.align import AlignModel
    folder, inputs_path, out_path = sys.argv[1:4]
    inputs = dict(np.load(inputs_path))
    model = AlignModel.from_pretrained(folder)
    out = model(inputs)
    vision = model.vision_model(inputs["pixel_values"])
    text = model.text_model({k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    np.savez(out_path, **{k: np.asarray(v) for k, v in out.items()},
             vision_last=np.asarray(vision["last_hidden_state"]),
             text_last=np.asarray(text["last_hidden_state"]),
             text_pooled=np.asarray(text["pooler_output"]))
""")


@pytest.mark.slow  # a JAX process beside this one
def test_jax_backend_matches_tensorflow(tmp_path):
    model = AlignModel(tiny_align_config())
    model.build()
    # Non-trivial BatchNorm statistics, so the inference path is really exercised.
    rng = np.random.default_rng(0)
    for w in model.vision_model.non_trainable_weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    model.temperature.assign(0.3)
    model.save_pretrained(str(tmp_path / "model"))
    inputs = {"pixel_values": pixel_batch(2, 37), **text_batch(1000, lengths=(5, 8), max_len=8)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "run_jax.py"
    script.write_text(JAX_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    root = REPO_ROOT
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, str(script), str(tmp_path / "model"), str(tmp_path / "inputs.npz"),
                    str(tmp_path / "jax.npz")], check=True, env=env, timeout=300)
    jax_out = np.load(tmp_path / "jax.npz")
    ours = model(inputs)
    diffs = {k: float(np.max(np.abs(np.asarray(ours[k]) - jax_out[k]))) for k in ours}
    diffs["vision_last"] = float(np.max(np.abs(
        np.asarray(model.vision_model(inputs["pixel_values"])["last_hidden_state"]) - jax_out["vision_last"])))
    text = model.text_model({k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    diffs["text_last"] = float(np.max(np.abs(np.asarray(text["last_hidden_state"]) - jax_out["text_last"])))
    diffs["text_pooled"] = float(np.max(np.abs(np.asarray(text["pooler_output"]) - jax_out["text_pooled"])))
    print("TF vs JAX:", diffs)
    assert max(diffs.values()) < 1e-5, diffs
