"""The scorer's core routes each model's requests by its deployment: sticky, shadowed, grouped."""

from __future__ import annotations

import pickle
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from river import datasets, linear_model, preprocessing

from riverrun.schemas import DeadLetter, PolicyAssignment, PolicyChanged, PredictionMade, decode
from riverrun.workers.routing import plan_for
from riverrun.workers.scorer.batch import BatchOptions, score_batch
from riverrun.workers.scorer.model import ServedModel, build_scorer
from riverrun.workers.scorer.model.deployment import Deployment
from riverrun.workers.scorer.model.protocol import RowFailure
from riverrun.workers.scorer.model.source import expected_features_of

OPTIONS = BatchOptions("predictions", "requests.dlq", "w1", 4096, reject_missing_features=True,
                       shadow_topic="predictions.shadow")
ROWS = [x for x, _ in datasets.Phishing()]
LABELS = [y for _, y in datasets.Phishing()]


@dataclass
class FakeRecord:
    raw: bytes
    offset_: int
    key_: bytes | None

    def value(self) -> bytes:
        return self.raw

    def key(self) -> bytes | None:
        return self.key_

    def topic(self) -> str:
        return "requests"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def served(version: int, rows: slice) -> ServedModel:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in zip(ROWS[rows], LABELS[rows], strict=True):
        model.learn_one(x, y)
    return ServedModel("phishing", version, 0, build_scorer(model), model,
                       expected_features_of(model))


MODELS = {1: served(1, slice(0, 100)), 2: served(2, slice(100, 600)),
          3: served(3, slice(600, 900))}


class Source:
    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment

    def deployment(self, name: str) -> Deployment | None:
        return self._deployment if name == "phishing" else None

    def get(self, name: str) -> ServedModel | None:
        return self._deployment.arms[0]

    def refresh(self) -> None:
        pass

    def unavailable(self, name: str) -> RowFailure:
        return RowFailure("UnknownModel", "not served")

    def served(self) -> list[ServedModel]:
        return self._deployment.served()


def deployment(strategy: str, *assignments: tuple[int, str, float]) -> Deployment:
    policy = PolicyChanged(model="phishing", sequence=1, strategy=strategy,  # type: ignore[arg-type]
                           assignments=[PolicyAssignment(version=v, role=r, weight=w)  # type: ignore[arg-type]
                                        for v, r, w in assignments])
    plan = plan_for(policy, "phishing", 3)
    assert plan is not None
    return Deployment.of(plan, {(v, None): MODELS[v] for v, _, _ in assignments})


def requests(count: int, keys: int, start: int = 0, **changes: Any) -> list[FakeRecord]:
    return [
        FakeRecord(orjson.dumps({"request_id": f"r{i}", "model": "phishing",
                                 "features": ROWS[i % len(ROWS)], **changes}),
                   i, f"user-{i % keys}".encode())
        for i in range(start, start + count)
    ]


def test_a_canary_answers_its_share_and_every_key_stays_on_one_version() -> None:
    source = Source(deployment("canary", (1, "champion", 0.7), (2, "canary", 0.3)))
    by_key: dict[bytes, set[tuple[int, str]]] = defaultdict(set)
    routes: Counter[str] = Counter()
    for batch in range(5):
        result = score_batch(requests(1000, 400, start=batch * 1000), source, OPTIONS)
        assert all(out.topic == "predictions" for out in result.outputs)
        for out in result.outputs:
            made = decode(PredictionMade, out.value)
            by_key[out.key].add((made.version, made.route))  # type: ignore[index]
            routes[made.route] += 1
            assert made.prediction == MODELS[made.version].estimator.predict_one(made.features)
    assert all(len(seen) == 1 for seen in by_key.values())
    assert {next(iter(s)) for s in by_key.values()} == {(1, "champion"), (2, "canary")}
    assert 0.2 < routes["canary"] / sum(routes.values()) < 0.4


def test_predictions_keep_the_batch_order_across_versions() -> None:
    source = Source(deployment("ab", (1, "arm", 0.5), (2, "arm", 0.3), (3, "arm", 0.2)))
    result = score_batch(requests(300, 300), source, OPTIONS)
    ids = [decode(PredictionMade, out.value).request_id for out in result.outputs]
    assert ids == [f"r{i}" for i in range(300)]
    assert {route for (_, _, route) in result.scored} == {"arm-0", "arm-1", "arm-2"}
    assert sum(result.scored.values()) == 300


def test_shadow_versions_score_on_the_side_and_never_answer() -> None:
    source = Source(deployment("shadow", (1, "champion", 1.0), (2, "shadow", 0.0),
                               (3, "shadow", 0.0)))
    bad = requests(1, 1, start=500, features={"empty_server_form_handler": 1.0})
    result = score_batch(requests(50, 50) + bad, source, OPTIONS)
    answers = [o for o in result.outputs if o.topic == "predictions"]
    shadows = [o for o in result.outputs if o.topic == "predictions.shadow"]
    letters = [o for o in result.outputs if o.topic == "requests.dlq"]
    assert len(answers) == 50 and len(shadows) == 100 and len(letters) == 1
    assert {decode(PredictionMade, o.value).version for o in answers} == {1}
    made = [decode(PredictionMade, o.value) for o in shadows]
    assert {(m.version, m.route) for m in made} == {(2, "shadow"), (3, "shadow")}
    for m in made:
        assert m.prediction == MODELS[m.version].estimator.predict_one(m.features)
    # A shadow keeps the request's key, so it lands in the request's partition too.
    assert {o.key for o in shadows} == {o.key for o in answers}
    assert result.scored[("phishing", 2, "shadow")] == 50
    letter = DeadLetter.from_headers(letters[0].headers)
    assert (letter.error_class, letter.model, letter.version, letter.route) == (
        "MissingFeatures", "phishing", 1, "champion")


def test_scoring_through_routes_leaves_every_model_byte_identical() -> None:
    before = {v: pickle.dumps(m.estimator) for v, m in MODELS.items()}
    source = Source(deployment("shadow", (1, "champion", 1.0), (2, "shadow", 0.0)))
    score_batch(requests(200, 50), source, OPTIONS)
    source = Source(deployment("ab", (1, "arm", 0.5), (3, "arm", 0.5)))
    score_batch(requests(200, 50), source, OPTIONS)
    assert {v: pickle.dumps(m.estimator) for v, m in MODELS.items()} == before


def test_blue_green_answers_with_the_live_colour_only() -> None:
    warm = Source(deployment("blue-green", (1, "blue", 1.0), (2, "green", 0.0)))
    live = Source(deployment("blue-green", (1, "blue", 0.0), (2, "green", 1.0)))
    for source, expected in ((warm, (1, "blue")), (live, (2, "green"))):
        result = score_batch(requests(100, 100), source, OPTIONS)
        assert {(decode(PredictionMade, o.value).version, decode(PredictionMade, o.value).route)
                for o in result.outputs} == {expected}
