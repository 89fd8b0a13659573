"""Paired two-sided randomization (permutation) test over per-query scores (Smucker et al. 2007).

Deterministic for a given seed, so a leaderboard's p-values are reproducible to the digit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def paired_randomization(a: Mapping[str, float], b: Mapping[str, float], trials: int = 10_000, seed: int = 42) -> float:
    """p-value for "mean(a) != mean(b)" over the queries both were scored on."""
    common = sorted(set(a) & set(b))
    if not common:
        return 1.0
    diff = np.array([a[q] - b[q] for q in common], dtype=np.float64)
    observed = abs(diff.mean())
    if observed == 0.0:
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(trials, len(diff)))
    permuted = np.abs((signs * diff).mean(axis=1))
    # +1 in numerator and denominator: the observed labelling is one of the permutations.
    return float((np.count_nonzero(permuted >= observed - 1e-12) + 1) / (trials + 1))
