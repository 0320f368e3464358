"""The learner's whole output on a mixed workload, held against a recorded digest: the examples
log, outcomes, dead letters, registry records (artifact hashes, lineage, metrics) and run
summaries, byte for byte.

The digest was recorded before the learner was split into its join and learn stages, and the
split left it unchanged; it changed three times since, on purpose: labels of a model nobody released
(the workload's `someone-else`) are now dead-lettered as `UnknownModel` instead of dropped, and
a version record carries its signature (here no features, and the label type `bool`) and
its spec the field `features` (here undeclared). And once more for continuous training: an
outcome carries its prediction's `scored_at` (a judge counts it in the experiment it was
served in), and a drift record the mean loss before its window (`mean_loss_before`: a rise
restarts a race's evidence, a fall does not). The examples, dead letters, summaries and every
snapshot's artifact and lineage are as before.

The learner run as two processes (`riverrun learn --stage join` and `--stage learn`, here side by
side in two threads) writes the very same digest.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from riverrun.schemas import KafkaSettings

from .learner_workload import run_workload

RECORDED = Path(__file__).with_name("learner_workload.sha256.json")


def test_the_learner_writes_exactly_what_it_wrote_before_its_restructuring(
    kafka_settings: KafkaSettings,
) -> None:
    digest = run_workload(kafka_settings, f"workload-{uuid.uuid4().hex[:8]}")
    assert len(digest["examples"]) == 1250
    assert {letter["headers"]["riverrun.error.class"] for letter in digest["dead_letters"]} == {
        "UnknownRequest", "DuplicateLabel", "NotJson", "InvalidEvent", "UnknownModel"}
    assert any(r["value"].get("restored_from") is not None for r in digest["models"]), (
        "the workload is meant to trip the guardrail")
    # A deliberate change of what the learner writes changes these: record the new digest with
    # `python tests/integration/learner_workload.py --bootstrap-servers HOST:PORT` and say why.
    assert digest["sha256"] == orjson.loads(RECORDED.read_bytes())


def test_a_join_stage_and_a_learn_stage_apart_write_what_one_learner_writes(
    kafka_settings: KafkaSettings,
) -> None:
    digest = run_workload(kafka_settings, f"workload-split-{uuid.uuid4().hex[:8]}", split=True)
    assert [s["examples_learned"] for s in digest["summaries"]] == [500, 300, 450]
    assert digest["sha256"] == orjson.loads(RECORDED.read_bytes())
