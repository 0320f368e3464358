"""JSON-lines log formatting for containers, with `extra=` context kept as fields."""

from __future__ import annotations

import logging
from typing import Any

import orjson

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
# Keys whose values are secrets wherever they appear in `extra=` context: SecretStr fields
# already render masked, but free-form maps (librdkafka options) carry plain strings.
_SECRET_WORDS = ("password", "secret", "token", "credential", "signing_key", "private", "jaas")
MASK = "**********"


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
