"""Readable start-up errors from settings validation, naming the variable or flag to fix."""

from __future__ import annotations

from pydantic import ValidationError


def explain(exc: ValidationError) -> str:
    """`RIVERRUN_SCORER__BATCH_SIZE (--batch-size): Input should be greater than 0`, one per line."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        env = "RIVERRUN_" + "__".join(part.upper() for part in loc)
        flag = "--" + loc[-1].replace("_", "-") if loc else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{env} ({flag}): {message}")
    return "; ".join(lines)
