"""The learner's settings: environment names, crash points, ids derived from the model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from riverrun.schemas import collect_section_flags
from riverrun.workers.cli import parse_args
from riverrun.workers.learner import LearnerOptions, LearnerSettings, parse_reference
from riverrun.workers.runtime.errors import ConfigurationError


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERRUN_LEARNER__MODEL", "fraud")
    monkeypatch.setenv("RIVERRUN_LEARNER__SNAPSHOT_EVERY", "250")
    monkeypatch.setenv("RIVERRUN_TOPICS__EXAMPLES", "fraud.examples")
    settings = LearnerSettings()
    assert settings.learner.model == "fraud"
    assert settings.learner.snapshot_every == 250
    assert settings.topics.examples == "fraud.examples"
    assert settings.learner.group_id == "riverrun-learner-fraud"
    assert settings.learner.transactional_id == "riverrun-learner-fraud"


def test_unknown_crash_points_are_refused_with_the_known_ones() -> None:
    assert LearnerOptions(crash_at="after-learn-before-snapshot:2").crash_at
    with pytest.raises(ValidationError, match="after-join-before-commit"):
        LearnerOptions(crash_at="after-consume")


def test_flags_reach_the_settings() -> None:
    args = parse_args([
        "learn", "--model", "fraud", "--snapshot-every", "10", "--snapshot-interval", "5",
        "--topic-examples", "ex", "--insecure-dev", "--max-examples", "7",
    ])  # fmt: skip
    settings = LearnerSettings(**collect_section_flags(args))
    assert (settings.learner.model, settings.learner.snapshot_every) == ("fraud", 10)
    assert settings.learner.snapshot_interval == 5.0
    assert settings.topics.examples == "ex" and settings.registry.insecure_dev
    assert args.max_examples == 7


def test_snapshot_references() -> None:
    assert parse_reference("fraud@3#12") == ("fraud", 3, 12)
    for bad in ("fraud", "fraud@3", "fraud#1", "@1#1", "fraud@x#1"):
        with pytest.raises(ConfigurationError, match="NAME@VERSION#SNAPSHOT"):
            parse_reference(bad)


def test_a_stage_is_both_join_learn_or_keys_and_a_typo_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert LearnerSettings().learner.stage == "both"
    args = parse_args(["learn", "--model", "fraud", "--stage", "learn"])
    assert LearnerSettings(**collect_section_flags(args)).learner.stage == "learn"
    monkeypatch.setenv("RIVERRUN_LEARNER__STAGE", "joins")
    with pytest.raises(ValidationError,
                       match=r"learner\.stage[\s\S]*'both', 'join', 'learn' or 'keys'"):
        LearnerSettings()
    monkeypatch.delenv("RIVERRUN_LEARNER__STAGE")
    monkeypatch.setenv("RIVERRUN_LEARNER__KEYS", "apart!")
    with pytest.raises(ValidationError, match=r"learner\.keys[\s\S]*'here' or 'apart'"):
        LearnerSettings()
