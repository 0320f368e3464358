"""The hot loops' heap settings: start-up's objects frozen, young collections rarer, undone after."""

from __future__ import annotations

import gc

from riverrun.workers.runtime.heap import YOUNG_THRESHOLD, settled_heap


def test_a_settled_heap_is_frozen_and_collected_less_often_then_restored() -> None:
    before = gc.get_threshold()
    with settled_heap():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
        # Collections still run: a cycle made after start-up is freed.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
