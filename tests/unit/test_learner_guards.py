"""The learner's drift watch and guardrail, as pure functions of their loss streams."""

from __future__ import annotations

import random

import pytest

from riverrun.workers.learner.drift import DriftWatch
from riverrun.workers.learner.guardrail import Guardrail


def test_adwin_fires_after_the_loss_level_shifts_and_not_before() -> None:
    rng = random.Random(7)
    calm = [abs(rng.gauss(0.3, 0.05)) for _ in range(3000)]
    stormy = [abs(rng.gauss(0.9, 0.05)) for _ in range(1000)]
    watch = DriftWatch("adwin", warmup=500)
    assert watch.observe_many(1, "learning", calm) == []
    found = watch.observe_many(1, "learning", stormy)
    assert found, "a tripled loss went unnoticed"
    first = found[0]
    assert first.version == 1 and first.stream == "learning" and first.detector == "ADWIN"
    assert 3000 < first.position < 3300
    assert first.mean_loss > 0.35  # the recent window already holds the storm's first losses
    assert first.mean_loss_before == pytest.approx(0.3, abs=0.02), "the calm before it"
    assert first.mean_loss > first.mean_loss_before, "a rise"


def test_a_loss_that_falls_is_told_apart_from_one_that_rises() -> None:
    rng = random.Random(8)
    learning = [abs(rng.gauss(0.6, 0.05)) for _ in range(1500)]
    learned = [abs(rng.gauss(0.05, 0.02)) for _ in range(1500)]
    found = DriftWatch("adwin", warmup=500).observe_many(1, "learning", learning + learned)
    assert found and all(d.mean_loss < d.mean_loss_before for d in found[:1]), found


def test_streams_and_versions_have_their_own_detectors_and_warmup() -> None:
    watch = DriftWatch("page-hinkley", warmup=100)
    assert watch.observe_many(1, "served", [5.0] * 100) == []  # all in the warm-up
    assert watch.observe_many(2, "served", [0.1] * 50) == []
    assert DriftWatch("off").observe_many(1, "learning", [0.0] * 10 + [9.0] * 10_000) == []
    with pytest.raises(ValueError, match="page-hinkley"):
        DriftWatch("cusum")


def test_the_guardrail_refuses_an_interval_whose_loss_jumps() -> None:
    guardrail = Guardrail(ratio=3.0, min_examples=10)
    for loss in [0.4] * 10:
        guardrail.observe(loss)
    assert guardrail.verdict() is None and guardrail.judged  # the first sets the baseline
    for loss in [0.5] * 10:
        guardrail.observe(loss)
    assert guardrail.verdict() is None
    for loss in [0.3] * 5:
        guardrail.observe(loss)
    assert guardrail.verdict() is None and not guardrail.judged  # too few: carried over
    for loss in [2.5] * 10:
        guardrail.observe(loss)
    reason = guardrail.verdict()
    assert reason is not None and "15 examples" in reason and "3x" in reason


def test_an_unset_ratio_turns_the_guardrail_off() -> None:
    guardrail = Guardrail(ratio=None, min_examples=1)
    for loss in [0.1, 50.0]:
        guardrail.observe(loss)
        assert guardrail.verdict() is None
