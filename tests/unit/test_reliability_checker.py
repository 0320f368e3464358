"""The reliability oracle: missing, duplicated and inconsistent outputs, offsets, open
transactions, vacuous faults and the figures derived from samples."""

from __future__ import annotations

import pytest

from tests.reliability.harness.checker import (
    Answer,
    Fault,
    Letter,
    OffsetSnapshot,
    Request,
    check_delivery,
    growth,
    offsets_ahead,
    open_transactions,
    rate_within,
    recovery_seconds,
    vacuous,
)

REQ = "requests"
OUT = "predictions"
DLQ = "requests.dlq"


def requests(n: int, partitions: int = 2) -> list[Request]:
    return [Request(f"r{i}", i % partitions, i // partitions) for i in range(n)]


def answer(request: Request, offset: int, prediction: object = True, snapshot: int = 0,
           partition: int | None = None) -> Answer:
    return Answer(request.request_id, OUT, request.partition if partition is None else partition,
                  offset, prediction, 1, snapshot)


def letter(request: Request, offset: int = 0, error_class: str = "NotJson") -> Letter:
    return Letter(REQ, request.partition, request.offset, error_class, "why", DLQ,
                  request.partition, offset)


def test_every_request_answered_once_is_clean() -> None:
    owed = requests(6)
    report = check_delivery(owed, [answer(r, i) for i, r in enumerate(owed[:5])],
                            [letter(owed[5])], requests_topic=REQ)
    assert report.figures() == {"requests": 6, "predicted": 5, "dead_lettered": 1, "missing": 0,
                                "duplicated": 0, "inconsistent": 0, "unexpected": 0}


def test_missing_and_duplicated_are_counted_per_request_id() -> None:
    owed = requests(4)
    answers = [answer(owed[0], 0), answer(owed[0], 1), answer(owed[0], 2), answer(owed[1], 3)]
    report = check_delivery(owed, answers, [letter(owed[2]), letter(owed[2], 1)],
                            requests_topic=REQ)
    assert report.missing == 1 and report.examples["missing"] == ["r3"]
    assert report.duplicated == 3  # two extra predictions of r0, one extra letter of r2
    assert report.inconsistent == 0


def test_disagreeing_copies_wrong_partitions_and_double_answers_are_inconsistent() -> None:
    owed = requests(4)
    answers = [
        answer(owed[0], 0, True), answer(owed[0], 1, False),  # two answers for one request
        answer(owed[1], 2, partition=0),  # r1 lives on partition 1
        answer(owed[2], 3),
        answer(owed[3], 4, snapshot=0), answer(owed[3], 5, snapshot=0),  # an honest duplicate
    ]
    report = check_delivery(owed, answers, [letter(owed[2])], requests_topic=REQ)
    assert report.examples["inconsistent"] == ["r0", "r1", "r2"]
    assert report.inconsistent == 3
    assert report.duplicated == 2


def test_letters_of_another_topic_and_unknown_predictions() -> None:
    owed = requests(2)
    stray = Letter("feedback", owed[0].partition, owed[0].offset, "NotJson", "x", DLQ, 0, 0)
    report = check_delivery(owed, [answer(owed[1], 0), Answer("ghost", OUT, 0, 1)], [stray],
                            requests_topic=REQ)
    assert report.missing == 1 and report.unexpected == 1


def test_committed_offsets_behind_outputs_are_fine() -> None:
    owed = requests(6)  # partition 0: offsets 0,1,2; partition 1: offsets 0,1,2
    answers = [answer(r, i) for i, r in enumerate(owed)]
    snapshot = OffsetSnapshot("kill 1", {0: 2, 1: 3}, {(OUT, 0): 6, (OUT, 1): 6})
    assert offsets_ahead([snapshot], owed, answers) == []


def test_committed_offsets_ahead_of_outputs_are_violations() -> None:
    owed = requests(6)
    answers = [answer(r, i) for i, r in enumerate(owed)]
    # At the snapshot only the first two outputs of partition 0 existed (ends at offset 2),
    # yet partition 0 was committed up to 3: r4 (partition 0, offset 2) was not delivered.
    snapshot = OffsetSnapshot("kill 2", {0: 3, 1: 1}, {(OUT, 0): 3, (OUT, 1): 6})
    violations = offsets_ahead([snapshot], owed, answers)
    assert [(v.label, v.partition, v.committed, v.unanswered, v.first_unanswered_offset)
            for v in violations] == [("kill 2", 0, 3, 1, 2)]


def test_dead_letters_count_as_delivered_outputs_for_offsets() -> None:
    owed = requests(2, partitions=1)
    snapshot = OffsetSnapshot("kill", {0: 2}, {(OUT, 0): 1, (DLQ, 0): 1})
    assert offsets_ahead([snapshot], owed, [answer(owed[0], 0)], [letter(owed[1])]) == []
    late = OffsetSnapshot("kill", {0: 2}, {(OUT, 0): 1, (DLQ, 0): 0})
    assert len(offsets_ahead([late], owed, [answer(owed[0], 0)], [letter(owed[1])])) == 1


def test_open_transactions_are_partitions_whose_stable_offset_lags() -> None:
    high = {(OUT, 0): 10, (OUT, 1): 7, (OUT, 2): 0}
    assert open_transactions({(OUT, 0): 10, (OUT, 1): 7, (OUT, 2): 0}, high) == {}
    assert open_transactions({(OUT, 0): 4, (OUT, 1): 7}, high) == {(OUT, 0): 6}


def test_faults_must_land_mid_stream_and_all_happen() -> None:
    faults = [Fault("kill 1", 10, 100), Fault("kill 2", 0, 100), Fault("kill 3", 100, 100)]
    assert vacuous(faults[:1], 1) == []
    problems = vacuous(faults, 4)
    assert problems[0] == "3 faults happened, 4 were planned"
    assert len(problems) == 3
    assert not Fault("x", 5, 5).mid_stream and Fault("x", 4, 5).mid_stream


def test_rate_within_a_window() -> None:
    stamps = [0.5, 1.0, 1.5, 2.0, 2.5, 9.0]
    assert rate_within(stamps, 1.0, 3.0) == 2.0
    with pytest.raises(ValueError, match="empty window"):
        rate_within(stamps, 3.0, 3.0)


def test_recovery_is_the_moment_a_value_settles_for_good() -> None:
    samples = [(0.0, 5.0), (1.0, 900.0), (2.0, 10.0), (3.0, 400.0), (4.0, 20.0), (5.0, 3.0)]
    assert recovery_seconds(samples, after=1.0, normal=50.0) == 3.0
    assert recovery_seconds(samples, after=0.0, normal=1.0) is None
    assert recovery_seconds([(0.0, 1.0)], after=0.0, normal=1.0) == 0.0


def test_growth() -> None:
    assert growth(100.0, 109.0) == pytest.approx(0.09)
    assert growth(100.0, 90.0) == pytest.approx(-0.1)
    with pytest.raises(ValueError):
        growth(0.0, 1.0)
