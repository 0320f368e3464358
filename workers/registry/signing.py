"""HMAC-SHA256 signatures of model artifacts, so a loader trusts only bytes a key-holder wrote.

A signature may be bound to a subject (a snapshot's `model@version#snapshot`) as well as the
bytes: the same bytes then verify only as that subject, so an old artifact cannot be replayed
under a new snapshot record.
"""

from __future__ import annotations

import hashlib
import hmac


class Signer:
    """Signs and verifies bytes with one shared secret key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key must not be empty")
        self._key = bytes(key)

    def sign(self, data: bytes, subject: str | None = None) -> str:
        """The HMAC-SHA256 of `data` (bound to `subject` when given), as lowercase hex."""
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        if subject is not None:
            # A domain prefix and a NUL: no subject and bytes can pass for another pair.
            mac.update(b"riverrun-subject\x00" + subject.encode() + b"\x00")
        mac.update(data)
        return mac.hexdigest()

    def verify(self, data: bytes, signature: str, subject: str | None = None) -> bool:
        """Whether `signature` is this key's signature of `data` as `subject` (constant time)."""
        try:
            given = signature.strip().lower().encode("ascii")
        except (AttributeError, UnicodeEncodeError):
            return False
        return hmac.compare_digest(self.sign(data, subject).encode("ascii"), given)

    def __repr__(self) -> str:
        return "Signer(key=**********)"
