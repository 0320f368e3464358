"""Broker contact from librdkafka's statistics: silence for a few intervals is an outage."""

from __future__ import annotations

from riverrun.workers.runtime.contact import BrokerContact, responses_received


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(*rx: int) -> dict[str, object]:
    brokers = {f"127.0.0.1:{9092 + i}/{i}": {"rx": n, "state": "UP"} for i, n in enumerate(rx)}
    return {"name": "scorer", "brokers": brokers}


def test_responses_are_summed_over_every_broker_connection() -> None:
    assert responses_received(report(3, 4, 5)) == 12
    assert responses_received({"brokers": {"b": {"state": "INIT"}, "c": "odd"}}) == 0
    assert responses_received({}) == 0


def test_contact_is_lost_after_silence_and_back_at_the_next_response() -> None:
    clock = Clock()
    contact = BrokerContact(2.5, clock)
    contact.observe(report(10))
    for rx in (11, 12, 13):  # a live consumer: responses in every report
        clock.now += 1.0
        contact.observe(report(rx))
        assert contact.in_contact()
    for _ in range(2):  # black-holed: the count stands still
        clock.now += 1.0
        contact.observe(report(13))
        assert contact.in_contact()
    clock.now += 1.0
    contact.observe(report(13))
    assert not contact.in_contact() and contact.silent_for_s == 3.0
    clock.now += 1.0
    contact.observe(report(2))  # reconnected: the broker's count starts again
    assert contact.in_contact()


def test_silence_is_judged_at_the_time_of_asking_not_only_at_reports() -> None:
    clock = Clock()
    contact = BrokerContact(2.0, clock)
    contact.observe(report(1))
    clock.now += 5.0  # no report at all (the poll thread is stuck)
    assert not contact.in_contact()


def test_the_silence_spans_a_few_statistics_intervals() -> None:
    assert BrokerContact.for_interval(1000)._silence_s == 2.5
    assert BrokerContact.for_interval(200)._silence_s == 2.0
    assert BrokerContact.for_interval(5000)._silence_s == 12.5


def test_a_group_waiting_on_its_join_is_not_an_outage() -> None:
    clock = Clock()
    contact = BrokerContact(2.0, clock)
    joining = {**report(5), "cgrp": {"state": "up", "join_state": "wait-join"}}
    for _ in range(5):  # the coordinator holds the JoinGroup answer until everyone rejoined
        clock.now += 1.0
        contact.observe(joining)
        assert contact.in_contact()
    steady = {**report(5), "cgrp": {"state": "up", "join_state": "steady"}}
    for _ in range(2):
        clock.now += 1.0
        contact.observe(steady)
    assert not contact.in_contact()


def test_a_silence_the_client_could_not_hear_is_not_an_outage() -> None:
    clock = Clock()
    contact = BrokerContact(2.5, clock)
    contact.observe(report(10))
    last_poll = clock.now
    clock.now += 10.0  # busy in a batch: no poll, so no report could arrive
    assert not contact.in_contact()
    assert contact.in_contact(as_of=last_poll)
    assert not contact.in_contact(as_of=last_poll + 3.0)  # polled since, and still nothing
