"""Method specs: a search written on one line, as the harness's ``--method`` and the CLI's ``--prf`` take them.

A spec parses into the same request the REST API and ``Searcher.search`` take (:meth:`Source.request`,
:meth:`MethodSpec.request`: :class:`~retrieval.search.request.SearchOptions`), so a method the leaderboard scores
is a request anyone can send.

* one retriever, by its name in the index: ``bm25``, ``dense-e5``;
* a retriever with pseudo-relevance feedback: ``bm25+rm3``, ``dense+average``,
  ``bm25+rm3(fb_docs=5,fb_terms=20)`` (the PRF methods are the kinds' own, :mod:`indexes.kinds`);
* a retriever in another query mode: ``splade@tokens`` (inference-free), ``dense@onnx-int8``, also with
  PRF (``splade@onnx+rocchio``) and inside fusions (``rrf:bm25+splade@onnx-int8+dense@onnx``);
* a retriever searched exactly where its default is approximate (the request's ``exact``): ``splade!exact``,
  ``rrf:bm25+splade!exact+dense!exact``, so the leaderboard scores both side by side (in a fusion every source is
  exact or none is: one request says it once);
* RRF: ``rrf:bm25+splade+dense[:k]``, and with PRF runs: ``rrf:bm25+rm3+dense``;
* weighted sums: ``weighted:splade=0.6,dense=0.4[:minmax|zscore|dbsf]``, ``weighted:splade+dense:dbsf``
  (``+`` joins names weighing 1; ``dbsf`` is Qdrant's distribution-based score fusion);
* QPP-weighted (query-adaptive) fusion, fit by cross-validation: ``qpp:bm25+splade+dense[:minmax|zscore|dbsf]``.

A PRF method name right after a retriever in a ``+`` list belongs to it, so PRF method names
(``rm3``, ``rocchio``, ``average``) cannot be retriever names in specs. Whether the index has the
retrievers is checked when it is opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from indexes.kinds import KINDS
from retrieval.core.errors import HybridError
from retrieval.core.types import PRF_FIELDS, PrfConfig
from retrieval.search.fusion import NORMALIZATIONS, FusionConfig
from retrieval.search.request import Fusion, SearchOptions


class SpecError(HybridError, ValueError):
    pass


@dataclass(frozen=True)
class Source:
    """One ranked list the harness computes: a retriever, optionally in a query mode and with PRF."""

    retriever: str
    prf: PrfConfig | None = None
    mode: str | None = None
    exact: bool = False

    @property
    def name(self) -> str:
        return (self.retriever + (f"@{self.mode}" if self.mode else "") + ("!exact" if self.exact else "")
                + (f"+{self.prf.label()}" if self.prf else ""))

    def request(self, k: int) -> SearchOptions:
        """This list as a search request for the top ``k``."""
        return SearchOptions.parse({"k": k, "retrievers": [self.retriever], "exact": self.exact,
                                    "prf": {self.retriever: self.prf} if self.prf else None,
                                    "query_mode": {self.retriever: self.mode} if self.mode else None})


@dataclass(frozen=True)
class MethodSpec:
    name: str
    retrievers: tuple[str, ...]  # the sources' names: the keys fusion weights use
    fusion: FusionConfig | None  # None for a single source
    sources: dict[str, Source] = field(default_factory=dict, compare=False)
    adaptive: bool = False  # QPP-weighted: weights and coefficients are fit per fold

    @property
    def is_hybrid(self) -> bool:
        return self.fusion is not None

    def request(self, k: int) -> SearchOptions:
        """This method as one search request for the top ``k``. A method that fuses two lists of one retriever
        (``rrf:bm25+bm25+rm3``) or fits its weights (``qpp:``) is the harness's own: no single request says it."""
        retrievers = [source.retriever for source in self.sources.values()]
        if self.adaptive or len(set(retrievers)) < len(retrievers):
            raise SpecError(f"{self.name!r} fuses lists a single search request cannot ask for (the same retriever "
                            "twice, or weights fit per fold)")
        if len({source.exact for source in self.sources.values()}) > 1:
            raise SpecError(f"{self.name!r} mixes exact and approximate sources; one request is exact or not")
        renamed = {source.name: source.retriever for source in self.sources.values()}
        fusion = None
        if self.fusion is not None:
            weights = {renamed[n]: w for n, w in self.fusion.weights.items()} if self.fusion.weights else None
            fusion = Fusion(method=self.fusion.method, rrf_k=self.fusion.rrf_k, weights=weights,
                            normalization=self.fusion.normalization)
        return SearchOptions.parse({
            "k": k, "retrievers": retrievers, **({"fusion": fusion} if fusion else {}),
            "exact": any(s.exact for s in self.sources.values()),
            "prf": {s.retriever: s.prf for s in self.sources.values() if s.prf} or None,
            "query_mode": {s.retriever: s.mode for s in self.sources.values() if s.mode} or None})


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PRF = re.compile(r"^([a-z0-9_]+)(?:\((.*)\))?$")
_MODE = re.compile(r"^[a-z0-9-]{1,32}$")
_COMMA = re.compile(r",(?![^(]*\))")  # commas outside parentheses


def prf_methods() -> set[str]:
    return {method for kind in KINDS.values() for method in kind.prf_methods}


def parse_prf(token: str, spec: str) -> PrfConfig:
    """``rm3`` or ``rm3(fb_docs=5,fb_terms=20)``; ``spec`` is what error messages quote."""
    match = _PRF.match(token.strip())
    if match is None:
        raise SpecError(f"{spec!r}: {token!r} is not a PRF method such as rm3 or rm3(fb_docs=5)")
    values: dict[str, int | float] = {}
    for part in filter(None, (match.group(2) or "").split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in PRF_FIELDS:
            raise SpecError(f"{spec!r}: PRF parameter {part!r}; use {', '.join(f'{k}=N' for k in PRF_FIELDS)}")
        try:
            values[key] = PRF_FIELDS[key](value)
        except ValueError:
            raise SpecError(f"{spec!r}: PRF parameter {key} needs a number, got {value!r}") from None
    return PrfConfig(match.group(1), **values)  # type: ignore[arg-type]


def parse_sources(body: str, spec: str) -> list[Source]:
    """``bm25+rm3+dense`` -> [bm25 with RM3, dense]: a PRF method attaches to the retriever before it."""
    methods = prf_methods()
    sources: list[Source] = []
    for token in (t.strip() for t in body.split("+")):
        if not token:
            continue
        match = _PRF.match(token)
        if match and match.group(1) in methods:
            if not sources or sources[-1].prf is not None:
                raise SpecError(f"{spec!r}: PRF method {token!r} must follow a retriever name")
            sources[-1] = Source(sources[-1].retriever, parse_prf(token, spec), sources[-1].mode, sources[-1].exact)
            continue
        token, bang, flag = token.partition("!")
        if bang and flag != "exact":
            raise SpecError(f"{spec!r}: {flag!r} after '!' is not a search option; the one there is: exact")
        token, at, mode = token.partition("@")
        if not _NAME.match(token):
            raise SpecError(f"{spec!r}: {token!r} is not a retriever name (letters, digits, '.', '_', '-')")
        if at and not _MODE.match(mode):
            raise SpecError(f"{spec!r}: {mode!r} is not a query mode such as tokens, onnx or onnx-int8")
        sources.append(Source(token, mode=mode or None, exact=bool(bang)))
    return sources


def _hybrid(sources: list[Source], spec: str) -> tuple[tuple[str, ...], dict[str, Source]]:
    names = [s.name for s in sources]
    if len(set(names)) < 2:
        raise SpecError(f"{spec!r}: a hybrid needs at least two different retrievers")
    return tuple(dict.fromkeys(names)), {s.name: s for s in sources}


def _normalization(norm: str, spec: str) -> str:
    norm = norm or "minmax"
    if norm not in NORMALIZATIONS:
        raise SpecError(f"{spec!r}: normalization must be one of {', '.join(NORMALIZATIONS)}")
    return norm


def parse_spec(spec: str) -> MethodSpec:
    spec = spec.strip()
    if ":" not in spec:
        sources = parse_sources(spec, spec)
        if len(sources) == 1:
            source = sources[0]
            return MethodSpec(source.name, (source.name,), None, {source.name: source})
        if not sources:
            raise SpecError("an empty method spec; use a retriever name such as bm25")
        raise SpecError(f"{spec!r}: to combine retrievers, say how: rrf:{spec} or weighted:...")
    method, _, rest = spec.partition(":")
    if method == "rrf":
        body, _, k = rest.partition(":")
        try:
            rrf_k = int(k) if k else 60
        except ValueError:
            raise SpecError(f"{spec!r}: RRF k must be an integer") from None
        names, sources = _hybrid(parse_sources(body, spec), spec)
        return MethodSpec(spec, names, FusionConfig(method="rrf", rrf_k=rrf_k), sources)
    if method == "weighted":
        body, _, norm = rest.partition(":")
        weights: dict[str, float] = {}
        parsed: list[Source] = []
        for part in _COMMA.split(body):
            name, sep, value = part.rpartition("=") if "=" in part.split(")")[-1] else (part, "", "")
            found = parse_sources(name, spec)
            if not found or (sep and len(found) != 1):
                raise SpecError(f"{spec!r}: {part!r} must name one retriever (weighted takes A=w,B=w or A+B)")
            try:
                weight = float(value) if sep else 1.0
            except ValueError:
                raise SpecError(f"{spec!r}: weight {value!r} is not a number") from None
            weights.update({source.name: weight for source in found})  # A+B: both weigh 1
            parsed.extend(found)
        names, sources = _hybrid(parsed, spec)
        if any(w < 0 for w in weights.values()) or all(w == 0 for w in weights.values()):
            raise SpecError(f"{spec!r}: weights must be >= 0 and not all 0")
        config = FusionConfig(method="weighted", weights=weights, normalization=_normalization(norm, spec))  # type: ignore[arg-type]
        return MethodSpec(spec, names, config, sources)
    if method == "qpp":
        body, _, norm = rest.partition(":")
        names, sources = _hybrid(parse_sources(body, spec), spec)
        config = FusionConfig(method="weighted", normalization=_normalization(norm, spec))  # type: ignore[arg-type]
        return MethodSpec(spec, names, config, sources, adaptive=True)
    raise SpecError(f"{spec!r}: use a retriever name (optionally +PRF, e.g. bm25+rm3), rrf:A+B[+C][:k], "
                    "weighted:A=w,B=w[:minmax|zscore|dbsf] or qpp:A+B[+C][:minmax|zscore|dbsf]")
