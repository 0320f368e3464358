"""`riverrun score`: run a scoring worker until SIGTERM or SIGINT.

The flags come from the settings alone; the worker (River, NumPy, Prometheus) is imported by
the handler, so that building the command line stays quick.
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from riverrun.producers.signals import StopSignals
from riverrun.schemas import (
    add_settings_flags,
    collect_section_flags,
    explain,
)
from riverrun.workers.registry import Registry
from riverrun.workers.runtime.errors import ConfigurationError, FatalError, RiverrunError
from riverrun.workers.scorer.settings import ScorerSettings

if TYPE_CHECKING:
    from riverrun.workers.scorer.metrics import ScorerMetrics
    from riverrun.workers.scorer.model import ModelSource

logger = logging.getLogger(__name__)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun score`."""
    add_settings_flags(parser, ScorerSettings)
    parser.add_argument(
        "--max-messages", type=int, default=None, help="Stop after this many records (tests)."
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="Stop after this many quiet seconds."
    )
    parser.set_defaults(handler=run_score)


def model_source_for(settings: ScorerSettings, metrics: ScorerMetrics | None = None) -> ModelSource:
    """A model file when one is given, else the registry on the models topic (not started)."""
    from riverrun.workers.scorer.model import FileModelSource, load_model_file
    from riverrun.workers.scorer.model.registry_source import RegistryModelSource

    options = settings.scorer
    if options.model_file is None:
        registry = Registry(settings.kafka, settings.topics, settings.registry)
        registry.signer  # noqa: B018  # refuse to start without a signing key, naming it
        return RegistryModelSource(
            registry, metrics, cache_size=options.model_cache_size, fast_path=options.fast_path,
            first_load_wait_s=options.first_load_wait_ms / 1000.0,
            key_cache_bytes=options.key_cache_bytes,
        )
    path = Path(options.model_file)
    model = load_model_file(
        path,
        name=options.model_name or path.stem,
        version=options.model_version,
        snapshot=options.model_snapshot,
        fast_path=options.fast_path,
    )
    return FileModelSource(model)


def run_score(args: argparse.Namespace) -> int:
    """Build the settings, start the worker, stop it cleanly on a signal."""
    from riverrun.workers.runtime.health import HealthServer
    from riverrun.workers.runtime.heap import settle_heap
    from riverrun.workers.runtime.startup import wait_for_kafka
    from riverrun.workers.scorer.loop import Scorer
    from riverrun.workers.scorer.metrics import ScorerMetrics
    from riverrun.workers.scorer.model.model_file import ModelFileError
    from riverrun.workers.scorer.model.registry_source import RegistryModelSource

    metrics = ScorerMetrics()
    try:
        settings = ScorerSettings(**collect_section_flags(args))
        models = model_source_for(settings, metrics)
    except ValidationError as exc:
        logger.error("bad configuration: %s", explain(exc))
        return 2
    except (ConfigurationError, ModelFileError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info(
        "effective settings",
        extra={"settings": settings.model_dump(mode="json")},
    )
    scorer = Scorer(settings, models, metrics)
    stopping = threading.Event()

    def on_signal(name: str) -> None:
        logger.info("received %s: finishing the batch, flushing, committing", name)
        stopping.set()
        scorer.stop()

    signals = StopSignals(on_signal).start()
    health = None
    if settings.scorer.metrics_port is not None:
        health = HealthServer(metrics.registry, scorer.is_ready, port=settings.scorer.metrics_port)
        health.start()
    try:
        if isinstance(models, RegistryModelSource):
            # The registry is read before the first request: wait for the broker and the topics
            # (a subscription made before its topic exists waits out a metadata refresh).
            topics = [("models", settings.topics.models), ("requests", settings.topics.requests)]
            if not wait_for_kafka(settings.kafka, topics, stopping, "the scorer"):
                return 0
            models.start()
        settle_heap()
        summary = scorer.run(max_messages=args.max_messages, idle_timeout=args.idle_timeout)
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2
    except (FatalError, RiverrunError) as exc:
        logger.error("stopping without committing: %s", exc)
        return 3
    finally:
        if health is not None:
            health.stop()
        stop = getattr(models, "stop", None)
        if stop is not None:
            stop()
        signals.close()
    logger.info(
        "scored %d records in %d batches: %d outputs, %d dead letters",
        summary.consumed,
        summary.batches,
        summary.produced,
        summary.dead_lettered,
    )
    return 0
