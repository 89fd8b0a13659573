"""A scale corpus for benchmarks: N documents resampled from a real collection, with realistic vectors.

    python -m eval.bench.scale --source ../shared/data/cranfield --index data/indexes/beir-cranfield \\
        --docs 100000 --out data/scale/100k [--seed 13] [--encode]

Writes ``OUT/corpus.jsonl`` and ``OUT/queries.jsonl`` (a BEIR-style folder without qrels) and
``OUT/vectors/`` in the format of ``hybrid encode``, so ``hybrid index build OUT --name NAME --vectors
OUT/vectors`` indexes it without an encoder. Never commit the output; the same seed gives the same bytes.

How a synthetic document is made (seeded, ``numpy.random.default_rng(seed)``):

* text: a *template* document of the source is drawn uniformly; each of its sentences is kept with
  probability 0.8 (at least one is), and one sentence of a uniformly drawn *donor* document is inserted
  at a random place; the title is the template's. Lengths and vocabulary are therefore the source's.
* learned-sparse vector (resampled): the template's real impacts (read from the source index's Lucene
  postings, exactly what was indexed), each term dropped with probability 0.1, merged by maximum with the
  donor's impacts at half weight (SPLADE max-pools over tokens, so a union of texts is close to a maximum
  of their vectors). Posting-list lengths and impact distributions stay the source's.
* dense vector (resampled): ``normalize(v_template + w * v_donor + e)`` with ``w`` uniform in [0.05, 0.3]
  and ``e`` Gaussian noise of 0.02 per dimension (real MiniLM vectors from the source's FAISS file): near
  its template (cosine about 0.9) but never a duplicate, so ANN indexes see no exact ties.
* ``--encode`` instead runs the real encoders on the generated text (``hybrid encode``'s code): affordable
  on 2 cores up to about 10k documents.
* ``--text-only`` writes the corpus and queries alone, from the source folder alone (no index, no vectors): for
  builds that encode the text themselves (``hybrid index build --device cuda`` on a GPU machine, where carrying a
  gigabyte of text costs more than making it). The templates and donors are drawn as in a full run, but the
  sentence draws differ from a full run's (no impact draws are interleaved), so its text is its own.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from indexes.storage.docstore.corpus import read_jsonl_objects
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.docstore.store import DocStore
from indexes.storage.vectors.files import DenseWriter, SparseWriter, VectorSet, VectorsManifest

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
KEEP_SENTENCE = 0.8
DROP_TERM = 0.1
DONOR_IMPACT = 0.5
DONOR_WEIGHT = (0.05, 0.3)
NOISE = 0.02


def split_sentences(title: str, text: str) -> list[str]:
    """A document's sentences, the unit the resampler keeps or drops (the title alone for an empty text)."""
    return _SENTENCE.split(text.strip()) if text.strip() else [title]


def resample_text(sentences: list[str], donor: list[str], rng: np.random.Generator) -> str:
    """A template's sentences, each kept with probability ``KEEP_SENTENCE`` (at least one), plus one sentence of
    the donor at a random place (the module docstring's rule; the order of ``rng`` draws is part of the seed's
    promise)."""
    own = [s for s in sentences if rng.random() < KEEP_SENTENCE] or sentences[:1]
    own.insert(int(rng.integers(0, len(own) + 1)), donor[int(rng.integers(0, len(donor)))])
    return " ".join(own)


def _real(index: Path) -> tuple[list[Any], dict[str, dict[str, int]], np.ndarray, Manifest]:
    """The source index's documents (docno order), their stored impacts and their dense vectors."""
    import faiss

    from indexes.storage.faiss.backend import FILE
    from indexes.storage.lucene.backend import document_impacts

    manifest = Manifest.read(index)
    store = DocStore.open(index)
    try:
        docs = [d for batch in store.iter_batches(4096) for d in batch]
        faiss_index = faiss.read_index(str(index / "dense" / FILE))
        docnos = faiss.vector_to_array(faiss.downcast_index(faiss_index).id_map)
        ids = store.ids_by_docno(docnos.tolist())
    finally:
        store.close()
    inner = faiss.downcast_index(faiss.downcast_index(faiss_index).index)
    vectors = inner.reconstruct_n(0, faiss_index.ntotal)
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    dense = np.stack([vectors[row[d.id]] for d in docs]).astype(np.float32)
    return docs, document_impacts(index / "splade"), dense, manifest


def generate_text(source: Path, docs: int, out: Path, seed: int = 13) -> dict[str, Any]:
    """``--text-only``: the corpus (and the source's queries) from the source folder alone (module docstring)."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    corpus_file = source / "corpus.jsonl"
    real = [obj for _, obj in read_jsonl_objects(corpus_file if corpus_file.exists() else source / "corpus.jsonl.gz")
            if f"{obj.get('title', '')} {obj.get('text', '')}".strip()]
    sentences = [split_sentences(d.get("title", ""), d.get("text", "")) for d in real]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    templates = rng.integers(0, len(real), docs)
    donors = rng.integers(0, len(real), docs)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for j in range(docs):
            t, d = int(templates[j]), int(donors[j])
            text = resample_text(sentences[t], sentences[d], rng)
            corpus.write(json.dumps({"_id": f"s{j:07d}", "title": real[t].get("title", ""), "text": text},
                                    ensure_ascii=False) + "\n")
    _copy_queries(source, out)
    report = {"documents": docs, "seed": seed, "source": str(source), "source_documents": len(real),
              "vectors": "none (text only)", "keep_sentence": KEEP_SENTENCE,
              "seconds": round(time.perf_counter() - started, 1)}
    (out / "generation.json").write_text(json.dumps(report, indent=1))
    return report


def _copy_queries(source: Path, out: Path) -> None:
    queries = source / "queries.jsonl"
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for _, obj in read_jsonl_objects(queries if queries.exists() else source / "queries.jsonl.gz"):
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")


def generate(source: Path, index: Path, docs: int, out: Path, seed: int = 13, encode: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    real, impacts, dense, manifest = _real(index)
    sentences = [split_sentences(d.title, d.text) for d in real]
    n_real = len(real)
    if out.exists():
        shutil.rmtree(out)
    (out / "vectors").mkdir(parents=True)
    templates = rng.integers(0, n_real, docs)
    donors = rng.integers(0, n_real, docs)
    ids = [f"s{j:07d}" for j in range(docs)]
    sparse_set = manifest.retrievers["splade"]
    dense_set = manifest.retrievers["dense"]
    sparse = SparseWriter(out / "vectors" / "splade.jsonl") if not encode else None
    dense_out = DenseWriter(out / "vectors" / "dense.npy", docs, dense.shape[1]) if not encode else None
    chunk = 8192
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for start in range(0, docs, chunk):
            stop = min(start + chunk, docs)
            rows = []
            for j in range(start, stop):
                t, d = int(templates[j]), int(donors[j])
                text = resample_text(sentences[t], sentences[d], rng)
                corpus.write(json.dumps({"_id": ids[j], "title": real[t].title, "text": text},
                                        ensure_ascii=False) + "\n")
                if sparse is not None:
                    template = impacts.get(real[t].id, {})
                    kept = {k: w for k, w in template.items() if rng.random() >= DROP_TERM}
                    for k, w in impacts.get(real[d].id, {}).items():
                        half = int(w * DONOR_IMPACT)
                        if half > kept.get(k, 0):
                            kept[k] = half
                    rows.append((ids[j], kept))
            if sparse is not None:
                sparse.write(rows)
            if dense_out is not None:
                weights = rng.uniform(*DONOR_WEIGHT, size=(stop - start, 1)).astype(np.float32)
                mixed = dense[templates[start:stop]] + weights * dense[donors[start:stop]]
                mixed += rng.normal(0.0, NOISE, size=mixed.shape).astype(np.float32)
                mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
                dense_out.write(ids[start:stop], mixed.astype(np.float32))
    _copy_queries(source, out)
    if encode:
        from indexes.indexing.builder import encode_corpus
        from retrieval.core.options import BuildOptions

        shutil.rmtree(out / "vectors")
        encode_corpus(out / "corpus.jsonl", out / "vectors", BuildOptions(progress=False))
    else:
        assert sparse is not None and dense_out is not None
        sparse.close()
        dense_out.close()
        vectors = VectorsManifest(corpus_sha256="", documents=docs)
        keep = ("scale", "doc_top_k")
        vectors.sets["splade"] = VectorSet("splade", "splade", str(sparse_set.model_id), sparse_set.weights_sha256,
                                           {k: sparse_set.parameters.get(k) for k in keep}, docs, ["splade.jsonl"])
        vectors.sets["dense"] = VectorSet("dense", "dense", str(dense_set.model_id), dense_set.weights_sha256,
                                          {"metric": "inner_product", "normalized": True,
                                           "dimension": int(dense.shape[1])}, docs, ["dense.npy", "dense.ids.jsonl"])
        vectors.write(out / "vectors")
    report = {"documents": docs, "seed": seed, "source": str(source), "source_index": str(index),
              "source_documents": n_real, "vectors": "encoded" if encode else "resampled",
              "keep_sentence": KEEP_SENTENCE, "drop_term": DROP_TERM, "donor_impact": DONOR_IMPACT,
              "donor_weight": DONOR_WEIGHT, "noise": NOISE, "seconds": round(time.perf_counter() - started, 1)}
    (out / "generation.json").write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="The BEIR folder the source index was built from.")
    parser.add_argument("--index", type=Path, help="An index of --source with splade and dense (not with --text-only).")
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--encode", action="store_true", help="Real encoders instead of resampled vectors.")
    parser.add_argument("--text-only", action="store_true", help="The corpus and queries alone, no vectors, no index.")
    args = parser.parse_args()
    if args.text_only:
        print(json.dumps(generate_text(args.source, args.docs, args.out, args.seed), indent=1))
        return
    if args.index is None:
        parser.error("--index is required unless --text-only")
    print(json.dumps(generate(args.source, args.index, args.docs, args.out, args.seed, args.encode), indent=1))


if __name__ == "__main__":
    main()
