"""A model that raises or answers NaN or infinity for some inputs: exactly those requests are
dead-lettered with the reason, and every other request of their batches is scored."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import linear_model

from riverrun.schemas import KafkaSettings

from .conftest import Figures
from .harness.loadgen import LoadGenerator
from .harness.processes import Workers
from .scenario import ScorerGroup, reckon

pytestmark = pytest.mark.reliability

# Which inputs break the model, and how it must be reported.
FAULTS = {
    "overflows": ({"a": 10.0, "b": 0.0}, "ModelReturnedNonFinite"),  # 1e308 * 10 = inf
    "nan": ({"a": 10.0, "b": 10.0}, "ModelReturnedNonFinite"),  # inf - inf
    "raises": ({"a": "text", "b": 1.0}, "ModelRaised"),  # a category where a number goes
}


@pytest.fixture
def faulty_model(tmp_path: Path) -> Path:
    """A linear regression whose weights overflow for large inputs."""
    model = linear_model.LinearRegression()
    model.learn_one({"a": 1.0, "b": 1.0}, 1.0)
    model._weights["a"], model._weights["b"] = 1e308, -1e308  # noqa: SLF001  # the fault itself
    path = tmp_path / "faulty.pkl"
    path.write_bytes(pickle.dumps(model))
    return path


def test_a_failing_model_dead_letters_only_the_inputs_it_fails_on(
    kafka: KafkaSettings, make_topics: Any, workers: Workers, faulty_model: Path,
    figures: Figures,
) -> None:
    topics = make_topics()
    kinds = list(FAULTS)
    total = 3_000

    def payload(i: int) -> tuple[bytes, bytes]:
        rid = f"m-{i}"
        kind = kinds[i % 10] if i % 10 < len(kinds) else None  # three in ten fail
        features = FAULTS[kind][0] if kind else {"a": i % 7 * 1e-310, "b": 1e-310}
        return rid.encode(), orjson.dumps({"request_id": rid, "model": "faulty",
                                           "features": features})

    group = ScorerGroup(workers, kafka, topics, f"faulty-{uuid.uuid4().hex[:8]}", faulty_model,
                        extra=["--model-name", "faulty"])
    group.start("f")
    group.wait_ready()
    load = LoadGenerator(kafka, topics.requests, payload, total=total, rate=0).start()
    load.join(120)
    group.wait_caught_up()
    assert group.stop() == {"scorer-f": 0}

    result = reckon(kafka, topics, load.acked)
    expected = {f"m-{i}": FAULTS[kinds[i % 10]][1] for i in range(total) if i % 10 < len(kinds)}
    where = {(r.partition, r.offset): r.request_id for r in load.acked}
    got = {where[(x.source_partition, x.source_offset)]: x.error_class for x in result.letters}
    scored = {a.request_id for a in result.answers}
    figures.record("model_faults", requests=total, failing_inputs=len(expected),
                   dead_lettered=len(got), scored=len(scored), **{
                       f"letters_{k}": sum(1 for v in got.values() if v == k)
                       for k in sorted(set(got.values()))})
    assert got == expected
    assert scored == {f"m-{i}" for i in range(total)} - set(expected)
    assert all(x.reason for x in result.letters)
    assert result.delivery.missing == 0 and result.delivery.duplicated == 0, result.delivery
