"""What every learner process is built from, whichever stages it runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from riverrun.workers.learner.drift import DriftReporter, DriftWatch
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.registry import Registry
from riverrun.workers.runtime.contact import BrokerContact, StatisticsListener
from riverrun.workers.runtime.crashpoint import LEARNER_POINTS, CrashPoints
from riverrun.workers.runtime.errors import ConfigurationError

STATISTICS_INTERVAL_MS = 1000


@dataclass(frozen=True)
class LearnerParts:
    """The model learned, its metrics, the broker contact its consumer reports, its drift
    reporter and crash points."""

    model: str
    metrics: LearnerMetrics
    statistics: StatisticsListener
    drift: DriftReporter
    crash: CrashPoints


def learner_parts(
    settings: LearnerSettings,
    registry: Registry,
    metrics: LearnerMetrics | None,
    log: logging.Logger,
) -> LearnerParts:
    """Build the parts, refusing a learner with no model to learn.

    Raises:
        ConfigurationError: `RIVERRUN_LEARNER__MODEL` is not set.

    """
    options = settings.learner
    if not options.model:
        raise ConfigurationError(
            "RIVERRUN_LEARNER__MODEL is not set: pass --model NAME of the model to learn"
        )
    metrics = metrics if metrics is not None else LearnerMetrics()
    statistics = StatisticsListener(
        metrics.consumer_lag, BrokerContact.for_interval(STATISTICS_INTERVAL_MS),
        settings.kafka.bootstrap_servers, log,
    )  # fmt: skip
    drift = DriftReporter(options.model, DriftWatch(options.drift_detector, options.drift_warmup),
                          registry, metrics)  # fmt: skip
    return LearnerParts(options.model, metrics, statistics, drift,
                        CrashPoints(options.crash_at, LEARNER_POINTS))  # fmt: skip
