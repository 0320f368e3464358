"""`Deployment`: a model's route plan with a loaded snapshot behind each of its arms.

A model source hands the scorer one per model; it is immutable, and a new one replaces it
between batches, so a batch routes and scores by one policy and one set of snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from riverrun.workers.routing import RoutePlan, champion_plan
from riverrun.workers.scorer.model.protocol import ServedModel

Target = tuple[int, int | None]


@dataclass(frozen=True, slots=True)
class Deployment:
    """The plan, and the served snapshot of each answering, shadow and standby arm."""

    plan: RoutePlan
    arms: tuple[ServedModel, ...]
    shadows: tuple[ServedModel, ...] = ()
    standby: tuple[ServedModel, ...] = ()

    @classmethod
    def of(cls, plan: RoutePlan, loaded: Mapping[Target, ServedModel]) -> Deployment:
        """Assemble from a plan and a served snapshot per target (every target present)."""
        return cls(
            plan,
            tuple(loaded[arm.target] for arm in plan.arms),
            tuple(loaded[arm.target] for arm in plan.shadows),
            tuple(loaded[arm.target] for arm in plan.standby),
        )

    @classmethod
    def single(cls, model: ServedModel) -> Deployment:
        """One snapshot answering everything as champion."""
        return cls(champion_plan(model.name, model.version), (model,))

    def served(self) -> list[ServedModel]:
        """Every distinct snapshot held, answering ones first."""
        seen: dict[str, ServedModel] = {}
        for model in (*self.arms, *self.shadows, *self.standby):
            seen.setdefault(model.label, model)
        return list(seen.values())

    def by_target(self) -> dict[Target, ServedModel]:
        """The served snapshot of each target of the plan."""
        plan = self.plan
        out: dict[Target, ServedModel] = {}
        for arms, models in ((plan.arms, self.arms), (plan.shadows, self.shadows),
                             (plan.standby, self.standby)):
            for arm, model in zip(arms, models, strict=True):
                out[arm.target] = model
        return out
