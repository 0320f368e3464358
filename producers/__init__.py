"""riverrun's client side: the upstream client library, dataset replay and load generation."""

from __future__ import annotations

__all__: list[str] = []
