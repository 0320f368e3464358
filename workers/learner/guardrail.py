"""The guardrail: a snapshot learned from suspicious data is never published.

Each snapshot interval (the examples learned since the last snapshot) is judged before its
snapshot goes out: when the interval's mean test-then-train loss exceeds the mean of the
intervals accepted so far by `ratio`, the interval is refused. A burst of flipped or garbage
labels looks exactly like that: the model predicts what it learned, the labels say otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

_BASELINE_WEIGHT = 0.3  # of the newest accepted interval in the running baseline


@dataclass
class Guardrail:
    """Accept or refuse snapshot intervals by their mean loss against a running baseline."""

    ratio: float | None = 3.0
    min_examples: int = 100
    baseline: float | None = None
    _sum: float = 0.0
    _count: int = 0

    def observe(self, loss: float) -> None:
        """Count one test-then-train loss of the current interval."""
        self._sum += loss
        self._count += 1

    def observe_many(self, losses: list[float]) -> None:
        """Count losses in order: the very sum `observe` makes, one call per batch."""
        total = self._sum
        for loss in losses:
            total += loss
        self._sum = total
        self._count += len(losses)

    @property
    def judged(self) -> bool:
        """Whether every loss observed so far was judged (and accepted)."""
        return self._count == 0

    @property
    def interval_mean(self) -> float:
        """Mean loss of the current interval (0 when empty)."""
        return self._sum / self._count if self._count else 0.0

    def verdict(self) -> str | None:
        """Judge the current interval and start the next: None to publish, else why not.

        An interval too short to judge is neither accepted nor refused: it is carried into
        the next one, so a snapshot published on a timer is judged with what came before it.
        """
        if self.ratio is None or self._count == 0:
            self._reset()
            return None
        if self._count < self.min_examples:
            return None
        mean = self.interval_mean
        count = self._count
        self._reset()
        if self.baseline is None:
            self.baseline = mean
            return None
        # A loss near zero makes any ratio trip: judge against a floor of 0.05 nats.
        bound = max(self.baseline, 0.05) * self.ratio
        if mean > bound:
            return (f"mean loss {mean:.4f} over the last {count} examples is more than "
                    f"{self.ratio:g}x the accepted {self.baseline:.4f}")
        self.baseline = (1 - _BASELINE_WEIGHT) * self.baseline + _BASELINE_WEIGHT * mean
        return None

    def _reset(self) -> None:
        self._sum = 0.0
        self._count = 0
