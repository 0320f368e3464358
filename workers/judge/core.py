"""`Judge`: the judge's state and decisions with no I/O: outcomes in, policy records out.

The faust app (`workers/judge/app.py`) feeds it batches of outcomes, dead letters and shadow
predictions, hands it every policy it reads on the `models` topic, and publishes what
`decide` returns. Its evidence lives in a mapping the caller owns (a changelog-backed table in
the app, a dict in tests), so the judge's memory survives a restart with the table.

A race's evidence comes from the learner, not from outcomes: each candidate's snapshots carry
its losses paired with the champion's (`observe_snapshot`). Only the newest per version is
kept, in memory: the counts are cumulative, and the registry follower reads the compacted
`models` topic from its beginning at every start, so a restarted judge has them back before
it decides (storing them in the evidence table as well would keep a second copy of the
registry's truth).

An outcome counts in the experiment its prediction was served in: one scored before the
current policy's experiment began (`OutcomeRecorded.scored_at` before `experiment_began_at`)
is left out, so a canary deployed after hours of champion traffic is judged on the champion's
outcomes since the canary began, not on a backlog of labels for older predictions. Outcomes
without `scored_at` (from producers older than the field) are counted, as they always were.

Decisions are idempotent: the judge decides at most once per policy sequence it has seen (the
next decision waits for its previous one to come back on the `models` topic), and a decision
carries the next sequence, which a registry view applies once however often it arrives.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from riverrun.schemas import (
    DriftDetected,
    OutcomeRecorded,
    PolicyChanged,
    PredictionMade,
    SnapshotPublished,
)
from riverrun.schemas.loss import outcome_loss
from riverrun.workers.judge.decision import (
    assess,
    champion_of,
    decide,
    race_candidates,
    restart_race,
)
from riverrun.workers.judge.evidence import (
    PairedEvidence,
    Tally,
    VersionEvidence,
    evidence_key,
    evidence_of,
    is_correct,
)
from riverrun.workers.routing import PolicyError, plan_for

logger = logging.getLogger(__name__)


def scored_before(scored_at: datetime | None, began: datetime) -> bool:
    """Whether a prediction was made before an experiment began (unknown: it was not).

    A time without a zone is taken as UTC, the zone every worker writes.
    """
    if scored_at is None:
        return False
    return _as_utc(scored_at) < _as_utc(began)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class ShadowJoin:
    """Shadow predictions waiting for their request's label, bounded by count (oldest out)."""

    def __init__(self, max_pending: int = 200_000) -> None:
        self._pending: OrderedDict[str, list[PredictionMade]] = OrderedDict()
        self._max = max_pending

    def add(self, prediction: PredictionMade) -> None:
        """Hold a shadow prediction until its label arrives."""
        held = self._pending.get(prediction.request_id)
        if held is None:
            self._pending[prediction.request_id] = [prediction]
            while len(self._pending) > self._max:
                self._pending.popitem(last=False)
        else:
            held.append(prediction)

    def take(self, request_id: str) -> list[PredictionMade]:
        """The shadow predictions of a request, removed."""
        return self._pending.pop(request_id, [])

    def __len__(self) -> int:
        return len(self._pending)


class Judge:
    """Evidence per (model, experiment, version), the current policies, and decisions."""

    def __init__(
        self,
        store: MutableMapping[str, Any] | None = None,
        *,
        effect: float = 0.1,
        draws: int = 4000,
        seed: int | None = None,
        bandit_interval_s: float = 10.0,
        max_pending_shadows: int = 200_000,
        lineage_key: str | None = None,
    ) -> None:
        """`lineage_key` names the examples log in snapshots' lineage (`<examples topic>:0`)."""
        self.store: MutableMapping[str, Any] = store if store is not None else {}
        self.effect = effect
        self.draws = draws
        self.bandit_interval_s = bandit_interval_s
        self.shadows = ShadowJoin(max_pending_shadows)
        self._rng = np.random.default_rng(seed)
        self._policies: dict[str, PolicyChanged] = {}
        self._decided: dict[str, int] = {}
        self._last_reweight: dict[str, float] = {}
        self._last_decision: dict[str, PolicyChanged] = {}
        self._observed = 0
        self.lineage_key = lineage_key
        self._paired: dict[tuple[str, int], PairedEvidence] = {}
        self._before_experiment: dict[str, int] = {}
        self._drifts: dict[str, DriftDetected] = {}  # the champion's, newest per model
        self._reached: dict[str, int] = {}  # the furthest examples offset any snapshot learned

    # -- inputs ------------------------------------------------------------------------------

    def observe_policy(self, policy: PolicyChanged) -> bool:
        """Take a policy read from the registry; return whether it is newer than the one held."""
        current = self._policies.get(policy.model)
        if current is not None and current.sequence >= policy.sequence:
            return False
        self._policies[policy.model] = policy
        if policy.decided_by == "judge":
            self._last_decision[policy.model] = policy
        return True

    def policy(self, model: str) -> PolicyChanged | None:
        """The newest policy seen for a model."""
        return self._policies.get(model)

    def experiment_of(self, model: str) -> int:
        """The experiment outcomes of this model count towards now (0 before any policy)."""
        policy = self._policies.get(model)
        return policy.experiment_id if policy is not None else 0

    def observe_snapshot(self, snapshot: SnapshotPublished) -> bool:
        """Keep a version's newest paired evidence; return whether it replaced what was held.

        A snapshot without paired losses (a champion's, a version learning alone) changes
        nothing, and neither does one older than the snapshot held.
        """
        lineage = snapshot.lineage
        reached = (lineage.get(self.lineage_key) if self.lineage_key is not None
                   else max(lineage.values(), default=None))  # fmt: skip
        if reached is not None and reached > self._reached.get(snapshot.model, -1):
            self._reached[snapshot.model] = reached
        found = PairedEvidence.from_snapshot(snapshot, self.lineage_key)
        if found is None:
            return False
        key = (snapshot.model, snapshot.version)
        held = self._paired.get(key)
        if held is not None and held.snapshot >= found.snapshot:
            return False
        self._paired[key] = found
        return True

    def observe_drift(self, drift: DriftDetected) -> None:
        """Hold a rise of a version's learning loss: a race's champion's restarts its evidence."""
        if drift.stream != "learning":
            return
        if drift.mean_loss_before is not None and drift.mean_loss <= drift.mean_loss_before:
            return  # the loss fell: the version learned, the concept did not move away
        held = self._drifts.get(drift.model)
        if held is None or _as_utc(drift.detected_at) > _as_utc(held.detected_at):
            self._drifts[drift.model] = drift

    def _drift_restarts(self, policy: PolicyChanged) -> DriftDetected | None:
        """The champion's drift detected since the race's experiment began, if any."""
        drift = self._drifts.get(policy.model)
        if (policy.strategy != "race" or drift is None
                or drift.version != champion_of(policy).version):
            return None
        if _as_utc(drift.detected_at) <= _as_utc(policy.experiment_began_at):
            return None
        return drift

    def observe_outcomes(self, outcomes: Iterable[OutcomeRecorded]) -> int:
        """Count a batch of outcomes, and the shadow predictions their labels settle.

        Predictions made before the current experiment began are counted apart
        (`outcomes_before_experiment` in `state`), never as its evidence. Returns the outcomes
        read.
        """
        tally = Tally()
        count = 0
        for outcome in outcomes:
            count += 1
            policy = self._policies.get(outcome.model)
            experiment = policy.experiment_id if policy is not None else 0
            shadows = self.shadows.take(outcome.request_id)
            if policy is not None and scored_before(outcome.scored_at, policy.experiment_began_at):
                self._count_before(outcome.model, 1 + len(shadows))
                continue
            tally.add_outcome(evidence_key(outcome.model, experiment, outcome.version),
                              is_correct(outcome.prediction, outcome.label), outcome.loss)
            for shadow in shadows:
                if policy is not None and scored_before(shadow.scored_at,
                                                        policy.experiment_began_at):
                    self._count_before(shadow.model, 1)
                    continue
                loss = outcome_loss(shadow.prediction, shadow.proba, outcome.label)
                tally.add_outcome(evidence_key(shadow.model, experiment, shadow.version),
                                  is_correct(shadow.prediction, outcome.label), loss)
        tally.write(self.store)
        self._observed += count
        return count

    def _count_before(self, model: str, count: int) -> None:
        self._before_experiment[model] = self._before_experiment.get(model, 0) + count

    def observe_errors(self, failures: Iterable[tuple[str, int]]) -> int:
        """Count requests that versions failed on, as (model, version) pairs."""
        tally = Tally()
        count = 0
        for model, version in failures:
            tally.add_error(evidence_key(model, self.experiment_of(model), version))
            count += 1
        tally.write(self.store)
        return count

    def observe_shadow_predictions(self, predictions: Iterable[PredictionMade]) -> None:
        """Hold shadow predictions until the labels of their requests arrive as outcomes."""
        for prediction in predictions:
            self.shadows.add(prediction)

    # -- decisions ---------------------------------------------------------------------------

    def evidence(self, policy: PolicyChanged) -> dict[int, VersionEvidence]:
        """The evidence of the versions a policy names, in its experiment."""
        versions = sorted({a.version for a in policy.assignments})
        return evidence_of(self.store, policy.model, policy.experiment_id, versions)

    def paired(self, policy: PolicyChanged) -> dict[int, PairedEvidence]:
        """A race's candidates' paired evidence in its experiment, against its champion.

        A candidate whose newest snapshot counts in another experiment, or against another
        champion (the learner has not taken the policy up yet), has none.
        """
        champion = champion_of(policy).version
        out = {}
        for candidate in race_candidates(policy):
            found = self._paired.get((policy.model, candidate.version))
            if found is not None and found.counts_in(policy.experiment_id, champion):
                out[candidate.version] = found
        return out

    def decide(self, now: datetime, monotonic: float | None = None) -> list[PolicyChanged]:
        """One decision at most per model whose policy calls for one, at most once per sequence."""
        clock = time.monotonic() if monotonic is None else monotonic
        decisions = []
        for model, policy in sorted(self._policies.items()):
            if self._decided.get(model) == policy.sequence:
                continue
            if policy.strategy == "bandit":
                last = self._last_reweight.get(model)
                if last is not None and clock - last < self.bandit_interval_s:
                    continue
                self._last_reweight[model] = clock
            drift = self._drift_restarts(policy)
            if drift is not None:
                decision: PolicyChanged | None = restart_race(
                    policy, now, f"{drift.detector} detected a drift of champion "
                    f"{model}@{drift.version}'s learning loss (recent mean "
                    f"{drift.mean_loss:.4g}) after {drift.position} losses",
                    self._reached.get(model, policy.examples_from),
                )  # fmt: skip
            else:
                decision = decide(policy, self.evidence(policy), now=now, rng=self._rng,
                                  effect=self.effect, draws=self.draws,
                                  paired=self.paired(policy))  # fmt: skip
            if decision is None:
                continue
            self._decided[model] = policy.sequence
            self._last_decision[model] = decision
            decisions.append(decision)
            logger.info("decision for %s #%d: %s", model, decision.sequence, decision.reason)
        return decisions

    # -- status ------------------------------------------------------------------------------

    def state(
        self, now: datetime, recent: Mapping[tuple[str, int], int] | None = None
    ) -> dict[str, Any]:
        """What `riverrun models status` shows: per model its policy, shares and evidence."""
        models: dict[str, Any] = {}
        for model, policy in sorted(self._policies.items()):
            evidence = self.evidence(policy)
            try:
                plan = plan_for(policy, model, None)
                shares = plan.describe(now.timestamp()) if plan is not None else []
            except (PolicyError, ValueError) as exc:
                shares = [{"error": str(exc)}]
            total = sum(e.n for e in evidence.values())
            recent_total = sum((recent or {}).get((model, v), 0) for v in evidence)
            versions = {}
            for version, ev in sorted(evidence.items()):
                row: dict[str, Any] = {
                    "n": ev.n, "errors": ev.errors, "accuracy": ev.correct.mean,
                    "mean_loss": ev.loss.mean,
                    "observed_share": ev.n / total if total else 0.0,
                }  # fmt: skip
                if recent is not None:
                    n_recent = recent.get((model, version), 0)
                    row["recent_n"] = n_recent
                    row["recent_share"] = n_recent / recent_total if recent_total else 0.0
                versions[str(version)] = row
            last = self._last_decision.get(model)
            models[model] = {
                "policy": {
                    "sequence": policy.sequence, "strategy": policy.strategy,
                    "experiment": policy.experiment_id,
                    "experiment_began": policy.experiment_began_at.isoformat(),
                    "examples_from": policy.examples_from, "metric": policy.metric,
                    "margin": policy.margin, "alpha": policy.alpha,
                    "min_samples": policy.min_samples, "hypothesis": policy.hypothesis,
                    "decided_by": policy.decided_by, "reason": policy.reason,
                },
                "routes": shares,
                "versions": versions,
                "outcomes_before_experiment": self._before_experiment.get(model, 0),
                "comparisons": assess(policy, evidence, effect=self.effect,
                                      paired=self.paired(policy)),
                "last_decision": last.model_dump(mode="json") if last is not None else None,
            }  # fmt: skip
        return {"at": now.isoformat(), "outcomes_observed": self._observed,
                "outcomes_before_experiment": sum(self._before_experiment.values()),
                "pending_shadow_predictions": len(self.shadows), "models": models}
