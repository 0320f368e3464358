"""Routing: which version of a model answers each request, sticky by the request's key."""

from __future__ import annotations

from workers.routing.canary import CanarySchedule
from workers.routing.plan import Arm, PolicyError, RoutePlan, champion_plan, plan_for
from workers.routing.position import KeyHasher

__all__ = [
    "Arm",
    "CanarySchedule",
    "KeyHasher",
    "PolicyError",
    "RoutePlan",
    "champion_plan",
    "plan_for",
]
