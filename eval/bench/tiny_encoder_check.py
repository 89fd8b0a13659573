"""DenseEncoder on the CPU with a random tiny BERT, for machines without the built-in models' packages.

    PYTHONPATH=. python -m eval.bench.tiny_encoder_check

Checks unit norms, batch equals single, and agreement with sentence-transformers' own ``encode_query``;
prints the versions it ran on and PASS/FAIL (exit 1). README "Python versions" ran it on Python 3.12.
"""
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer, models
from transformers import BertConfig, BertModel, BertTokenizerFast

print(platform.python_version(), torch.__version__, sentence_transformers.__version__, transformers.__version__)
tmp = Path(tempfile.mkdtemp())
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)] + ["##" + chr(c) for c in range(97, 123)] + "boundary layer flow over a flat plate heat transfer in hypersonic wing flutter".split()
(tmp / "vocab.txt").write_text("\n".join(vocab))
tok = BertTokenizerFast(vocab_file=str(tmp / "vocab.txt"))
torch.manual_seed(0)
bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128))
(tmp / "hf").mkdir(); bert.save_pretrained(tmp / "hf"); tok.save_pretrained(tmp / "hf")
word = models.Transformer(str(tmp / "hf"), max_seq_length=64)
st = SentenceTransformer(modules=[word, models.Pooling(64, "mean"), models.Normalize()], device="cpu")
st.save(str(tmp / "st"))
import inspect

from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.models import ResolvedModel

print("ResolvedModel fields:", list(inspect.signature(ResolvedModel).parameters))
params = inspect.signature(ResolvedModel).parameters
kwargs = {k: None for k in params}
kwargs.update({"model_id": "tiny", "path": tmp / "st"})
for k in params:
    if "sha" in k: kwargs[k] = "x"
enc = DenseEncoder(ResolvedModel(**kwargs), device="cpu")
TEXTS = ["boundary layer flow over a flat plate", "heat transfer in hypersonic flow", "wing flutter"]
batch = enc.encode_queries(TEXTS, batch_size=2)
single = np.stack([enc.encode_query(t) for t in TEXTS])
print("norms", np.linalg.norm(batch, axis=1), "max|batch-single|", float(np.abs(batch - single).max()))
print("fast path", enc.single_query_fast_path)
ref = st.encode_query(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
print("max|batch-st|", float(np.abs(batch - ref).max()), "max|single-st|", float(np.abs(single - ref).max()))
ok = np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4) and np.allclose(batch, single, atol=1e-5)
print("PASS" if ok else "FAIL"); sys.exit(0 if ok else 1)
