"""Keep the garbage collector off what lives as long as an open index: models, vocabularies, id tables.

An open index holds about half a million objects the collector tracks (tokenizer vocabularies, torch
modules, per-segment id tables). Every full collection walks all of them, and searching allocates enough
to trigger one every few queries: on 2 cores that cost 1.2 ms a query in batches and 0.6 ms at the
single-query median (``python -m eval.bench.gc_freeze``: one process, frozen and not, alternating). ``gc.freeze()`` moves what exists once
an index is open into a permanent generation that collections skip, as the Python documentation advises
for long-running servers; closing an index unfreezes everything, so what it held can still be collected.
"""

from __future__ import annotations

import gc


def freeze_loaded() -> None:
    """Collect once, then freeze what survives (call when an index has finished opening)."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Return frozen objects to the collector (call when an index closes)."""
    gc.unfreeze()
