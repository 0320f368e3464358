"""Make a served snapshot read-only where River mutates while predicting.

Many River estimators keep state in `defaultdict`s, and reading an unseen key inserts it:
`StandardScaler.transform_one` with a feature it never learned adds that feature to `vars`.
A scorer's copy would then drift from the learner's (see PITFALLS: scoring must not change the
model). The scorer never learns, so its copy's defaultdicts can answer a miss with a fresh
default without storing it: same answers, no mutation.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

_MAX_DEPTH = 12


class ReadOnlyDefaultDict(defaultdict):  # type: ignore[type-arg]  # mirrors the dict it replaces
    """A defaultdict whose misses return a default without inserting it."""

    def __missing__(self, key: Any) -> Any:
        if self.default_factory is None:
            raise KeyError(key)
        return self.default_factory()

    def __reduce__(self) -> Any:
        return (type(self), (self.default_factory,), None, None, iter(self.items()))


def _freeze(value: Any, seen: set[int], depth: int) -> Any:
    if depth > _MAX_DEPTH or id(value) in seen:
        return value
    seen.add(id(value))
    if type(value) is defaultdict:
        frozen = ReadOnlyDefaultDict(value.default_factory)
        for key, item in value.items():
            frozen[key] = _freeze(item, seen, depth + 1)
        return frozen
    if isinstance(value, dict):
        for key, item in list(value.items()):
            replaced = _freeze(item, seen, depth + 1)
            if replaced is not item:
                value[key] = replaced
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = _freeze(item, seen, depth + 1)
        return value
    module = type(value).__module__
    if module.startswith("river.") and hasattr(value, "__dict__"):
        for name, item in list(vars(value).items()):
            replaced = _freeze(item, seen, depth + 1)
            if replaced is not item:
                setattr(value, name, replaced)
    return value


def freeze_for_scoring(estimator: Any) -> Any:
    """Swap every plain defaultdict inside a River estimator for a non-inserting one, in place."""
    return _freeze(estimator, set(), 0)
