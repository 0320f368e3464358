"""HMAC-SHA256 signatures of model artifacts, so a loader trusts only bytes a key-holder wrote."""

from __future__ import annotations

import hashlib
import hmac


class Signer:
    """Signs and verifies bytes with one shared secret key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key must not be empty")
        self._key = bytes(key)

    def sign(self, data: bytes) -> str:
        """The HMAC-SHA256 of `data`, as lowercase hex."""
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def verify(self, data: bytes, signature: str) -> bool:
        """Whether `signature` is this key's signature of `data` (constant-time comparison)."""
        try:
            given = signature.strip().lower().encode("ascii")
        except (AttributeError, UnicodeEncodeError):
            return False
        return hmac.compare_digest(self.sign(data).encode("ascii"), given)

    def __repr__(self) -> str:
        return "Signer(key=**********)"
