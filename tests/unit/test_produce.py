"""Handing records to the producer: in order, placed where asked, a full queue waited out."""

from __future__ import annotations

from typing import Any

from riverrun.workers.runtime.kafka import Outgoing, produce_all


class _SmallQueue:
    """A producer whose queue takes two records, then is full until reports are served."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.room = 2
        self.polls = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int,
                headers: Any = None, on_delivery: Any = None) -> None:  # fmt: skip
        if self.room == 0:
            raise BufferError("Local: Queue full")
        self.room -= 1
        self.sent.append((topic, key, value, partition, headers, on_delivery))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        self.room = 2
        return 0


def test_every_record_goes_out_in_order_through_a_full_queue() -> None:
    producer = _SmallQueue()
    records = [Outgoing("out", f"k{i}".encode(), f"v{i}".encode(), None, i % 3 or None)
               for i in range(7)]  # fmt: skip
    produce_all(producer, records, on_delivery=print)  # type: ignore[arg-type]
    assert [(t, k, v) for t, k, v, *_ in producer.sent] == [(r.topic, r.key, r.value)
                                                            for r in records]  # fmt: skip
    # None is "unassigned" (-1): the partitioner places the record; a number is kept.
    assert [p for *_, p, _h, _cb in producer.sent] == [-1, 1, 2, -1, 1, 2, -1]
    assert all(cb is print for *_, cb in producer.sent)
    assert producer.polls >= 3  # the full queue was drained, and reports served at the end
