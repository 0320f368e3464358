"""A per-key version's keys in the learner: restored from the changelog, learned, written back.

Each key's record says the examples-log offset it has learned up to, and keys are written
before the snapshot that follows them is published. A restarted learner resumes the version
from its snapshot's lineage and every key from its own record: a key passes by the examples it
has learned already, so no label is learned twice or lost, whatever the crash cut.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from riverrun.schemas import KafkaSettings, ModelVersionReleased
from riverrun.workers.keys.changelog import KeyStateWriter, load_state, read_states
from riverrun.workers.keys.model import KeyModels
from riverrun.workers.registry.client import Registry
from riverrun.workers.registry.spec import per_key_of

logger = logging.getLogger(__name__)


class KeyLearning:
    """The keys of one per-key version being learned, and the writer of their states."""

    def __init__(self, models: KeyModels, writer: KeyStateWriter) -> None:
        self.models = models
        self._writer = writer

    @classmethod
    def of(
        cls,
        kafka: KafkaSettings,
        topic: str,
        registry: Registry,
        released: ModelVersionReleased | None,
        estimator: Any,
        *,
        classifier: bool,
        client_id: str,
        keepalive: Callable[[], None] | None = None,
    ) -> KeyLearning | None:
        """The version's keys as the changelog holds them; None for a version not per key."""
        per_key = per_key_of(released.spec) if released is not None else None
        if per_key is None or released is None:
            return None
        name, version = released.model, released.version
        feature_modules = registry.settings.feature_modules
        writer = KeyStateWriter(kafka, topic, registry.signer, client_id, feature_modules)
        started = time.perf_counter()
        stored = read_states(kafka, topic, registry.verifier,
                             lambda m, v: m == name and v == version,
                             keepalive=keepalive)  # fmt: skip
        models = KeyModels(estimator.clone(), per_key, classifier=classifier)
        models.restore((key, load_state(state, feature_modules))
                       for (_, _, key), state in stored.items())  # fmt: skip
        logger.info("%s@%d learns a model per key: %d keys restored from %s in %.2f s",
                    name, version, len(models.models), topic, time.perf_counter() - started)
        return cls(models, writer)

    def learn(
        self, key: str, offset: int, row: dict[str, Any], label: Any, global_loss: float,
        timestamp_ms: int, partition: int | None,
    ) -> None:
        """Learn one label for its key (see `KeyModels.learn`)."""
        self.models.learn(key, offset, row, label, global_loss, timestamp_ms, partition)

    def write(self, model: str, version: int) -> dict[str, float]:
        """Write the keys changed (and expired) since the last write; return the keys' metrics."""
        models = self.models
        gone = models.expired(models.newest_ms)
        self._writer.write(model, version, models.models, sorted(models.changed), gone)
        models.changed.clear()
        scored, blend_loss, global_loss = models.losses()
        metrics = {"keys": float(len(models.models))}
        if scored:
            metrics.update(keys_scored=float(scored), keys_log_loss=blend_loss,
                           keys_global_log_loss=global_loss)  # fmt: skip
        return metrics

    def close(self) -> None:
        """Hand the writer's records over and close it."""
        self._writer.close()
