"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from retrieval.search.pipeline import SearchResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hybrid_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("hybrid_request_seconds", "HTTP request latency", ["route"], buckets=BUCKETS,
                                 registry=self.registry)
        self.stage = Histogram("hybrid_search_stage_seconds", "Per-query time of each search stage",
                               ["index", "stage"], buckets=BUCKETS, registry=self.registry)
        self.documents = Gauge("hybrid_index_documents", "Documents per index", ["index"], registry=self.registry)
        self.size = Gauge("hybrid_index_size_bytes", "Index size on disk", ["index", "part"], registry=self.registry)
        self.load = Gauge("hybrid_index_load_seconds", "Time to load an index and its models", ["index"],
                          registry=self.registry)

    def watch_batcher(self, batcher: object) -> None:
        batches = Gauge("hybrid_micro_batches", "Micro-batches run for single-query requests", registry=self.registry)
        queries = Gauge("hybrid_micro_batched_queries", "Single-query requests answered in micro-batches",
                        registry=self.registry)
        batches.set_function(lambda: float(getattr(batcher, "batches")))
        queries.set_function(lambda: float(getattr(batcher, "queries")))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_search(self, index: str, result: SearchResult) -> None:
        for stage, ms in result.timings_ms.items():
            self.stage.labels(index, stage).observe(ms / 1000.0)

    def observe_registry(self, registry: object) -> None:
        for name, live in getattr(registry, "indexes").items():
            manifest = live.manifest
            self.documents.labels(name).set(manifest.doc_count)
            self.size.labels(name, "docstore").set(manifest.docstore_bytes)
            for retriever in manifest.retrievers.values():
                self.size.labels(name, retriever.name).set(retriever.size_bytes)
        for name, seconds in getattr(registry, "load_seconds").items():
            self.load.labels(name).set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
