"""Recall measured, not assumed: each retriever's approximate search tuned against its exact search.

At build time (:func:`tune_folder` from :func:`indexes.indexing.folder_build.build_folder`) and again with
``hybrid index tune``, every retriever whose kind has something to tune (:meth:`RetrieverKind.tune`: SPLADE's
clusters; dense's efSearch/nprobe) takes sample queries, measures recall@10 of its approximate search against its
exact search and records in the manifest the cheapest parameters reaching the target (``search_tuning``), with the
recall measured. The searcher then uses them by default. A recall below the target is a warning, never silent.

Sample queries: a file given (``--queries``, BEIR ``queries.jsonl``), else the corpus's own ``queries.jsonl`` beside
its ``corpus.jsonl`` (a BEIR folder), else the kind samples documents (SPLADE: a document's heaviest impacts as a
query). At most :data:`SAMPLE` of them, in file order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from indexes.kinds import get_kind
from indexes.kinds.base import TuningQueries, TuningResult
from indexes.storage.docstore.corpus import CorpusError, read_jsonl_objects
from indexes.storage.docstore.manifest import Manifest
from retrieval.core.options import BuildOptions, OpenOptions

SAMPLE = 200
QUERY_FILES = ("queries.jsonl", "queries.jsonl.gz")
DOCUMENTS = "documents (sampled)"


def queries_beside(corpus_file: Path | None) -> Path | None:
    """A BEIR folder's queries file next to its corpus file, if there is one."""
    if corpus_file is None:
        return None
    return next((corpus_file.parent / n for n in QUERY_FILES if (corpus_file.parent / n).is_file()), None)


def read_queries(path: Path, limit: int = SAMPLE) -> list[str]:
    """The first ``limit`` query texts of a BEIR queries file (``{"_id", "text"}`` a line), or of a plain text file
    (one query a line)."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such queries file")
    texts: list[str] = []
    if ".jsonl" in path.name:
        for number, obj in read_jsonl_objects(path):
            text = obj.get("text")
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{number}: a query needs a 'text' string")
            if text.strip():
                texts.append(text)
            if len(texts) >= limit:
                break
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    if not texts:
        raise CorpusError(f"{path}: no queries in it")
    return texts


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def tune_folder(folder: Path, manifest: Manifest, options: BuildOptions, queries: Path | None,
                names: Sequence[str] | None = None, targets: dict[str, float] | None = None,
                warn: Callable[[str], None] = _warn) -> dict[str, TuningResult]:
    """Tune the retrievers (``names``, default all) of the index folder ``folder`` and record each result in
    ``manifest`` (which the caller writes). ``targets`` overrides the recall target per retriever name; otherwise
    each kind's (``options``' field its :attr:`RetrieverKind.tuning_target` names)."""
    texts = read_queries(queries) if queries is not None else None
    source = queries.name if queries is not None else DOCUMENTS
    open_options = OpenOptions(device=options.device, verify="off", splade_search="auto",
                               splade_matrix_max_mb=2**31)  # whatever the size: tuning searches in memory
    results: dict[str, TuningResult] = {}
    for name in names if names is not None else list(manifest.retrievers):
        entry = manifest.retrievers[name]
        kind = get_kind(entry.kind)
        if kind.tuning_target is None:
            continue
        target = (targets or {}).get(name, float(getattr(options, kind.tuning_target)))
        component = kind.open(folder, name, entry, open_options)
        try:
            encoder = kind.load_encoder(manifest, name, options.device) if texts is not None else None
            result = kind.tune(component, TuningQueries(texts, source, encoder, SAMPLE), target)
        finally:
            component.close()
        if result is None:
            continue
        entry.search_tuning = result.as_dict()
        results[name] = result
        if not result.reached:
            warn(f"retriever {name!r}: approximate search reaches recall@10 {result.recall_at_10:.3f} at best "
                 f"({result.parameters}), below the target {target:g}; searches with 'exact' are exact")
        elif result.exhaustive:
            warn(f"retriever {name!r}: recall@10 {target:g} is reached only by the exhaustive setting "
                 f"({result.parameters}): its searches are exact in effect (approximation pays off on larger indexes)")
    return results


def worst(tunings: Sequence[dict | None]) -> dict | None:  # type: ignore[type-arg]
    """Of shards' tunings, the one with the lowest recall (a sharded index's manifest shows its weakest shard)."""
    known = [t for t in tunings if t]
    return min(known, key=lambda t: t["recall_at_10"]) if known else None


def tune_index(folder: Path, options: BuildOptions, queries: Path | None, names: Sequence[str] | None = None,
               targets: dict[str, float] | None = None, warn: Callable[[str], None] = _warn
               ) -> dict[str, list[TuningResult]]:
    """``hybrid index tune``: tune a published index folder (each shard of a sharded one) and rewrite its
    manifests; the index's files are unchanged. Returns each retriever's results, one per shard."""
    manifest = Manifest.read(folder)
    found: dict[str, list[TuningResult]] = {}
    shards = [folder / rel for rel in manifest.shards] or [folder]
    for shard in shards:
        shard_manifest = manifest if shard == folder else Manifest.read(shard)
        for name, result in tune_folder(shard, shard_manifest, options, queries, names, targets, warn).items():
            found.setdefault(name, []).append(result)
        if shard != folder:
            shard_manifest.write(shard)
    if manifest.shards:
        for name in found:
            shard_entries = [Manifest.read(s).retrievers[name].search_tuning for s in shards]
            manifest.retrievers[name] = replace(manifest.retrievers[name], search_tuning=worst(shard_entries))
    manifest.write(folder)
    return found
