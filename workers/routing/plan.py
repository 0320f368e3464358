"""A model's policy compiled for the hot path: which version answers each request, and why.

`plan_for` turns a `PolicyChanged` (or no policy: the model's first live version, the
registry view's `default_version`, answers as champion; a release takes no traffic until a
policy names it) into a `RoutePlan`. The plan splits [0, 1) into one interval per answering
version, in a fixed order, and a request goes to the interval its key's position falls in
(`KeyHasher`). So a key stays on one version while the weights stay put, and a canary, whose
interval starts at 0, only ever takes keys from the champion as it grows, never gives them
back.

Routes, as predictions carry them:

    single       champion
    shadow       champion answers; the others score the same requests as `shadow`
    canary       canary | champion
    ab, bandit   arm-0, arm-1, ... (the assignments' order)
    blue-green   blue or green, whichever holds the weight; the other stays loaded (standby)
    race         champion; the candidates only learn (the learner compares them), never score

An assignment whose role is `shadow` scores in shadow under any strategy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from riverrun.schemas import PolicyAssignment, PolicyChanged
from riverrun.workers.routing.canary import CanarySchedule
from riverrun.workers.routing.position import KeyHasher


class PolicyError(ValueError):
    """A policy that cannot be routed; the message says which assignment is missing or wrong."""


@dataclass(frozen=True, slots=True)
class Arm:
    """A version (and pinned snapshot, or None for its latest) with the route it serves under."""

    version: int
    snapshot: int | None
    route: str

    @property
    def target(self) -> tuple[int, int | None]:
        """What must be loaded to serve this arm."""
        return (self.version, self.snapshot)


class RoutePlan:
    """Answering arms with their weights, shadow arms, and standby arms of one model's policy."""

    __slots__ = (
        "model", "strategy", "sequence", "arms", "shadows", "standby", "_weights", "_schedule",
        "_hasher", "_edges", "_valid_until",
    )  # fmt: skip

    def __init__(
        self,
        model: str,
        strategy: str,
        sequence: int,
        arms: Sequence[Arm],
        weights: Sequence[float],
        *,
        shadows: Sequence[Arm] = (),
        standby: Sequence[Arm] = (),
        schedule: CanarySchedule | None = None,
    ) -> None:
        if not arms or len(arms) != len(weights):
            raise PolicyError(f"{model}: a plan needs one weight per answering version")
        self.model = model
        self.strategy = strategy
        self.sequence = sequence
        self.arms = tuple(arms)
        self.shadows = tuple(shadows)
        self.standby = tuple(standby)
        self._weights = tuple(float(w) for w in weights)
        self._schedule = schedule
        self._hasher = KeyHasher(model)
        self._edges: npt.NDArray[np.float64] = np.ones(1)
        self._valid_until = -math.inf

    # -- queries -----------------------------------------------------------------------------

    def targets(self) -> list[tuple[int, int | None]]:
        """Every (version, pinned snapshot) this plan needs loaded, answering ones first."""
        seen: dict[tuple[int, int | None], None] = {}
        for arm in (*self.arms, *self.shadows, *self.standby):
            seen.setdefault(arm.target, None)
        return list(seen)

    def weights_at(self, now: float) -> tuple[float, ...]:
        """Each answering arm's share of traffic at Unix time `now` (they sum to 1)."""
        weights = self._weights
        if self._schedule is not None:
            canary = self._schedule.weight_at(now)
            weights = (canary, 1.0 - canary)
        total = sum(weights)
        if total <= 0.0:
            return tuple(1.0 / len(weights) for _ in weights)
        return tuple(w / total for w in weights)

    def assign_many(self, keys: Sequence[bytes], now: float) -> npt.NDArray[np.intp] | None:
        """The arm index of each key; None when one arm answers everything (nothing hashed)."""
        if len(self.arms) == 1:
            return None
        edges = self._edges_at(now)
        return np.searchsorted(edges, self._hasher.position_many(keys), side="right")

    def _edges_at(self, now: float) -> npt.NDArray[np.float64]:
        if now < self._valid_until:
            return self._edges
        edges = np.cumsum(self.weights_at(now))
        # The last edge is exactly 1, so every position in [0, 1) lands on some arm.
        edges[-1] = 1.0
        self._edges = edges
        change = self._schedule.next_change(now) if self._schedule is not None else None
        self._valid_until = change if change is not None else math.inf
        return edges

    def describe(self, now: float) -> list[dict[str, object]]:
        """Each arm with its route and share, for logs and status."""
        rows: list[dict[str, object]] = [
            {"version": arm.version, "snapshot": arm.snapshot, "route": arm.route, "weight": w}
            for arm, w in zip(self.arms, self.weights_at(now), strict=True)
        ]
        rows += [{"version": a.version, "snapshot": a.snapshot, "route": a.route, "weight": 0.0}
                 for a in (*self.shadows, *self.standby)]
        return rows


def champion_plan(model: str, version: int) -> RoutePlan:
    """No policy: the given (default) version's latest snapshot answers everything."""
    return RoutePlan(model, "single", 0, [Arm(version, None, "champion")], [1.0])


def plan_for(
    policy: PolicyChanged | None, model: str, default_version: int | None
) -> RoutePlan | None:
    """Compile a model's policy; None when there is neither a policy nor a release.

    With no policy `default_version` (`RegistryView.default_version`: the first live version,
    not the latest release) answers as champion.

    Raises:
        PolicyError: the policy lacks an assignment its strategy needs.

    """
    if policy is None:
        return champion_plan(model, default_version) if default_version is not None else None
    shadows = [_arm(a, "shadow") for a in policy.assignments if a.role == "shadow"]
    live = [a for a in policy.assignments if a.role != "shadow"]
    strategy = policy.strategy
    seq = policy.sequence
    if strategy == "race":
        champion = _champion(policy, live)
        return RoutePlan(model, strategy, seq, [_arm(champion, "champion")], [1.0],
                         shadows=shadows)
    if strategy in ("single", "shadow"):
        champion = _champion(policy, live)
        if strategy == "shadow":
            shadows += [_arm(a, "shadow") for a in live if a is not champion]
            if not shadows:
                raise PolicyError(f"{model}: a shadow policy needs a version to shadow")
        return RoutePlan(model, strategy, seq, [_arm(champion, "champion")], [1.0],
                         shadows=shadows)
    if strategy == "canary":
        champion = _champion(policy, live)
        canaries = [a for a in live if a.role in ("canary", "challenger") and a is not champion]
        if len(canaries) != 1:
            raise PolicyError(f"{model}: a canary policy needs exactly one canary besides the "
                              f"champion, not {len(canaries)}")
        canary = canaries[0]
        schedule = CanarySchedule(canary.weight, policy.schedule, policy.decided_at.timestamp())
        return RoutePlan(model, strategy, seq, [_arm(canary, "canary"), _arm(champion, "champion")],
                         [canary.weight, 1.0 - canary.weight], shadows=shadows, schedule=schedule)
    if strategy in ("ab", "bandit"):
        if len(live) < 2:
            raise PolicyError(f"{model}: an {strategy} policy needs two or more versions")
        if sum(a.weight for a in live) <= 0.0:
            raise PolicyError(f"{model}: the weights of an {strategy} policy sum to zero")
        return RoutePlan(model, strategy, seq, [_arm(a, f"arm-{i}") for i, a in enumerate(live)],
                         [a.weight for a in live], shadows=shadows)
    # blue-green: the colour with the weight answers, the other stays loaded for a switch back.
    blue = [a for a in live if a.role == "blue"]
    green = [a for a in live if a.role == "green"]
    if len(blue) != 1 or len(green) != 1:
        raise PolicyError(f"{model}: a blue-green policy needs one blue and one green version")
    serving, idle = (green[0], blue[0]) if green[0].weight > blue[0].weight else (blue[0], green[0])
    return RoutePlan(model, strategy, seq, [_arm(serving, serving.role)], [1.0], shadows=shadows,
                     standby=[_arm(idle, idle.role)])


def _champion(policy: PolicyChanged, live: list[PolicyAssignment]) -> PolicyAssignment:
    for assignment in live:
        if assignment.role == "champion":
            return assignment
    if policy.strategy in ("single", "shadow") and live:
        return live[0]
    raise PolicyError(f"{policy.model}: a {policy.strategy} policy needs a champion")


def _arm(assignment: PolicyAssignment, route: str) -> Arm:
    return Arm(assignment.version, assignment.snapshot, route)
