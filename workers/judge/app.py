"""The judge as a faust-streaming app: tables of evidence, a timer that decides.

    outcomes ──────────────► evidence   (table: model#experiment#version -> moments)
                        └──► recent     (tumbling windows: model#version -> outcomes)
    predictions.shadow ────► held until their request's outcome brings the label
    requests.dlq ──────────► evidence   (errors of the version a dead letter names)
    models ── follower ────► the policies, and the paired losses of a race's candidates
                                               timer ──► decide ──► models (PolicyChanged)

Both tables are changelog-backed, so a restarted judge recovers its evidence and its windows
before it decides again. Outcomes are read in batches (`stream.take`), never one agent call per
event (PITFALLS: per-event agents are slow). The tables use the producer's partitioner
(`use_partitioner`), because a batch holds outcomes of many partitions and the judge is a
single instance; its decisions are idempotent (one per policy sequence, applied once by every
registry view), so a redelivered batch after a crash can at worst count a few outcomes twice,
never publish a decision twice. All faust code stays in this module.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import ssl
import time
from datetime import timedelta
from typing import Any

import faust

from riverrun.schemas import (
    DecodeError,
    DriftDetected,
    KafkaSettings,
    OutcomeRecorded,
    PolicyChanged,
    PredictionMade,
    SnapshotPublished,
    decode,
    utc_now,
)
from riverrun.workers.judge.core import Judge
from riverrun.workers.judge.evidence import parse_key
from riverrun.workers.judge.metrics import JudgeMetrics
from riverrun.workers.judge.settings import JudgeSettings
from riverrun.workers.judge.state_server import StateServer
from riverrun.workers.registry import Registry, RegistryFollower, RegistryRecord
from riverrun.workers.registry.records import lineage_key

logger = logging.getLogger(__name__)


def broker_urls(kafka: KafkaSettings) -> list[str]:
    """The broker list, as faust wants it, from the bootstrap servers."""
    return [f"kafka://{host}" for host in kafka.bootstrap_servers.split(",")]


def broker_credentials(kafka: KafkaSettings) -> Any:
    """The credentials faust needs for the security protocol (None for plaintext)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_ca_location)
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                kafka.ssl_certificate_location, kafka.ssl_key_location,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )  # fmt: skip
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


class JudgeApp:
    """The faust app around a `Judge`, its policy follower and its HTTP state."""

    def __init__(
        self,
        settings: JudgeSettings,
        *,
        partitions: int,
        metrics: JudgeMetrics | None = None,
        state_server: StateServer | None = None,
    ) -> None:
        options = settings.judge
        self.settings = settings
        self.metrics = metrics if metrics is not None else JudgeMetrics()
        self.state_server = state_server
        self.registry = Registry(settings.kafka, settings.topics, settings.registry)
        # Registry records the judge reads, handed from the follower's thread to the app's loop.
        self._records: queue.SimpleQueue[PolicyChanged | SnapshotPublished | DriftDetected] = (
            queue.SimpleQueue()
        )
        self._follower: RegistryFollower | None = None
        self.ready = False
        self.app = faust.App(
            options.app_id,
            broker=broker_urls(settings.kafka),
            broker_credentials=broker_credentials(settings.kafka),
            store="memory://",
            datadir=options.data_dir,
            web_enabled=False,
            topic_partitions=partitions,
            topic_replication_factor=options.replication_factor,
            consumer_auto_offset_reset="earliest",
            table_standby_replicas=0,
            stream_wait_empty=False,
            producer_acks=-1,
        )  # fmt: skip
        # Keys and values are JSON (faust's default for tables): strings and plain dicts.
        self.evidence = self.app.Table("evidence", partitions=partitions, use_partitioner=True)
        self.recent = (
            self.app.Table("recent", default=int, partitions=partitions, use_partitioner=True)
            .tumbling(options.window_s, expires=timedelta(seconds=options.window_expires_s))
            .relative_to_now()
        )
        self.judge = Judge(self.evidence, effect=options.effect, seed=options.seed,
                           bandit_interval_s=options.bandit_interval_s,
                           lineage_key=lineage_key(settings.topics.examples))
        self._wire()

    # -- faust wiring ------------------------------------------------------------------------

    def _wire(self) -> None:
        app, topics, options = self.app, self.settings.topics, self.settings.judge
        outcomes, shadows, dead_letters = (
            app.topic(name, key_serializer="raw", value_serializer="raw")
            for name in (topics.outcomes, topics.shadow_predictions, topics.dead_letters)
        )
        size, within = options.batch_size, options.batch_within_s

        @app.agent(outcomes, name="judge-outcomes")
        async def read_outcomes(stream: Any) -> None:
            async for batch in stream.take(size, within=within):
                self.observe_outcomes(batch)

        @app.agent(shadows, name="judge-shadows")
        async def read_shadows(stream: Any) -> None:
            async for batch in stream.take(size, within=within):
                self.observe_shadows(batch)

        @app.agent(dead_letters, name="judge-dead-letters")
        async def read_dead_letters(stream: Any) -> None:
            async for events in stream.take_events(size, within=within):
                self.observe_dead_letters([event.headers or {} for event in events])

        @app.timer(options.decide_interval_s, name="judge-decide")  # type: ignore[untyped-decorator]  # faust's decorator is untyped
        async def decide() -> None:
            await self.tick()

    # -- inputs ------------------------------------------------------------------------------

    def follow_policies(self) -> None:
        """Read the registry to its end, then follow it: policies are known before outcomes.

        The snapshots of the versions a policy names come too: a race's paired losses are
        known before the first decision.
        """
        view = self.registry.refresh()
        for model in view.models():
            policy = view.policy(model)
            if policy is not None:
                self.judge.observe_policy(policy)
                for version in {a.version for a in policy.assignments}:
                    for snapshot in view.snapshots(model, version):
                        self.judge.observe_snapshot(snapshot)
                for drift in view.drifts(model):
                    self.judge.observe_drift(drift)
        self._follower = self.registry.follower(self._on_record).start()

    def _on_record(self, record: RegistryRecord) -> None:
        if isinstance(record, PolicyChanged | SnapshotPublished | DriftDetected):
            self._records.put(record)

    def observe_outcomes(self, batch: list[bytes]) -> None:
        """Decode a batch of outcomes and count them in both tables."""
        self._drain_policies()
        outcomes = []
        for raw in batch:
            try:
                outcomes.append(decode(OutcomeRecorded, raw))
            except DecodeError as exc:
                logger.warning("skipping an unreadable outcome: %s", exc.reason)
        self.judge.observe_outcomes(outcomes)
        counts: dict[str, int] = {}
        for outcome in outcomes:
            key = f"{outcome.model}#{outcome.version}"
            counts[key] = counts.get(key, 0) + 1
            self.metrics.outcomes.labels(outcome.model).inc()
        for key, count in counts.items():
            self.recent[key] += count

    def observe_shadows(self, batch: list[bytes]) -> None:
        """Hold shadow predictions until their outcomes arrive."""
        predictions = []
        for raw in batch:
            try:
                predictions.append(decode(PredictionMade, raw))
            except DecodeError as exc:
                logger.warning("skipping an unreadable shadow prediction: %s", exc.reason)
        self.judge.observe_shadow_predictions(predictions)
        self.metrics.shadow_predictions.inc(len(predictions))

    def observe_dead_letters(self, headers: list[Any]) -> None:
        """Count the dead letters that name a failing version (model errors, missing features)."""
        self._drain_policies()
        failures = []
        for raw in headers:
            values = dict(raw) if not isinstance(raw, dict) else raw
            model = values.get("riverrun.model")
            version = values.get("riverrun.model.version")
            if model is None or version is None:
                continue
            name = model.decode() if isinstance(model, bytes) else str(model)
            number = version.decode() if isinstance(version, bytes) else str(version)
            if number.isdigit():
                failures.append((name, int(number)))
                self.metrics.errors.labels(name).inc()
        self.judge.observe_errors(failures)

    def _drain_policies(self) -> None:
        """Hand the judge the policies and snapshots the follower read, in topic order."""
        while True:
            try:
                record = self._records.get_nowait()
            except queue.Empty:
                return
            if isinstance(record, SnapshotPublished):
                self.judge.observe_snapshot(record)
            elif isinstance(record, DriftDetected):
                self.judge.observe_drift(record)
            elif self.judge.observe_policy(record):
                logger.info("judging %s by policy #%d (%s, experiment %d)", record.model,
                            record.sequence, record.strategy, record.experiment_id)

    # -- the timer ---------------------------------------------------------------------------

    async def tick(self) -> None:
        """Decide, publish the decisions, refresh the HTTP state."""
        self._drain_policies()
        recovery: Any = getattr(self.app.tables, "recovery")  # noqa: B009  # not in faust's stubs
        if not recovery.completed.is_set() or self.app.rebalancing:
            return
        now = utc_now()
        for decision in self.judge.decide(now):
            await asyncio.get_running_loop().run_in_executor(
                None, self.registry.publish_policy, decision
            )
            self.metrics.decisions.labels(decision.model, decision.action).inc()
        if not self.ready:
            self.ready = True
            self.metrics.ready.set(1)
            logger.info("judge ready: tables recovered, %d evidence keys",
                        len(list(self.evidence.keys())))
        if self.state_server is not None:
            try:
                state = self.judge.state(now, self.recent_counts())
            except Exception:  # the status page must never stop the judge
                logger.exception("could not render the judge's state")
                return
            state["ready"] = True
            self.state_server.publish(state)

    def recent_counts(self) -> dict[tuple[str, int], int]:
        """Outcomes per (model, version) in the current and the previous window."""
        width = self.settings.judge.window_s
        window: Any = self.recent.table.window
        now = time.time()
        ranges = (window.current(now), window.current(now - width))
        out: dict[tuple[str, int], int] = {}
        for key in list(self.evidence.keys()):
            model, _, version = parse_key(str(key))
            if (model, version) not in out:
                windows = self.recent[f"{model}#{version}"]
                out[(model, version)] = sum(int(windows[r] or 0) for r in ranges)
        return out

    def stop(self) -> None:
        """Stop the policy follower and the registry's producer."""
        if self._follower is not None:
            self._follower.stop()
        self.registry.close()
