"""A hot loop's heap: what start-up left alive is kept out of the cyclic collector's way.

A worker's start-up leaves about a hundred thousand long-lived objects (River, NumPy, SciPy,
the models). Every full collection walks them all, tens of milliseconds in which the loop
stands still, and with the default threshold a young collection runs every 700 allocations, a
few records' worth. The hot path's objects are freed by reference counting (cycles are rare),
so start-up's heap is frozen and young collections run less often: the collector had taken
about a sixth of the scorer's throughput on a broker.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Collect once, freeze what is alive, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """`settle_heap` for a while, then the collector as it was (a worker run inside a tool)."""
    before = gc.get_threshold()
    settle_heap()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
