"""riverrun's error tree and what the loop does with each kind.

    RiverrunError
    ├── DeadLetterError      the record is bad: dead-letter it and continue
    │   (schemas.DecodeError is translated into one at the boundary)
    ├── RetryableError       a passing fault: retry within a bound, then stop
    ├── ConfigurationError   bad settings: refuse to start, naming the setting
    └── FatalError           cannot go on safely: stop without committing, exit non-zero

An exception nobody classified is a bug: the loop stops without committing and the process
exits non-zero, so the orchestrator restarts it and nothing is skipped.
"""

from __future__ import annotations

from enum import Enum


class Disposition(Enum):
    """What the loop does with an error."""

    DEAD_LETTER = "dead-letter and continue"
    RETRY = "retry within a bound"
    STOP = "stop without committing"


class RiverrunError(Exception):
    """Root of every error riverrun raises on purpose."""

    disposition = Disposition.STOP


class DeadLetterError(RiverrunError):
    """A record that cannot be processed; its bytes go to the dead-letter topic."""

    disposition = Disposition.DEAD_LETTER

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


class RetryableError(RiverrunError):
    """A fault expected to pass (broker unreachable, leader moving)."""

    disposition = Disposition.RETRY


class ConfigurationError(RiverrunError):
    """A setting is missing or wrong; the message names it and says what to do."""


class FatalError(RiverrunError):
    """Going on could lose or duplicate data (delivery failed for good, producer fenced)."""
