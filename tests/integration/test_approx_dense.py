"""Dense ANN search tuned against exact search (issue 37): a build with ``--faiss HNSW32`` or an IVF factory records
the efSearch/nprobe reaching ``tune_recall_dense`` in its manifest and searches with it; ``exact`` (per request and as
a setting) scans every stored vector and equals a Flat index over the same vectors; ``hybrid index tune`` re-measures
and warns where only the exhaustive setting reaches the target; a value below the target is reported as such."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from indexes.indexing.tuning import DOCUMENTS, tune_index
from indexes.storage.docstore.manifest import Manifest
from indexes.storage.faiss import backend as faiss_backend
from indexes.storage.faiss import tuning as faiss_tuning
from retrieval.core.options import BuildOptions
from retrieval.search.pipeline import Searcher
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import run_cli

pytestmark = pytest.mark.slow  # two real builds (the model encodes 120 documents twice): about a minute

QUERIES = ["flow", "boundary layer heat transfer", "supersonic flow over a wing", "pressure distribution"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index root with two dense-only indexes of 120 Cranfield documents: ``hnsw`` (HNSW32) and ``ivf`` (IVF4)."""
    base = tmp_path_factory.mktemp("approx_dense")
    (base / "corpus").mkdir()
    corpus = write_jsonl(base / "corpus" / "corpus.jsonl", cranfield_docs(120))
    for name, factory in (("hnsw", "HNSW32"), ("ivf", "IVF4,Flat")):
        proc = run_cli("index", "build", str(corpus), "--name", name, "--retrievers", "dense", "--faiss", factory,
                       "--quiet", root=base / "root")
        assert proc.returncode == 0, proc.stderr
        assert "dense: approximate search {" in proc.stdout  # the build says what it tuned
    return base / "root"


def _flat_hits(folder: Path, query_vector: np.ndarray, k: int) -> list[int]:
    """Docnos of a Flat index's top ``k`` over the ANN index's stored vectors."""
    index = faiss_backend.FaissIndex(folder / "dense")
    docnos = index.docnos()
    with tempfile.TemporaryDirectory() as tmp:
        faiss_backend.save(faiss_backend.build(index.reconstruct(docnos), "Flat"), Path(tmp))
        _, rows = faiss_backend.FaissIndex(Path(tmp), flat="faiss").search(query_vector[None, :], k)
    return docnos[rows[0]].tolist()


@pytest.mark.parametrize(("name", "parameter"), [("hnsw", "ef_search"), ("ivf", "nprobe")])
def test_the_build_tunes_records_and_applies_the_ann_parameter(built: Path, name: str, parameter: str) -> None:
    folder = built / name
    tuning = Manifest.read(folder).retrievers["dense"].search_tuning
    assert tuning is not None and tuning["target"] == 0.95 and tuning["reached"] and tuning["recall_at_10"] >= 0.95
    assert tuning["source"] == DOCUMENTS and tuning["queries"] == 120  # no queries.jsonl: documents sampled
    assert set(tuning["parameters"]) == ({"ef_search"} if name == "hnsw" else {"nprobe", "nlist"})
    assert tuning["grid"][-1]["parameters"][parameter] == tuning["parameters"][parameter]
    if name == "ivf":
        assert tuning["parameters"]["nlist"] == 4 and tuning["exhaustive"] == (tuning["parameters"]["nprobe"] == 4)
    with Searcher.open(folder, verify="off") as searcher:
        assert getattr(searcher.searchers["dense"].index, parameter) == tuning["parameters"][parameter]
    with Searcher.open(folder, verify="off", **{f"dense_{parameter}": 3}) as searcher:  # the setting wins
        assert getattr(searcher.searchers["dense"].index, parameter) == 3


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
def test_exact_per_request_and_as_a_setting_equals_a_flat_search(built: Path, name: str) -> None:
    folder = built / name
    with Searcher.open(folder, verify="off", dense_ef_search=1, dense_nprobe=1) as narrow, \
            Searcher.open(folder, verify="off", dense_ef_search=1, dense_nprobe=1, exact=True) as always_exact:
        encoder = narrow.searchers["dense"]
        differs = 0
        for query in QUERIES:
            vector = encoder.encode_queries([query])[0]
            exact = narrow.search(query, k=20, retrievers=["dense"], exact=True).hits
            assert [h.id for h in exact] == [h.id for h in always_exact.search(query, k=20, retrievers=["dense"]).hits]
            want = _flat_hits(folder, vector, 20)
            ids = encoder._store.ids_by_docno(want)
            assert [h.id for h in exact] == ids
            approx = narrow.search(query, k=20, retrievers=["dense"]).hits
            differs += [h.id for h in approx] != ids
        assert differs  # one IVF list or the narrowest graph search misses some of the exact top 20


def test_tune_command_targets_and_warns(built: Path) -> None:
    proc = run_cli("index", "tune", "ivf", "--target-recall", "1.0", root=built)
    assert proc.returncode == 0, proc.stderr
    tuning = Manifest.read(built / "ivf").retrievers["dense"].search_tuning
    assert tuning is not None and tuning["target"] == 1.0 and tuning["recall_at_10"] == 1.0
    assert ("exact in effect" in proc.stderr) == tuning["exhaustive"]
    assert "dense: approximate search {'nlist': 4, 'nprobe': " in proc.stdout


def test_a_target_out_of_reach_is_reported_not_reached(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HNSW has no exhaustive setting: past its widest efSearch a target is not reached, and the build warns."""
    monkeypatch.setattr(faiss_tuning, "EF_SEARCH", (1,))  # the narrowest graph search only
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((4000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        faiss_backend.save(faiss_backend.build(vectors, "HNSW8"), Path(tmp))
        index = faiss_backend.FaissIndex(Path(tmp))
        queries, own = faiss_tuning.sample_queries(index, 50)
        measured = faiss_tuning.measure(index, queries, 0.999, own)
    assert measured is not None and not measured.reached and measured.recall < 0.999
    assert measured.parameters == {"ef_search": 1} and index.ef_search == 1
    warnings: list[str] = []
    options = BuildOptions(progress=False)
    tune_index(built / "hnsw", options, None, ["dense"], {"dense": 1.0}, warnings.append)
    tuning = Manifest.read(built / "hnsw").retrievers["dense"].search_tuning
    assert tuning is not None
    assert bool(warnings) == (not tuning["reached"])  # 120 documents: the narrowest search may find them all
    assert all("below the target 1" in w for w in warnings)
