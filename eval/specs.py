"""Method specs for the harness: ``bm25``, ``rrf:bm25+splade+dense``, ``weighted:splade=0.6,dense=0.4:minmax``,
``weighted:splade+dense:dbsf`` (``+`` joins names weighing 1).

Names are the retrievers' names in the index (``dense-e5`` as well as ``dense``); whether the index has
them is checked when it is opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retrieval.core.errors import HybridError
from retrieval.search.fusion import NORMALIZATIONS, FusionConfig


class SpecError(HybridError, ValueError):
    pass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    retrievers: tuple[str, ...]
    fusion: FusionConfig | None  # None for a single retriever

    @property
    def is_hybrid(self) -> bool:
        return self.fusion is not None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check(names: list[str], spec: str) -> tuple[str, ...]:
    for n in names:
        if not _NAME.match(n):
            raise SpecError(f"{spec!r}: {n!r} is not a retriever name (letters, digits, '.', '_', '-')")
    if len(set(names)) < 2:
        raise SpecError(f"{spec!r}: a hybrid needs at least two different retrievers")
    return tuple(dict.fromkeys(names))


def parse_spec(spec: str) -> MethodSpec:
    spec = spec.strip()
    if ":" not in spec and _NAME.match(spec):
        return MethodSpec(spec, (spec,), None)  # one retriever, by its name in the index
    method, _, rest = spec.partition(":")
    if method == "rrf":
        body, _, k = rest.partition(":")
        try:
            rrf_k = int(k) if k else 60
        except ValueError:
            raise SpecError(f"{spec!r}: RRF k must be an integer") from None
        names = _check([n.strip() for n in body.split("+") if n.strip()], spec)
        return MethodSpec(spec, names, FusionConfig(method="rrf", rrf_k=rrf_k))
    if method == "weighted":
        body, _, norm = rest.partition(":")
        norm = norm or "minmax"
        if norm not in NORMALIZATIONS:
            raise SpecError(f"{spec!r}: normalization must be one of {', '.join(NORMALIZATIONS)}")
        weights: dict[str, float] = {}
        for part in body.replace("+", ",").split(","):
            name, sep, value = part.partition("=")
            try:
                weights[name.strip()] = float(value) if sep else 1.0
            except ValueError:
                raise SpecError(f"{spec!r}: weight {value!r} is not a number") from None
        names = _check(list(weights), spec)
        if any(w < 0 for w in weights.values()) or all(w == 0 for w in weights.values()):
            raise SpecError(f"{spec!r}: weights must be >= 0 and not all 0")
        return MethodSpec(spec, names, FusionConfig(method="weighted", weights=weights, normalization=norm))  # type: ignore[arg-type]
    raise SpecError(f"{spec!r}: use a retriever name, rrf:A+B[+C][:k] or weighted:A=w,B=w[:minmax|zscore|dbsf]")
