"""riverrun's server side: scorer, learner, judge, registry, routing, metrics and the CLI."""

from __future__ import annotations

__all__: list[str] = []
