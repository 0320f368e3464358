"""A canary's weight as a pure function of time: its first weight, then each step in turn."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from riverrun.schemas import CanaryStep


class CanarySchedule:
    """The canary's share of traffic over time, from the policy's decision time on."""

    __slots__ = ("_starts", "_weights", "_initial", "_origin")

    def __init__(self, initial: float, steps: Sequence[CanaryStep], origin: float) -> None:
        """Build from the canary's first weight, its steps and the policy's decision time.

        Raises:
            ValueError: a step lowers the weight (a canary only ever grows, so that keys move
                from the champion to the canary and never back).

        """
        ordered = sorted(steps, key=lambda step: step.after_s)
        previous = initial
        for step in ordered:
            if step.weight < previous:
                raise ValueError(
                    f"canary schedule step to {step.weight:g} at {step.after_s:g}s lowers the "
                    f"weight from {previous:g}: steps may only raise it"
                )
            previous = step.weight
        self._initial = initial
        self._starts = [step.after_s for step in ordered]
        self._weights = [step.weight for step in ordered]
        self._origin = origin

    def weight_at(self, now: float) -> float:
        """The canary's weight at Unix time `now`."""
        index = bisect.bisect_right(self._starts, now - self._origin)
        return self._weights[index - 1] if index else self._initial

    def next_change(self, now: float) -> float | None:
        """Unix time of the next step after `now`, None when the schedule is done."""
        index = bisect.bisect_right(self._starts, now - self._origin)
        return self._origin + self._starts[index] if index < len(self._starts) else None
