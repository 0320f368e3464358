"""What every worker process needs, knowing no role.

Kafka plumbing, broker contact, health, metrics collectors, logging, crash points, start-up
waits and the error tree.
"""

from __future__ import annotations

__all__: list[str] = []
