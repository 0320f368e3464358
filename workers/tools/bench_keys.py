"""`riverrun bench --per-key`: what per-key models gain, weigh and cost to answer, as JSON.

- **Gain**: on a stream where each key has its own concept (`producers.keyed`), the log loss of
  the keys' blended answers against the global model's on the same labels, test-then-train,
  through the learner's own per-key code (`KeyModels`).
- **Weight and restore**: `--keys` keys of `StandardScaler | LogisticRegression`, each learned
  from a few labels, written to a fresh key-state changelog on the broker; the time a learner
  takes to restore them (read and unpickle every key), and, in a scorer-like process of its own,
  the time to read the changelog to its end and the RSS per 1,000 keys held and live.
- **Cost to answer**: in that process, the scorer's own batch core (`score_batch`) answering one
  request at a time: the global model alone, a key whose model is live in the cache, and a key
  loaded from its state on the spot (a miss), p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from riverrun.schemas import KafkaSettings, TopicSettings

MODEL = "keyed"
PIPELINE = "StandardScaler | LogisticRegression(optimizer=SGD(0.1))"
TAU = 10.0
QUALITY_KEYS, QUALITY_LABELS = 200, 20_000
_CHILD_KEY_ENV = "RIVERRUN_BENCH_KEYS_SIGNING_KEY"


class PerKeyResult(BaseModel):
    """The figures of `riverrun bench --per-key`."""

    broker: str
    pipeline: str = PIPELINE
    tau: float = TAU
    quality_keys: int
    quality_labels: int
    global_log_loss: float = Field(description="The global model's mean log loss, prequential.")
    keys_log_loss: float = Field(description="The keys' blended answers' mean log loss.")
    keys_gain: float = Field(description="1 - keys_log_loss / global_log_loss.")
    keys: int
    labels_per_key: int
    state_bytes_per_key: float = Field(description="Mean size of a key's changelog record.")
    learner_restore_s: float = Field(description="Read and unpickle every key, as a learner.")
    scorer_restore_s: float = Field(description="Read the changelog to its end, as a scorer.")
    scorer_rss_mb: float = Field(description="The scorer-like process with every key live.")
    scorer_rss_mb_per_1000_keys: float = Field(
        description="RSS added per 1,000 keys read and live (store and cache)."
    )
    global_p50_ms: float
    global_p99_ms: float
    cached_key_p50_ms: float
    cached_key_p99_ms: float
    loaded_key_p50_ms: float
    loaded_key_p99_ms: float
    calls: int


def _pipeline() -> Any:
    from riverrun.workers.registry import ModelSpec, build_estimator
    from riverrun.workers.registry.spec import PerKey

    spec = ModelSpec(pipeline=PIPELINE, task="binary", label_type="bool",
                     per_key=PerKey(tau=TAU))  # fmt: skip
    return spec, build_estimator(spec)


def _learn(keys: int, labels: int, seed: int) -> tuple[Any, Any]:
    """The global model and every key's, learned test-then-train as the learner does."""
    from riverrun.producers.keyed import keyed_concepts
    from riverrun.workers.keys import KeyModels
    from riverrun.workers.learner.prequential import learn_example

    spec, estimator = _pipeline()
    models = KeyModels(estimator.clone(), spec.per_key, classifier=True)
    for offset, (key, x, y) in enumerate(keyed_concepts(keys, labels, seed=seed)):
        row = dict(x)
        loss = learn_example(estimator, x, y, None, True)
        models.learn(key, offset, row, y, loss, offset)
    return estimator, models


def measure_per_key(
    kafka: KafkaSettings, broker: str, keys: int, labels_per_key: int, calls: int
) -> PerKeyResult:
    """Every figure of the module docstring, on one broker."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from riverrun.workers.keys import KeyStateWriter, read_states
    from riverrun.workers.keys.changelog import load_state
    from riverrun.workers.registry.signing import Signer

    _, quality = _learn(QUALITY_KEYS, QUALITY_LABELS, seed=7)
    _, keys_loss, global_loss = quality.losses()

    estimator, models = _learn(keys, keys * labels_per_key, seed=13)
    topics = TopicSettings(key_states=f"bench-keys-{uuid.uuid4().hex[:8]}")
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(topics.key_states, num_partitions=4,
                                                config={"cleanup.policy": "compact"})]).values():
        future.result(timeout=30)
    signing_key = os.urandom(32).hex()
    signer = Signer(signing_key.encode())
    writer = KeyStateWriter(kafka, topics.key_states, signer, "riverrun-bench-keys")
    try:
        writer.write(MODEL, 1, models.models, sorted(models.models))
    finally:
        writer.close()
    started = time.perf_counter()
    stored = read_states(kafka, topics.key_states, signer, lambda m, v: m == MODEL, timeout=600)
    for state in stored.values():
        load_state(state)
    learner_restore_s = time.perf_counter() - started
    state_bytes = statistics.fmean(len(s.value) for s in stored.values())

    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "global.pkl"
        model_path.write_bytes(pickle.dumps(estimator))
        child = subprocess.run(
            [sys.executable, "-m", "riverrun.workers.tools.bench_keys", kafka.bootstrap_servers,
             topics.key_states, str(model_path), str(calls)],
            capture_output=True, text=True, timeout=1800, check=False,
            env={**os.environ, _CHILD_KEY_ENV: signing_key},
        )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"the scorer-like process failed: {child.stderr[-2000:]}")
    served = json.loads(child.stdout.strip().splitlines()[-1])
    return PerKeyResult(
        broker=broker, quality_keys=QUALITY_KEYS, quality_labels=QUALITY_LABELS,
        global_log_loss=round(global_loss, 4), keys_log_loss=round(keys_loss, 4),
        keys_gain=round(1.0 - keys_loss / global_loss, 3), keys=len(stored),
        labels_per_key=labels_per_key, state_bytes_per_key=round(state_bytes, 1),
        learner_restore_s=round(learner_restore_s, 2), calls=calls, **served,
    )  # fmt: skip


# -- the scorer-like process ----------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:  # noqa: PTH123  # Linux: pages resident, second field
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Record:
    __slots__ = ("_key", "_value")

    def __init__(self, key: bytes, value: bytes) -> None:
        self._key, self._value = key, value

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def topic(self) -> str:
        return "requests"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def _serve(bootstrap: str, topic: str, model_path: Path, calls: int) -> dict[str, float]:
    import orjson

    from riverrun.workers.registry.signing import Signer
    from riverrun.workers.registry.spec import PerKey
    from riverrun.workers.scorer.batch import BatchOptions, score_batch
    from riverrun.workers.scorer.model.keys import KeyAnswers, KeyCache, KeyStateStore
    from riverrun.workers.scorer.model.model_file import FileModelSource
    from riverrun.workers.scorer.model.source import serve

    served = serve(pickle.loads(model_path.read_bytes()), MODEL, 1, 1, None)  # noqa: S301  # ours
    options = BatchOptions(predictions_topic="predictions", dead_letter_topic="dlq",
                           worker="bench", max_request_bytes=1 << 20,
                           reject_missing_features=True)  # fmt: skip
    before = _rss_mb()
    signer = Signer(os.environ[_CHILD_KEY_ENV].encode())
    store = KeyStateStore(KafkaSettings(bootstrap_servers=bootstrap), topic, signer,
                          "bench-keys").start()  # fmt: skip
    if not store.restored.wait(1200):
        raise RuntimeError("the key-state changelog was not read within 20 minutes")
    names = sorted(store.states.get((MODEL, 1), {}))
    cache = KeyCache(1 << 40)
    keyed = replace(served, keys=KeyAnswers(MODEL, 1, PerKey(tau=TAU), store, cache,
                                            classifier=served.scorer.is_classifier))  # fmt: skip
    global_source, keyed_source = FileModelSource(served), FileModelSource(keyed)
    rng = random.Random(3)
    row = {f"x{i}": rng.gauss(0.0, 1.0) for i in range(5)}

    def once(source: Any, key: str) -> float:
        value = orjson.dumps({"request_id": f"r-{key}", "model": MODEL, "features": row})
        record = _Record(key.encode(), value)
        started = time.perf_counter()
        result = score_batch([record], source, options)
        elapsed = (time.perf_counter() - started) * 1000.0
        assert len(result.outputs) == 1 and not result.dead_letters  # noqa: S101  # a bench check
        return elapsed

    # Keys loaded from their state on the spot: each asked for the first time.
    loaded = [once(keyed_source, key) for key in names[:calls]]
    for name in names:  # every key live
        stored = store.get(MODEL, 1, name)
        assert stored is not None  # noqa: S101  # listed above
        cache.model(stored)
    after = _rss_mb()
    global_ms, cached_ms = [], []
    for i in range(calls):  # in turns, so that noise falls on both alike
        global_ms.append(once(global_source, f"nobody-{i}"))
        cached_ms.append(once(keyed_source, names[rng.randrange(len(names))]))
    store.stop()
    return {
        "scorer_restore_s": round(store.restore_seconds or 0.0, 2),
        "scorer_rss_mb": round(after, 1),
        "scorer_rss_mb_per_1000_keys": round((after - before) * 1000 / max(1, len(names)), 2),
        "global_p50_ms": _quantile(global_ms, 0.5), "global_p99_ms": _quantile(global_ms, 0.99),
        "cached_key_p50_ms": _quantile(cached_ms, 0.5),
        "cached_key_p99_ms": _quantile(cached_ms, 0.99),
        "loaded_key_p50_ms": _quantile(loaded, 0.5), "loaded_key_p99_ms": _quantile(loaded, 0.99),
    }  # fmt: skip


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else 0.0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The scorer-like process of bench --per-key.")
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("model", type=Path)
    parser.add_argument("calls", type=int)
    args = parser.parse_args()
    print(json.dumps(_serve(args.bootstrap, args.topic, args.model, args.calls)))
