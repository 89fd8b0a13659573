"""Query encoders on ONNX Runtime: a model's own sentence-transformers module chain, exported once.

Why: on 2 CPU cores a single query's forward pass is mostly framework overhead, not arithmetic. The
same graph run by ONNX Runtime took 2.0 ms instead of 7.2 ms (MiniLM-L6) and 1.7 ms instead of 3.1 ms
(SPLADE-tiny); dynamic int8 weights take 1.2 and 1.35 ms. Documents keep the torch path, so an index
never needs rebuilding for a query runtime; only query vectors move, by what the tests measure.

How:
* the export is the whole module chain (transformer, pooling, normalization: ST's own ``forward``),
  traced once by ``torch.onnx`` (the TorchScript exporter: about a second, no extra packages), so the
  graph returns the ``sentence_embedding`` the torch path returns;
* ``int8`` is ``onnxruntime.quantization.quantize_dynamic`` over that graph (weights int8, activations
  quantized per batch at run time);
* files are cached next to the indexes (``INDEX_ROOT/.onnx/FINGERPRINT/``), never inside the model's
  folder, whose weight files are fingerprinted; the name holds the weights fingerprint and the torch and
  onnxruntime versions, so a changed model or library never reuses a stale graph, and a file is written
  to a temporary name and renamed, so concurrent processes never read half of one. Nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.encoders.models import ModelError, ResolvedModel
from retrieval.encoders.st_forward import preprocess

Variant = Literal["fp32", "int8"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8")
OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_export_lock = threading.RLock()  # an int8 export makes the fp32 graph first, under the same lock


CACHE_DIR = ".onnx"  # under the index root; IndexRoot skips dot-names


def graph_path(cache: Path, model: ResolvedModel, variant: Variant) -> Path:
    """Where ``model``'s query graph lives under the cache folder ``cache`` (``INDEX_ROOT/.onnx``)."""
    import onnxruntime
    import torch

    versions = f"torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}-opset{OPSET}"
    return cache / model.weights_sha256[:16] / f"query-{versions}-{variant}.onnx"


def _atomic(target: Path, write: Any) -> None:
    """Run ``write(tmp_path)`` and rename the result onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _chain(model: Any, names: Sequence[str]) -> Any:
    """The model's module chain with positional tensor inputs, as the exporter wants them."""
    import torch

    class Chain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, tensors)))["sentence_embedding"]

    return Chain()


def export(model: Any, resolved: ResolvedModel, variant: Variant, cache: Path) -> Path:
    """The cached graph of ``model`` (a loaded sentence-transformers model), exported if missing."""
    import torch

    target = graph_path(cache, resolved, variant)
    with _export_lock:
        if target.is_file():
            return target
        if variant == "int8":
            plain = export(model, resolved, "fp32", cache)

            def quantize(tmp: Path) -> None:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(plain), str(tmp), weight_type=QuantType.QInt8)

            _atomic(target, quantize)
            return target
        features = _features(model, ["a query", "another query of other length"])
        names = [n for n in _INPUTS if n in features]
        axes = {n: {0: "batch", 1: "tokens"} for n in names}
        was_training = [m.training for m in model.modules()]
        model.eval()  # the exporter restores each module's mode afterwards; dropout must be off while it traces

        def trace(tmp: Path) -> None:
            with torch.no_grad():
                torch.onnx.export(_chain(model, names), tuple(features[n] for n in names), str(tmp), dynamo=False,
                                  input_names=names, output_names=["embedding"],
                                  dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=OPSET)

        try:
            _atomic(target, trace)
        except Exception as exc:  # the exporter raises many types; all mean "this model does not export"
            raise ModelError(f"model {resolved.model_id!r} cannot be exported to ONNX for query encoding "
                             f"({type(exc).__name__}: {str(exc)[:200]}); use query mode 'torch'") from None
        finally:
            for module, training in zip(model.modules(), was_training):
                module.training = training
        return target


def _features(model: Any, texts: list[str]) -> dict[str, Any]:
    return {k: v for k, v in preprocess(model, texts).items() if k in _INPUTS}


class OnnxQueryEncoder:
    """A model's query embeddings (``[n, D]`` float32, as its torch forward gives them) from ONNX Runtime.

    Tokenization is the model's own (same ids, same truncation); one session per encoder, which
    ONNX Runtime allows to be called from several threads at once.
    """

    def __init__(self, model: Any, resolved: ResolvedModel, variant: Variant, cache: Path,
                 threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch

        self.variant = variant
        self.path = export(model, resolved, variant, cache)
        self._model = model
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spinning after a run: on a few cores the spinning threads take the CPU Lucene and FAISS need next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Length-sorted batches of ``batch_size``: one padded call over hundreds of queries pads every query to
        the longest and, for SPLADE, holds a vocabulary-wide logit row per token of all of them at once."""
        if len(texts) <= batch_size:
            return self._run(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            vectors = self._run([texts[i] for i in chunk])
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[chunk] = vectors
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        features = _features(self._model, texts)
        feed = {name: features[name].numpy().astype(np.int64, copy=False) for name in self._inputs}
        return np.asarray(self._session.run(None, feed)[0], dtype=np.float32)


# Query modes served by ONNX Runtime, and the graph variant each runs.
ONNX_MODES: dict[str, Variant] = {"onnx": "fp32", "onnx-int8": "int8"}


class OnnxQueries:
    """Mixin for the torch encoders: ``self._onnx(mode, cache)`` is their ONNX twin, made on first use and kept.

    Needs ``_model`` (the loaded sentence-transformers model), ``model_info`` and ``_lock`` (held while the
    export traces the torch model, which torch-mode queries also run).
    """

    _model: Any
    model_info: ResolvedModel
    _lock: threading.Lock
    _onnx_made: dict[str, OnnxQueryEncoder]

    def _onnx(self, mode: str, cache: Path) -> OnnxQueryEncoder:
        variant = ONNX_MODES[mode]
        made = self.__dict__.setdefault("_onnx_made", {})
        found = made.get(variant)
        if found is None:
            with self._lock:
                found = made.get(variant)
                if found is None:
                    found = made[variant] = OnnxQueryEncoder(self._model, self.model_info, variant, cache)
        return found
