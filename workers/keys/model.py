"""A key's own model, how much it weighs against the global one, and learning it label by label.

Pure logic: no Kafka. The learner (`KeyModels.learn`) and the scorer (`weight`, `blend`) share
it, so the answer a key gets is the answer its prequential loss was counted for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from riverrun.workers.registry.spec import PerKey

logger = logging.getLogger(__name__)

_EPSILON = 1e-15  # probabilities are clipped like River's log loss clips them


@dataclass(slots=True)
class KeyModel:
    """What one key has learned: its estimator and the counts that go with it."""

    estimator: Any
    examples: int = 0  # labels learned
    next_offset: int = 0  # examples-log offset after the last label learned
    updated_ms: int = 0  # the last label's time in the examples log (ms since the epoch)
    scored: int = 0  # labels whose blended and global losses were counted (classifiers)
    blend_loss: float = 0.0  # sum of the log losses of the answers the key was given
    global_loss: float = 0.0  # sum of the global model's log losses on the same labels
    partition: int | None = None  # the feedback partition its labels arrive on


def weight(examples: int, per_key: PerKey) -> float:
    """The key's own model's share of the answer after `examples` labels of it."""
    if examples <= 0:
        return 0.0
    if per_key.answer == "local":
        return 1.0
    return examples / (examples + per_key.tau)


def blend(local: Mapping[Any, float], global_: Mapping[Any, float], w: float) -> dict[Any, float]:
    """`w * local + (1 - w) * global`, class by class (a class one side lacks counts 0 there)."""
    if w >= 1.0:
        return dict(local)
    out = {label: (1.0 - w) * p for label, p in global_.items()}
    for label, p in local.items():
        out[label] = out.get(label, 0.0) + w * p
    return out


def most_probable(proba: Mapping[Any, float]) -> Any:
    """River's `predict_one`: the first class with the highest probability."""
    return max(proba, key=proba.get) if proba else None  # type: ignore[arg-type]


def request_key(record_key: bytes | None, request_id: str) -> str | None:
    """The key a per-key model answers for: the record's key, unless it is the request id."""
    if record_key is None:
        return None
    key = record_key.decode("utf-8", "replace")
    return None if key == request_id else key


class KeyModels:
    """Every key's model of one version, learned test-then-train from that key's labels only."""

    def __init__(self, template: Any, per_key: PerKey, *, classifier: bool) -> None:
        self._template = template  # an unlearned pipeline: each new key gets a clone of it
        self.per_key = per_key
        self.classifier = classifier
        self.models: dict[str, KeyModel] = {}
        self.changed: set[str] = set()  # keys learned since the last write
        self.newest_ms = 0  # the newest label's time: the clock keys expire by
        self.failures = 0

    def new_model(self) -> KeyModel:
        """An unlearned model for a key seen for the first time."""
        return KeyModel(self._template.clone())

    def learn(
        self,
        key: str,
        offset: int,
        features: dict[str, Any],
        label: Any,
        global_loss: float,
        timestamp_ms: int,
        partition: int | None = None,
    ) -> None:
        """Test-then-train one label of `key`; a label at an offset learned already is passed by.

        `features` is the key's own copy of the row (learning may change it). `global_loss` is
        the global model's log loss on the label (NaN when it had none), from which the blended
        answer's loss is counted beside it.
        """
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = self.new_model()
        if offset < model.next_offset:
            return
        estimator = model.estimator
        try:
            if self.classifier and global_loss == global_loss:  # noqa: PLR0124  # not NaN
                w = weight(model.examples, self.per_key)
                local = estimator.predict_proba_one(dict(features)).get(label, 0.0) if w else 0.0
                p = w * local + (1.0 - w) * math.exp(-global_loss)
                model.blend_loss += -math.log(min(max(p, _EPSILON), 1.0))
                model.global_loss += global_loss
                model.scored += 1
            estimator.learn_one(features, label)
        except Exception as exc:  # noqa: BLE001  # a key's model must not stop the learner
            self.failures += 1
            logger.warning("the model of key %r raised on the label at examples offset %d "
                           "(%s: %s): that key skips it", key, offset, type(exc).__name__, exc)
        model.examples += 1
        model.next_offset = offset + 1
        model.updated_ms = max(model.updated_ms, timestamp_ms)
        if partition is not None:
            model.partition = partition
        self.newest_ms = max(self.newest_ms, timestamp_ms)
        self.changed.add(key)

    def expired(self, now_ms: int) -> list[tuple[str, int | None]]:
        """Forget the keys with no label for `expire_after_s` before `now_ms`.

        Returns each key forgotten with its partition (where its tombstone goes).
        """
        after = self.per_key.expire_after_s
        if after is None:
            return []
        cutoff = now_ms - int(after * 1000)
        gone = [(key, model.partition) for key, model in self.models.items()
                if model.updated_ms < cutoff]  # fmt: skip
        for key, _ in gone:
            del self.models[key]
            self.changed.discard(key)
        return gone

    def restore(self, states: Iterable[tuple[str, KeyModel]]) -> None:
        """Take the keys' states a changelog holds (after a restart)."""
        self.models.update(states)
        self.changed.clear()
        self.newest_ms = max((m.updated_ms for m in self.models.values()), default=0)

    def losses(self) -> tuple[int, float, float]:
        """Labels scored, and the mean log loss of the keys' answers and of the global model's."""
        scored = sum(m.scored for m in self.models.values())
        if not scored:
            return 0, math.nan, math.nan
        # fsum: exactly rounded, so keys restored in another order give the very same figure.
        blend_loss = math.fsum(m.blend_loss for m in self.models.values())
        global_loss = math.fsum(m.global_loss for m in self.models.values())
        return scored, blend_loss / scored, global_loss / scored
