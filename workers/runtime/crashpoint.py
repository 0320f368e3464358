"""Named crash points: fault injection that kills the process at a chosen dangerous moment.

`RIVERRUN_SCORER__CRASH_AT=after-produce-before-commit:3` makes the scorer SIGKILL itself the
third time it reaches that point, so a test hits each window on purpose instead of by luck.
Off unless configured; a disabled point costs one attribute read.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

SCORER_POINTS = frozenset(
    {
        "after-consume",  # records fetched, nothing produced
        "after-produce-before-commit",  # outputs handed to the producer, offsets not committed
        "after-commit",  # batch committed (transaction or stored offsets), next not started
    }
)

LEARNER_POINTS = frozenset(
    {
        "after-join-before-commit",  # examples and outcomes produced, join transaction open
        "after-learn-before-snapshot",  # examples learned in memory, no snapshot published
        "after-keys-before-snapshot",  # a per-key version's keys written, its snapshot not
        "after-snapshot-before-commit",  # snapshot published, the batch's join not committed
        "after-commit",  # join transaction committed, next batch not started
    }
)


class CrashPoints:
    """Counts hits of the configured point and kills the process at the n-th."""

    def __init__(self, spec: str | None, known: frozenset[str] = SCORER_POINTS) -> None:
        self.enabled = bool(spec)
        self._point = ""
        self._at = 0
        self._hits = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in known:
                raise ValueError(
                    f"crash point {point!r} is unknown: use one of {', '.join(sorted(known))}"
                )
            self._point = point
            self._at = int(count or "1")
            if self._at < 1:
                raise ValueError(f"crash point count must be 1 or more, got {count!r}")

    def hit(self, point: str) -> None:
        """Record a pass through `point`; SIGKILL this process at the configured hit."""
        if point != self._point:
            return
        self._hits += 1
        if self._hits >= self._at:
            logger.warning("crash point %s reached (hit %d): killing this process",
                           point, self._hits)  # fmt: skip
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
