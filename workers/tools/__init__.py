"""Commands that are not workers: benchmarks, the demo, training, schema export and `top`."""

from __future__ import annotations

__all__: list[str] = []
