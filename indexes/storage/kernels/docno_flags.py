"""One flag per row from a per-docno flag array: the view bitmaps and filter masks the in-memory searches read.

A view's bitmap and a metadata filter's matches are indexed by docno; the searches hold rows in docno order, with
gaps after compactions. Rows whose docno lies past the flags (written after them) are not selected.
"""

from __future__ import annotations

import numpy as np


def row_flags(docnos: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``flags[docno]`` as a bool per row of ``docnos``; False where a docno lies past the flags."""
    out = np.zeros(len(docnos), dtype=bool)
    inside = docnos < len(flags)
    out[inside] = flags[docnos[inside]]
    return out
