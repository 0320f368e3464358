"""Routing: which version of a model answers each request, sticky by the request's key."""

from __future__ import annotations

from riverrun.workers.routing.canary import CanarySchedule
from riverrun.workers.routing.plan import Arm, PolicyError, RoutePlan, champion_plan, plan_for
from riverrun.workers.routing.position import KeyHasher

__all__ = [
    "Arm",
    "CanarySchedule",
    "KeyHasher",
    "PolicyError",
    "RoutePlan",
    "champion_plan",
    "plan_for",
]
