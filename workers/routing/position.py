"""Where a request key falls in [0, 1): a stable, salted hash that routing compares to weights.

The same key always lands on the same point (for one model), in every process and language
that computes BLAKE2b: that is what makes routing sticky. The model name salts the hash, so
that the keys a canary takes for one model are not the same keys it takes for another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# 53 bits fill a float64's mantissa exactly, so every point is a multiple of 2**-53 below 1.
_MANTISSA_SHIFT = np.uint64(11)
_SCALE = 2.0**-53


class KeyHasher:
    """Positions of request keys in [0, 1) for one model (the salt)."""

    __slots__ = ("_seed",)

    def __init__(self, salt: str) -> None:
        # A keyed BLAKE2b is set up once; each key then costs one copy and one block.
        self._seed = hashlib.blake2b(digest_size=8, key=salt.encode()[:64])

    def position_one(self, key: bytes) -> float:
        """The point of one key."""
        h = self._seed.copy()
        h.update(key)
        return (int.from_bytes(h.digest(), "little") >> 11) * _SCALE

    def position_many(self, keys: Sequence[bytes]) -> npt.NDArray[np.float64]:
        """The points of many keys, as one array (the batch's order)."""
        copy = self._seed.copy
        digests: list[bytes] = []
        append = digests.append
        for key in keys:
            h = copy()
            h.update(key)
            append(h.digest())
        raw = np.frombuffer(b"".join(digests), dtype="<u8")
        return (raw >> _MANTISSA_SHIFT).astype(np.float64) * _SCALE
