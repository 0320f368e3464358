"""The oracle of the reliability suite: pure functions over what was acknowledged and read back.

Nothing here touches a socket. The load generator records every request the broker
acknowledged; after a run the outputs are read back (`outputs.py`), and these functions count
what is missing, duplicated or inconsistent per request id, check committed offsets against the
outputs that existed when they were taken, find transactions left open, and check that every
injected fault landed mid-stream, so that no scenario passes vacuously.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EXAMPLES = 5  # ids quoted per kind of problem in a failure message


@dataclass(frozen=True)
class Request:
    """A request the broker acknowledged, where it landed."""

    request_id: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Answer:
    """One prediction read back from an output topic."""

    request_id: str
    topic: str
    partition: int
    offset: int
    prediction: Any = None
    version: int = 0
    snapshot: int = 0


@dataclass(frozen=True)
class Letter:
    """One dead letter read back, with the source coordinates from its headers."""

    source_topic: str
    source_partition: int
    source_offset: int
    error_class: str
    reason: str
    topic: str = ""
    partition: int = 0
    offset: int = 0


@dataclass(frozen=True)
class DeliveryReport:
    """Per request id: what the workers owed and what they delivered."""

    requests: int
    predicted: int
    dead_lettered: int
    missing: int
    duplicated: int
    inconsistent: int
    unexpected: int
    examples: dict[str, list[str]] = field(default_factory=dict)

    def figures(self) -> dict[str, int]:
        """The counts, for the figures file."""
        return {
            "requests": self.requests,
            "predicted": self.predicted,
            "dead_lettered": self.dead_lettered,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "inconsistent": self.inconsistent,
            "unexpected": self.unexpected,
        }

    def __str__(self) -> str:
        quoted = "; ".join(f"{kind}: {', '.join(ids)}"
                           for kind, ids in self.examples.items() if ids)
        return f"{self.figures()}" + (f" e.g. {quoted}" if quoted else "")


def check_delivery(
    requests: Iterable[Request],
    answers: Iterable[Answer],
    letters: Iterable[Letter] = (),
    *,
    requests_topic: str = "",
) -> DeliveryReport:
    """Count missing, duplicated, inconsistent and unexpected outputs per request id.

    A request is answered by a prediction carrying its id or by a dead letter naming its
    coordinates on `requests_topic`. Duplicates are copies beyond the first. A request is
    inconsistent when its copies disagree (answer, version or snapshot), when a prediction lands
    on another partition than its request (co-partitioning), or when it was both predicted and
    dead-lettered. Unexpected predictions name no acknowledged request.
    """
    owed = {r.request_id: r for r in requests}
    by_coordinates = {(r.partition, r.offset): r.request_id for r in owed.values()}
    predictions: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        predictions[answer.request_id].append(answer)
    lettered: Counter[str] = Counter()
    for letter in letters:
        if requests_topic and letter.source_topic != requests_topic:
            continue
        rid = by_coordinates.get((letter.source_partition, letter.source_offset))
        if rid is not None:
            lettered[rid] += 1

    missing = [rid for rid in owed if rid not in predictions and rid not in lettered]
    duplicated = sum(len(copies) - 1 for copies in predictions.values())
    duplicated += sum(count - 1 for count in lettered.values())
    inconsistent = []
    for rid, copies in predictions.items():
        request = owed.get(rid)
        answers_given = {(repr(a.prediction), a.version, a.snapshot) for a in copies}
        wrong_partition = request is not None and any(
            a.partition != request.partition for a in copies
        )
        if len(answers_given) > 1 or wrong_partition or rid in lettered:
            inconsistent.append(rid)
    unexpected = [rid for rid in predictions if rid not in owed]
    return DeliveryReport(
        requests=len(owed),
        predicted=sum(1 for rid in predictions if rid in owed),
        dead_lettered=len(lettered),
        missing=len(missing),
        duplicated=duplicated,
        inconsistent=len(inconsistent),
        unexpected=len(unexpected),
        examples={
            "missing": sorted(missing)[:EXAMPLES],
            "duplicated": sorted(r for r, c in predictions.items() if len(c) > 1)[:EXAMPLES],
            "inconsistent": sorted(inconsistent)[:EXAMPLES],
            "unexpected": sorted(unexpected)[:EXAMPLES],
        },
    )


@dataclass(frozen=True)
class OffsetSnapshot:
    """A consumer group's committed offsets and the output topics' ends, taken together.

    `committed` is read first, then `output_ends`: an output that existed when the offsets were
    committed is below its partition's end.
    """

    label: str
    committed: Mapping[int, int]
    output_ends: Mapping[tuple[str, int], int]


@dataclass(frozen=True)
class OffsetViolation:
    """Committed offsets ran ahead of delivered outputs on one partition."""

    label: str
    partition: int
    committed: int
    unanswered: int
    first_unanswered_offset: int


def offsets_ahead(
    snapshots: Iterable[OffsetSnapshot],
    requests: Iterable[Request],
    answers: Iterable[Answer],
    letters: Iterable[Letter] = (),
) -> list[OffsetViolation]:
    """Partitions whose committed offset passed a request with no output at that moment.

    Nothing below a committed offset is ever consumed again, so such a request would be lost
    for good: committed offsets must never run ahead of delivered outputs.
    """
    answers = list(answers)
    letters = list(letters)
    by_partition: dict[int, list[Request]] = defaultdict(list)
    for request in requests:
        by_partition[request.partition].append(request)
    violations = []
    for snapshot in snapshots:
        ends = snapshot.output_ends

        def present(topic: str, partition: int, offset: int,
                    ends: Mapping[Any, int] = ends) -> bool:
            return offset < ends.get((topic, partition), -1)

        answered = {a.request_id for a in answers if present(a.topic, a.partition, a.offset)}
        lettered = {(x.source_partition, x.source_offset) for x in letters
                    if present(x.topic, x.partition, x.offset)}
        for partition, committed in sorted(snapshot.committed.items()):
            behind = sorted(
                r.offset for r in by_partition.get(partition, [])
                if r.offset < committed and r.request_id not in answered
                and (partition, r.offset) not in lettered
            )
            if behind:
                violations.append(OffsetViolation(
                    snapshot.label, partition, committed, len(behind), behind[0]))
    return violations


def open_transactions(
    stable: Mapping[tuple[str, int], int], high: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Partitions whose last stable offset is below the high watermark: a transaction is open.

    Returns the gap per partition; empty when every transaction ended (committed or aborted).
    """
    return {tp: high[tp] - stable.get(tp, 0) for tp in sorted(high)
            if stable.get(tp, 0) < high[tp]}


@dataclass(frozen=True)
class Fault:
    """One injected fault and how far the work had got when it hit."""

    label: str
    done: int
    total: int

    @property
    def mid_stream(self) -> bool:
        """Some of the work was done before the fault and some was left for after it."""
        return 0 < self.done < self.total


def vacuous(faults: Sequence[Fault], expected: int) -> list[str]:
    """What makes a fault run prove nothing: too few faults, or faults outside the stream."""
    problems = []
    if len(faults) < expected:
        problems.append(f"{len(faults)} faults happened, {expected} were planned")
    problems += [f"{f.label} hit at {f.done}/{f.total}: not mid-stream"
                 for f in faults if not f.mid_stream]
    return problems


def rate_within(timestamps: Iterable[float], start: float, end: float) -> float:
    """Events per second whose timestamp falls in [start, end)."""
    if end <= start:
        raise ValueError(f"an empty window: {start} .. {end}")
    return sum(1 for t in timestamps if start <= t < end) / (end - start)


def recovery_seconds(
    samples: Sequence[tuple[float, float]], after: float, normal: float
) -> float | None:
    """Seconds from `after` until a sampled value is back at or under `normal` for good.

    `samples` are (time, value) pairs in time order. None when it never settles.
    """
    settled_at: float | None = None
    for at, value in samples:
        if at < after:
            continue
        if value <= normal:
            if settled_at is None:
                settled_at = at
        else:
            settled_at = None
    return None if settled_at is None else max(0.0, settled_at - after)


def growth(first: float, last: float) -> float:
    """Relative growth from `first` to `last` (0.1 is ten per cent)."""
    if first <= 0:
        raise ValueError(f"growth from {first} is undefined")
    return (last - first) / first
