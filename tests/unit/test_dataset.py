from __future__ import annotations

import itertools
import json

import pytest

from riverrun.producers import dataset
from riverrun.producers.dataset import DATASETS, DatasetInfo, describe, load


def test_catalog_is_sorted_and_complete() -> None:
    assert list(DATASETS) == sorted(DATASETS)
    for name in ("phishing", "bananas", "shuttle", "agrawal", "agrawal-drift", "sea", "sea-drift"):
        assert name in DATASETS


@pytest.mark.parametrize("name", DATASETS)
def test_records_are_json_safe_with_string_keys(name: str) -> None:
    info = describe(name)
    assert isinstance(info, DatasetInfo)
    assert info.name == name
    records = list(load(name, seed=7, limit=50))
    assert len(records) == 50
    for features, label in records:
        assert len(features) == info.n_features
        assert all(isinstance(k, str) for k in features)
        assert all(type(v) in (float, str) for v in features.values())
        assert type(label) in (bool, int, float, str)
        json.dumps({"features": features, "label": label})


@pytest.mark.parametrize("name", ["phishing", "bananas", "agrawal", "sea-drift"])
def test_default_length_is_the_documented_one(name: str) -> None:
    assert sum(1 for _ in load(name)) == describe(name).length


def test_bundled_files_load_offline_and_stop_at_their_end() -> None:
    info = describe("phishing")
    assert not info.synthetic
    assert sum(1 for _ in load("phishing", limit=info.length + 100)) == info.length


def test_synthetic_streams_go_past_their_default_length_when_asked() -> None:
    info = describe("sea")
    assert info.synthetic
    assert sum(1 for _ in load("sea", limit=info.length + 10)) == info.length + 10


@pytest.mark.parametrize("name", ["agrawal", "agrawal-drift", "sea", "sea-drift"])
def test_synthetic_streams_are_seeded(name: str) -> None:
    assert list(load(name, seed=3, limit=100)) == list(load(name, seed=3, limit=100))
    assert list(load(name, seed=3, limit=100)) != list(load(name, seed=4, limit=100))


@pytest.mark.parametrize("name", ["agrawal-drift", "sea-drift"])
def test_drifting_streams_state_their_drift_and_follow_the_first_concept_before_it(
    name: str,
) -> None:
    info = describe(name)
    assert info.drift_at is not None
    assert 0 < info.drift_at < info.length
    undrifted = name.removesuffix("-drift")
    assert describe(undrifted).drift_at is None
    # Well before the drift the drifting stream is the undrifted one, record for record.
    before = info.drift_at - 20 * dataset.DRIFT_WIDTH
    assert list(load(name, seed=5, limit=before)) == list(load(undrifted, seed=5, limit=before))


def test_agrawal_drift_changes_the_concept_after_the_drift() -> None:
    info = describe("agrawal-drift")
    assert info.drift_at is not None
    after = info.drift_at + 20 * dataset.DRIFT_WIDTH
    drifted = list(itertools.islice(load("agrawal-drift", seed=5, limit=after + 500), after, None))
    undrifted = list(itertools.islice(load("agrawal", seed=5, limit=after + 500), after, None))
    assert drifted != undrifted

    def function_0(x: dict[str, float | str]) -> bool:
        # Agrawal's function 0 labels by age alone: class 1 iff age < 40 or age >= 60.
        age = float(x["age"])
        return age < 40 or age >= 60

    assert all(bool(y) == function_0(x) for x, y in load("agrawal-drift", seed=5, limit=2000))
    disagree = sum(1 for x, y in drifted if bool(y) != function_0(x))
    assert disagree > 50


def test_drift_survives_long_streams() -> None:
    # ConceptDriftStream computes exp(-4 (i - position) / width): it must not overflow anywhere.
    assert sum(1 for _ in load("sea-drift", limit=30_000)) == 30_000


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="phishing") as info:
        list(load("nope"))
    assert "nope" in str(info.value)
    with pytest.raises(ValueError, match="sea-drift"):
        describe("nope")


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        list(load("phishing", limit=-1))
