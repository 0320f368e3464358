"""A synthetic stream where every key has a concept of its own: what per-key models are for.

Each key (`user-0`, `user-1`, ...) has its own logistic coefficients: a part every key shares
plus a part of its own, larger than the shared one. A global model can learn only the shared
part; a key's own model can learn the rest from that key's labels. The keys' concepts come from
`concepts` (the same whatever `seed` draws the rows), so streams of other seeds, a warm start's
and a replay's, are of the same keys; the same arguments give the same stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

KeyedRow = tuple[str, dict[str, float], bool]


def keyed_concepts(
    keys: int, length: int, *, features: int = 5, seed: int = 7, own_scale: float = 2.0,
    concepts: int = 7,
) -> Iterator[KeyedRow]:
    """`length` rows `(key, features, label)`, keys drawn uniformly from `keys` of them.

    A key's coefficients are the shared ones (each N(0, 1)) plus its own (each N(0, own_scale));
    a row's features are N(0, 1), its label True with probability sigmoid(coefficients . x).
    """
    drawn = random.Random(concepts)
    names = [f"x{i}" for i in range(features)]
    shared = [drawn.gauss(0.0, 1.0) for _ in names]
    coefficients = [[s + drawn.gauss(0.0, own_scale) for s in shared] for _ in range(keys)]
    rng = random.Random(seed)
    for _ in range(length):
        k = rng.randrange(keys)
        x = [rng.gauss(0.0, 1.0) for _ in names]
        z = sum(w * v for w, v in zip(coefficients[k], x, strict=True))
        p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        yield f"user-{k}", dict(zip(names, x, strict=True)), rng.random() < p
