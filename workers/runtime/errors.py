"""riverrun's error tree, and what a worker does with each kind.

    RiverrunError            stop without committing, exit non-zero
    ├── RetryableError       a passing fault: retry within a bound, then stop
    ├── ConfigurationError   bad settings: refuse to start, naming the setting (exit 2)
    └── FatalError           cannot go on safely: stop without committing, exit non-zero

A record that cannot be read is not an error of this tree: the codec raises
`riverrun.schemas.DecodeError`, which keeps the raw bytes, and the record is dead-lettered with
its class and reason while the rest of its batch goes on. An exception nobody classified is a
bug: the loop stops without committing and the process exits non-zero, so the orchestrator
restarts it and nothing is skipped.
"""

from __future__ import annotations


class RiverrunError(Exception):
    """Root of every error riverrun raises on purpose."""


class RetryableError(RiverrunError):
    """A fault expected to pass (broker unreachable, leader moving)."""


class ConfigurationError(RiverrunError):
    """A setting is missing or wrong; the message names it and says what to do."""


class PortInUse(ConfigurationError):
    """A port this process must listen on is taken."""

    def __init__(self, port: int, setting: str) -> None:
        super().__init__(
            f"port {port} ({setting}) is in use: choose another, or stop what listens on it"
        )


class FatalError(RiverrunError):
    """Going on could lose or duplicate data (delivery failed for good, producer fenced)."""
