"""A version's signature: the features it expects, inferred from the rows it first learned.

A feature seen only as numbers is a `number`, only as strings a `category`; one seen as both is
left out (nothing is checked for it). A feature present in every row is required, one missing
from some is optional. A spec may declare its features instead (`features:` in the spec file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from riverrun.schemas import FeatureSignature, Signature


class SignatureInference:
    """Watches rows go by and says what they had in common."""

    def __init__(self) -> None:
        self.rows = 0
        self._present: dict[str, int] = {}
        self._kinds: dict[str, set[str]] = {}

    def observe(self, row: Mapping[str, Any]) -> None:
        """Count one row's features and their kinds."""
        self.rows += 1
        for name, value in row.items():
            if value is None:
                continue
            self._present[name] = self._present.get(name, 0) + 1
            kind = "category" if isinstance(value, str) else "number"
            self._kinds.setdefault(name, set()).add(kind)

    def features(self) -> list[FeatureSignature]:
        """The features of one kind each, in the order they were first seen."""
        return [
            FeatureSignature(name=name, kind=next(iter(kinds)),
                             required=self._present[name] == self.rows)
            for name, kinds in self._kinds.items() if len(kinds) == 1
        ]  # fmt: skip


def infer_signature(rows: Iterable[Mapping[str, Any]], label_type: str) -> Signature:
    """The signature rows have in common, with the label type of their model."""
    inference = SignatureInference()
    for row in rows:
        inference.observe(row)
    return Signature.model_validate({"features": inference.features(), "label_type": label_type})
