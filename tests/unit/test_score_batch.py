"""The scorer's pure core: a batch in, predictions and dead letters out, no broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from river import datasets, linear_model, preprocessing

from riverrun.schemas import DeadLetter, PredictionMade, decode
from riverrun.workers.scorer.batch import BatchOptions, score_batch
from riverrun.workers.scorer.model import FileModelSource, ServedModel, build_scorer
from riverrun.workers.scorer.model.source import expected_features_of

OPTIONS = BatchOptions("predictions", "requests.dlq", "w1", 4096, reject_missing_features=True)


@dataclass
class FakeRecord:
    raw: bytes | None
    offset_: int
    key_: bytes | None = b"k"

    def value(self) -> bytes | None:
        return self.raw

    def key(self) -> bytes | None:
        return self.key_

    def topic(self) -> str:
        return "requests"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def source() -> FileModelSource:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    rows = list(datasets.Phishing())
    for x, y in rows[:300]:
        model.learn_one(x, y)
    served = ServedModel("phishing", 3, 7, build_scorer(model), model, expected_features_of(model))
    return FileModelSource(served)


def request(i: int, **changes: Any) -> bytes:
    x, _ = list(datasets.Phishing())[i]
    return orjson.dumps({"request_id": f"r{i}", "model": "phishing", "features": x, **changes})


def test_valid_requests_are_scored_and_bad_ones_dead_lettered_in_place() -> None:
    x0, _ = list(datasets.Phishing())[0]
    records = [
        FakeRecord(request(1), 10),
        FakeRecord(b"not json", 11),
        FakeRecord(request(2, model="unknown"), 12),
        FakeRecord(request(3, features={"empty_server_form_handler": 1.0}), 13),
        FakeRecord(request(4), 14, key_=None),
    ]
    result = score_batch(records, source(), OPTIONS)
    topics = [out.topic for out in result.outputs]
    assert topics == ["predictions", "requests.dlq", "requests.dlq", "requests.dlq", "predictions"]
    first = decode(PredictionMade, result.outputs[0].value)
    assert (first.request_id, first.version, first.snapshot, first.route) == ("r1", 3, 7, "champion")
    assert first.proba is not None and set(first.proba) == {"False", "True"}
    assert first.features == list(datasets.Phishing())[1][0]
    assert result.outputs[4].key == b"r4"  # no record key: the request id keys the prediction
    letters = [DeadLetter.from_headers(out.headers) for out in result.outputs[1:4]]
    assert [letter.error_class for letter in letters] == ["NotJson", "UnknownModel", "MissingFeatures"]
    assert [letter.source_offset for letter in letters] == [11, 12, 13]
    assert all(letter.source_partition == 2 and letter.worker == "w1" for letter in letters)
    assert "unknown" in letters[1].reason and "age_of_domain" in letters[2].reason
    assert result.outputs[1].value == b"not json"  # the original bytes travel untouched
    assert result.scored == {("phishing", 3, "champion"): 2}
    assert result.dead_letters == {"NotJson": 1, "UnknownModel": 1, "MissingFeatures": 1}
    assert x0  # the dataset is real


def test_missing_features_can_be_allowed() -> None:
    options = BatchOptions("p", "d", "w", 4096, reject_missing_features=False)
    records = [FakeRecord(request(3, features={"empty_server_form_handler": 1.0}), 1)]
    result = score_batch(records, source(), options)
    assert [out.topic for out in result.outputs] == ["p"]
