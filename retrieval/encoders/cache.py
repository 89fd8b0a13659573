"""One loaded encoder per (class, model weights, device, role) per process.

Indexes that share a model share its memory. An encoder serializes its own calls, so documents being
encoded for a write (role "document") get their own copy: query encoding never waits behind a long
document batch.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from retrieval.encoders.models import ResolvedModel

E = TypeVar("E")
_shared: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def shared_encoder(cls: type[E], model: ResolvedModel, device: str, role: str = "query") -> E:
    key = (cls, str(model.path), model.weights_sha256, device, role)
    with _lock:
        if key not in _shared:
            _shared[key] = cls(model, device=device)  # type: ignore[call-arg]
        return _shared[key]  # type: ignore[no-any-return]
