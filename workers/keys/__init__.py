"""Per-key models: a copy of a version's pipeline per request key, the global model as fallback.

`model` holds the pure part (a key's learned state, the blend, test-then-train per key);
`changelog` the compacted topic the learner writes each key's state to and everyone reads;
`learning` a per-key version's keys in the learner. The scorer's side (the store of keys it
follows, the cache of live models, the blend into a batch) is `scorer.model.keys`.
"""

from __future__ import annotations

from riverrun.workers.keys.changelog import (
    KeyStateCounts,
    KeyStateWriter,
    StoredKeyState,
    read_states,
)
from riverrun.workers.keys.model import KeyModel, KeyModels, blend, request_key, weight

__all__ = [
    "KeyModel",
    "KeyModels",
    "KeyStateCounts",
    "KeyStateWriter",
    "StoredKeyState",
    "blend",
    "read_states",
    "request_key",
    "weight",
]
