"""Log lines for containers and terminals.

JSON lines keep `extra=` context as fields; librdkafka's repeated lines are folded.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
# Keys whose values are secrets wherever they appear in `extra=` context: SecretStr fields
# already render masked, but free-form maps (librdkafka options) carry plain strings.
_SECRET_WORDS = ("password", "secret", "token", "credential", "signing_key", "private", "jaas")
MASK = "**********"
_DIGITS = re.compile(r"\d+")


def redact(value: Any) -> Any:
    """`value` with every entry under a secret-looking key masked, at any depth."""
    if isinstance(value, dict):
        return {key: MASK if _is_secret(key) and item not in (None, "") else redact(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _is_secret(key: Any) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in _SECRET_WORDS)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line."""
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = MASK if _is_secret(key) else redact(value)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class RepeatedLines(logging.Filter):
    """Drops a log line that repeats one let through less than `every_s` ago (digits aside).

    librdkafka logs every refused reconnect (several a second while a broker is away); the
    first of a kind passes, then one per interval saying how many were left out.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self._every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through unless it repeats a recent one."""
        key = _DIGITS.sub("", record.getMessage())
        now = time.monotonic()
        last, dropped = self._seen.get(key, (float("-inf"), 0))
        if now - last < self._every_s:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) > 1000:  # bounded: forget everything rather than grow
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar lines left out)"
            record.args = ()
        return True
