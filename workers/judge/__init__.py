"""The judge: outcomes per version, the statistics of each policy, and its decisions."""

from __future__ import annotations

__all__: list[str] = []
