"""The scorer: the consumer-group worker that scores requests in mini-batches.

`loop.py` does the I/O, `batch.py` is its pure core; `model/` holds the models it serves.
"""

from __future__ import annotations

__all__: list[str] = []
