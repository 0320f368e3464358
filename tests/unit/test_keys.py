"""Per-key models: weights and blends, learning by key, the key-state changelog, the scorer's cache.

Pure logic: no broker. The changelog's records are built with `state_record` and read back with
`KeyStateCheck`, and the scorer's store is fed through `_take`, never started.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from river import linear_model, optim, preprocessing

from riverrun.producers.keyed import KeyedRow, keyed_concepts
from riverrun.schemas import KafkaSettings
from riverrun.workers.keys.changelog import (
    COUNTS_HEADER,
    KeyStateCheck,
    StoredKeyState,
    dump_estimator,
    load_state,
    parse_state_key,
    partition_of,
    state_key,
    state_record,
)
from riverrun.workers.keys.model import (
    KeyModel,
    KeyModels,
    blend,
    most_probable,
    request_key,
    weight,
)
from riverrun.workers.learner.prequential import learn_example
from riverrun.workers.registry.signing import Signer
from riverrun.workers.registry.spec import ModelSpec, PerKey, per_key_of
from riverrun.workers.scorer.model.keys import KeyAnswers, KeyCache, KeyStateStore
from riverrun.workers.scorer.model.protocol import ScoredBatch

SIGNER = Signer(b"k" * 32)
OTHER_SIGNER = Signer(b"o" * 32)
MODEL, VERSION = "m", 1


def pipeline() -> Any:
    """An unlearned classifier, the pipeline every test's keys clone."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.1)
    )


def key_models(per_key: PerKey | None = None) -> KeyModels:
    return KeyModels(pipeline(), per_key or PerKey(), classifier=True)


def global_losses(rows: list[KeyedRow]) -> list[float]:
    """The global model's log loss on each row, learned test-then-train in order."""
    estimator = pipeline()
    return [learn_example(estimator, dict(x), y, None, True) for _, x, y in rows]


def learn_rows(
    models: KeyModels, rows: list[KeyedRow], losses: list[float], start: int = 0
) -> None:
    """Feed rows `start..` to `models` at their examples-log offsets (1 s apart)."""
    for offset in range(start, len(rows)):
        key, x, y = rows[offset]
        models.learn(key, offset, dict(x), y, losses[offset], 1_000 * offset)


def stored(key: str, state: KeyModel, signer: Signer = SIGNER) -> StoredKeyState:
    """A key's state as a changelog record, read back through a check."""
    found = KeyStateCheck(signer)(*state_record(MODEL, VERSION, key, state, signer), 0)
    assert found is not None
    return found


def learned_state(rows: Iterator[KeyedRow], key: str = "user-1") -> KeyModel:
    """A key's model learned from every row of `rows` (whatever key they came with)."""
    models = key_models()
    for offset, (_, x, y) in enumerate(rows):
        models.learn(key, offset, dict(x), y, math.nan, 1_000 * offset)
    return models.models[key]


def counts(state: KeyModel) -> tuple[int, int, int, int, float, float]:
    return (state.examples, state.next_offset, state.updated_ms, state.scored,
            state.blend_loss, state.global_loss)  # fmt: skip


# --- weight, blend, request_key -------------------------------------------------------------


def test_weight_by_answer_mode() -> None:
    blended, local = PerKey(answer="blend", tau=20.0), PerKey(answer="local", tau=20.0)
    assert weight(0, blended) == 0.0
    assert weight(0, local) == 0.0
    assert weight(5, blended) == pytest.approx(5 / 25)
    assert weight(20, blended) == pytest.approx(0.5)
    assert weight(1, local) == 1.0
    assert weight(500, local) == 1.0


def test_blend_class_by_class() -> None:
    mixed = blend({"a": 0.8, "b": 0.2}, {"b": 0.6, "c": 0.4}, 0.25)
    assert mixed == pytest.approx({"a": 0.25 * 0.8, "b": 0.25 * 0.2 + 0.75 * 0.6, "c": 0.75 * 0.4})
    assert sum(mixed.values()) == pytest.approx(1.0)
    local = {"a": 0.9, "b": 0.1}
    whole = blend(local, {"a": 0.1, "b": 0.9}, 1.0)
    assert whole == local and whole is not local
    assert most_probable(mixed) == "b"
    assert most_probable({}) is None


def test_request_key() -> None:
    assert request_key(None, "req-1") is None
    assert request_key(b"req-1", "req-1") is None
    assert request_key(b"user-7", "req-1") == "user-7"
    assert request_key("usér".encode(), "req-1") == "usér"


# --- KeyModels.learn, losses, expiry ---------------------------------------------------------


def test_learn_test_then_train_and_passes_by_learned_offsets() -> None:
    models = key_models(PerKey(tau=5.0))
    assert models.losses()[0] == 0 and math.isnan(models.losses()[1])
    x = {"x0": 1.0, "x1": -0.5}
    models.learn("a", 10, dict(x), True, 0.7, 5_000)
    first = models.models["a"]
    # The first label of a key weighs nothing of its own: its loss is the global one.
    assert (first.examples, first.next_offset, first.updated_ms) == (1, 11, 5_000)
    assert first.scored == 1
    assert first.blend_loss == pytest.approx(0.7) and first.global_loss == pytest.approx(0.7)
    assert models.changed == {"a"}

    models.changed.clear()
    models.learn("a", 10, dict(x), False, 0.3, 6_000)  # learned already
    models.learn("a", 4, dict(x), False, 0.3, 6_000)
    assert (first.examples, first.next_offset, first.scored) == (1, 11, 1)
    assert models.changed == set() and models.newest_ms == 5_000

    # The second label is tested with the key's own model before it learns it.
    expected_local = first.estimator.predict_proba_one(dict(x)).get(False, 0.0)
    w = weight(1, models.per_key)
    models.learn("a", 12, dict(x), False, 0.3, 7_000)
    models.learn("b", 13, dict(x), True, math.nan, 8_000)  # no global loss: not scored
    p = w * expected_local + (1.0 - w) * math.exp(-0.3)
    assert first.blend_loss == pytest.approx(0.7 - math.log(p))
    assert models.changed == {"a", "b"}
    assert models.models["b"].scored == 0 and models.models["b"].examples == 1
    scored, blended, global_mean = models.losses()
    assert scored == 2
    assert blended == pytest.approx((0.7 - math.log(p)) / 2)
    assert global_mean == pytest.approx((0.7 + 0.3) / 2)
    assert models.newest_ms == 8_000


def test_keys_beat_the_global_model_on_keyed_concepts() -> None:
    models = key_models()
    global_estimator = pipeline()
    for offset, (key, x, y) in enumerate(keyed_concepts(20, 2000, seed=7)):
        row = dict(x)  # the key's copy, taken before the global model learns the row
        loss = learn_example(global_estimator, x, y, None, True)
        models.learn(key, offset, row, y, loss, 1_000 * offset)
    scored, blended, global_mean = models.losses()
    assert scored == 2000
    assert len(models.models) == 20
    assert blended < 0.95 * global_mean, (blended, global_mean)


def test_restart_from_the_changelog_learns_the_same_models() -> None:
    rows = list(keyed_concepts(8, 600, seed=3))
    losses = global_losses(rows)
    whole = key_models()
    learn_rows(whole, rows, losses)

    first = key_models()
    learn_rows(first, rows[:300], losses)
    loaded = {}
    for key, state in first.models.items():
        record_key, value, headers = state_record(MODEL, VERSION, key, state, SIGNER)
        found = KeyStateCheck(SIGNER)(record_key, value, headers, 0)
        assert found is not None and found.key == key
        loaded[key] = load_state(found)
    restarted = key_models()
    restarted.restore(loaded.items())
    assert restarted.changed == set()
    assert restarted.newest_ms == 1_000 * 299
    learn_rows(restarted, rows, losses)  # the whole stream again, from offset 0

    assert restarted.models.keys() == whole.models.keys()
    for key, state in whole.models.items():
        again = restarted.models[key]
        assert counts(again) == counts(state), key
        assert dump_estimator(again.estimator) == dump_estimator(state.estimator), key
    assert restarted.losses() == whole.losses()


def test_expired_forgets_keys_without_recent_labels() -> None:
    x = {"x0": 1.0}
    models = key_models(PerKey(expire_after_s=10.0))
    models.learn("old", 0, dict(x), True, math.nan, 1_000)
    models.learn("recent", 1, dict(x), False, math.nan, 20_000)
    assert models.expired(11_000) == []  # cutoff 1 000: the oldest label is not older
    assert models.expired(11_001) == [("old", None)]
    assert set(models.models) == {"recent"}
    assert models.changed == {"recent"}
    assert models.expired(29_999) == []
    assert models.expired(30_001) == [("recent", None)] and models.models == {}

    never = key_models(PerKey(expire_after_s=None))
    never.learn("old", 0, dict(x), True, math.nan, 1_000)
    assert never.expired(10**12) == []
    assert set(never.models) == {"old"}


# --- the changelog's records -----------------------------------------------------------------


def test_key_state_check_refuses_strangers_and_tombstones() -> None:
    state = learned_state(keyed_concepts(3, 20, seed=1))
    record_key, value, headers = state_record(MODEL, VERSION, "user-1", state, OTHER_SIGNER)
    check = KeyStateCheck(SIGNER)
    assert check(record_key, value, headers, 0) is None
    assert check.refused == 1
    assert check(record_key, None, headers, 0) is None  # a tombstone: not a refusal
    assert check.refused == 1
    unsigned = [(name, raw) for name, raw in headers if name == COUNTS_HEADER]
    assert check(record_key, value, unsigned, 0) is None
    assert check.refused == 2
    # The signature is bound to the record key: the same bytes under another key are refused.
    mine = state_record(MODEL, VERSION, "user-1", state, SIGNER)
    assert check(state_key(MODEL, VERSION, "user-2"), mine[1], mine[2], 0) is None
    assert check.refused == 3

    found = check(*mine, 0)
    assert found is not None
    assert (found.model, found.version, found.key) == (MODEL, VERSION, "user-1")
    assert found.counts.examples == state.examples == 20
    assert found.counts.next_offset == state.next_offset
    assert check.refused == 3


def test_state_keys_and_partitions() -> None:
    assert state_key("fraud", 3, "user/1@x") == b"fraud@3/user/1@x"
    assert parse_state_key(b"fraud@3/user/1@x") == ("fraud", 3, "user/1@x")
    assert parse_state_key(b"fraud@3/") == ("fraud", 3, "")
    assert parse_state_key(b"fraud3/user-1") is None  # no '@'
    assert parse_state_key(b"fraud@3") is None  # no '/'
    assert parse_state_key(b"fraud@v3/user-1") is None
    assert parse_state_key(b"fraud@/user-1") is None
    for key in ("user-1", "user-2", "tenant/ü", ""):
        for n in (1, 3, 12):
            assert partition_of(key, n) == zlib.crc32(key.encode()) % n
    assert len({partition_of(f"user-{i}", 12) for i in range(200)}) == 12


# --- the scorer's cache and blend ------------------------------------------------------------


def test_key_cache_hits_and_replaces_newer_states() -> None:
    rows = list(keyed_concepts(3, 40, seed=2))
    cache = KeyCache(max_bytes=10**7)
    older = stored("user-1", learned_state(iter(rows[:20])))
    model = cache.model(older)
    assert model is not None
    assert (cache.stats.hits, cache.stats.misses, len(cache)) == (0, 1, 1)
    assert cache.model(older) is model
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)

    newer = stored("user-1", learned_state(iter(rows)))
    assert newer.counts.examples > older.counts.examples
    replaced = cache.model(newer)
    assert replaced is not None and replaced is not model
    assert (cache.stats.hits, cache.stats.misses, len(cache)) == (1, 2, 1)
    assert cache.bytes == len(newer.value)
    assert cache.model(newer) is replaced
    assert cache.stats.hits == 2


def test_key_cache_stays_within_its_bytes() -> None:
    rows = list(keyed_concepts(3, 10, seed=4))
    states = [stored(f"user-{i}", learned_state(iter(rows), f"user-{i}")) for i in range(12)]
    size = max(len(s.value) for s in states)
    cache = KeyCache(max_bytes=3 * size + size // 2)
    for s in states:
        for _ in range(2):  # asked twice: past the door keeper
            assert cache.model(s) is not None
            assert cache.bytes <= cache.max_bytes
            assert cache.bytes == sum(v[2] for v in cache._live.values())
    assert len(cache) == 3
    assert cache.stats.evictions == len(states) - 3
    # The least recently used went first: the last three asked are the ones held.
    hits = cache.stats.hits
    assert cache.model(states[-1]) is not None and cache.stats.hits == hits + 1
    assert cache.model(states[0]) is not None and cache.stats.hits == hits + 1


def test_key_cache_door_keeper() -> None:
    rows = list(keyed_concepts(3, 10, seed=5))
    states = [stored(f"user-{i}", learned_state(iter(rows), f"user-{i}")) for i in range(4)]
    size = max(len(s.value) for s in states)
    cache = KeyCache(max_bytes=2 * size)
    # While there is room, a key is kept the first time it is asked for.
    for s in states[:2]:
        assert cache.model(s) is not None
    assert len(cache) == 2
    full = cache.bytes

    newcomer = states[2]
    answer = cache.model(newcomer)
    assert answer is not None
    assert answer.predict_proba_one(dict(rows[0][1]))  # a live, answering model
    assert len(cache) == 2 and cache.bytes == full and cache.stats.evictions == 0

    misses, hits = cache.stats.misses, cache.stats.hits
    assert cache.model(newcomer) is not None  # asked again: kept, the oldest evicted
    assert cache.stats.misses == misses + 1 and cache.stats.evictions == 1
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    assert cache.model(newcomer) is not None
    assert cache.stats.hits == hits + 1


def answers(per_key: PerKey, key: str = "user-1") -> tuple[KeyAnswers, StoredKeyState]:
    """A version's keys with one key's state, taken into a store as the changelog gives it."""
    state = learned_state(keyed_concepts(2, 30, seed=6), key)
    store = KeyStateStore(KafkaSettings(), "topic", SIGNER, "client")
    store._take(*state_record(MODEL, VERSION, key, state, SIGNER))
    store._take(*state_record(MODEL, 2, "user-9", state, SIGNER))  # another version's key
    held = store.get(MODEL, VERSION, key)
    assert held is not None and store.count() == 2
    keys = KeyAnswers(MODEL, VERSION, per_key, store, KeyCache(10**7), classifier=True)
    return keys, held


def scored_batch(rows: int) -> ScoredBatch:
    """Global answers as the scorer renders them: probabilities keyed by the class's text."""
    return ScoredBatch(
        predictions=[False] * rows, probas=[{"True": 0.3, "False": 0.7} for _ in range(rows)]
    )


def test_blend_into_blends_only_keys_with_a_state() -> None:
    per_key = PerKey(answer="blend", tau=10.0)
    keys, held = answers(per_key)
    rows = [{"x0": 2.0, "x1": -1.0, "x2": 0.5, "x3": 0.0, "x4": 1.5}] * 3
    batch = scored_batch(3)
    untouched = list(batch.probas)
    used = keys.blend_into(batch, rows, ["user-1", "stranger", None])

    n = held.counts.examples
    w = n / (n + per_key.tau)
    assert used[0] == (n, pytest.approx(w))
    assert used[1:] == [None, None]
    assert batch.probas[1] is untouched[1] and batch.probas[2] is untouched[2]
    assert batch.probas[1] == {"True": 0.3, "False": 0.7}
    assert batch.predictions[1:] == [False, False]

    local = load_state(held).estimator.predict_proba_one(dict(rows[0]))
    proba = batch.probas[0]
    assert proba is not None and set(proba) == {"True", "False"}
    assert proba["True"] == pytest.approx(w * local[True] + (1 - w) * 0.3)
    assert proba["False"] == pytest.approx(w * local[False] + (1 - w) * 0.7)
    assert batch.predictions[0] is (proba["True"] > proba["False"])  # a real label, not text


def test_blend_into_local_answers_with_the_keys_own_model() -> None:
    keys, held = answers(PerKey(answer="local"))
    rows = [{"x0": -1.0, "x1": 2.0, "x2": 0.0, "x3": 1.0, "x4": -0.5}] * 2
    batch = scored_batch(2)
    used = keys.blend_into(batch, rows, ["user-1", "user-9"])
    assert used == [(held.counts.examples, 1.0), None]  # user-9 is another version's key
    local = load_state(held).estimator.predict_proba_one(dict(rows[0]))
    assert batch.probas[0] == pytest.approx({str(c): p for c, p in local.items()})
    assert batch.predictions[0] is max(local, key=local.get)
    assert batch.probas[1] == {"True": 0.3, "False": 0.7}


def test_blend_into_without_states_for_the_version() -> None:
    keys, _ = answers(PerKey())
    other = KeyAnswers(MODEL, 7, PerKey(), keys._store, KeyCache(10**7), classifier=True)
    batch = scored_batch(1)
    assert other.blend_into(batch, [{"x0": 1.0}], ["user-1"]) == [None]
    assert batch.probas[0] == {"True": 0.3, "False": 0.7}


# --- the spec ----------------------------------------------------------------------------------


def test_released_form_and_per_key_round_trip() -> None:
    base = {"pipeline": "StandardScaler | LogisticRegression", "task": "binary",
            "label_type": "bool"}  # fmt: skip
    plain = ModelSpec.model_validate(base).released_form()
    assert "per_key" not in plain
    assert per_key_of(plain) is None

    settings = PerKey(answer="local", tau=5.0, expire_after_s=3600.0)
    released = ModelSpec.model_validate({**base, "per_key": settings}).released_form()
    assert released["per_key"] == {"answer": "local", "tau": 5.0, "expire_after_s": 3600.0}
    assert per_key_of(released) == settings
    assert ModelSpec.model_validate(released).per_key == settings

    with pytest.raises(ValidationError) as refused:
        PerKey(tau=0)
    assert [e["loc"] for e in refused.value.errors()] == [("tau",)]
    assert "tau" in str(refused.value)


def test_the_store_forgets_a_tombstoned_key_and_a_partition_it_no_longer_owns() -> None:
    state = learned_state(keyed_concepts(2, 30, seed=6), "user-1")
    store = KeyStateStore(KafkaSettings(), "topic", SIGNER, "client", partitions=[0, 1])
    store._take(*state_record(MODEL, VERSION, "user-1", state, SIGNER), 0)
    store._take(*state_record(MODEL, VERSION, "user-2", state, SIGNER), 1)
    assert store.count() == 2 and store.get(MODEL, VERSION, "user-2").partition == 1  # type: ignore[union-attr]
    store._take(state_key(MODEL, VERSION, "user-1"), None, None, 0)  # expired: a tombstone
    assert store.get(MODEL, VERSION, "user-1") is None and store.count() == 1

    class Reader:
        """What `_move` asks of the changelog reader."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, list[int]]] = []

        def incremental_unassign(self, partitions: list[Any]) -> None:
            self.calls.append(("unassign", [p.partition for p in partitions]))

        def incremental_assign(self, partitions: list[Any]) -> None:
            self.calls.append(("assign", [p.partition for p in partitions]))

        def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
            return 0, 5  # five records to read before the partition is caught up

    reader = Reader()
    assert store._move(reader, {0, 1}, {0, 3}) == {0, 3}
    assert reader.calls == [("unassign", [1]), ("assign", [3])]
    assert store.count() == 0  # user-2's partition went to another scorer
    # Partition 3's requests wait until its keys are read to where they ended when it came.
    assert store.pending({3}) == {3}
    store._caught_up(3, 0.0)
    assert store.pending({3}) == set()


def test_a_regressors_key_is_answered_with_the_weighted_mean_of_both_predictions() -> None:
    from river import linear_model, preprocessing

    own = preprocessing.StandardScaler() | linear_model.LinearRegression()
    for i in range(20):
        own.learn_one({"x0": float(i)}, 3.0 * i)
    state = KeyModel(own, examples=20, next_offset=20, updated_ms=1)
    store = KeyStateStore(KafkaSettings(), "topic", SIGNER, "client")
    store._take(*state_record(MODEL, VERSION, "user-1", state, SIGNER), 0)
    keys = KeyAnswers(MODEL, VERSION, PerKey(tau=20.0), store, KeyCache(10**7), classifier=False)
    scored = ScoredBatch(predictions=[100.0, 100.0], probas=[None, None])
    rows = [{"x0": 4.0}, {"x0": 4.0}]
    used = keys.blend_into(scored, rows, ["user-1", "stranger"])
    mine = own.predict_one({"x0": 4.0})
    assert used == [(20, 0.5), None]
    assert scored.predictions == [pytest.approx(0.5 * mine + 50.0), 100.0]
    assert scored.probas == [None, None]
