"""Hypothesis strategies for malformed requests and feedback, one per class of malformation.

Each class names the dead-letter error class the worker must give it (None where the learner's
routing decides). The strategies are drawn into a corpus up front; the scenario then produces the
corpus between valid neighbours and lets real workers read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

PHISHING_FEATURES = ("empty_server_form_handler", "popup_window", "https",
                     "request_from_other_domain", "anchor_from_other_domain", "is_popular",
                     "long_url", "age_of_domain", "ip_in_url")  # fmt: skip
MAX_REQUEST_BYTES = 65_536  # the scorer's default limit

ids = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=24)
numbers = st.floats(allow_nan=False, allow_infinity=False, width=32)
scalars = st.one_of(st.integers(-10**6, 10**6), numbers, st.text(max_size=8), st.booleans())
features = st.dictionaries(st.sampled_from(PHISHING_FEATURES), numbers, min_size=1)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _request(rid: str, model: Any, feats: Any) -> dict[str, Any]:
    return {"request_id": rid, "model": model, "features": feats}


REQUEST_CLASSES: dict[str, tuple[st.SearchStrategy[bytes | None], str]] = {
    "not-json": (st.text(max_size=40).map(lambda s: b"{" + s.encode() + b" ,,"), "NotJson"),
    "not-utf8": (st.binary(max_size=40).map(lambda b: b"\xff\xfe" + b), "NotUtf8"),
    "empty-value": (st.just(b""), "EmptyValue"),
    "null-value": (st.just(None), "EmptyValue"),
    "json-scalar": (scalars.map(_json), "InvalidEvent"),
    "json-array": (st.lists(scalars, max_size=5).map(_json), "InvalidEvent"),
    "missing-fields": (st.builds(lambda r, f: {"request_id": r, "features": f}, ids, features)
                       .map(_json), "InvalidEvent"),
    "wrong-types": (st.builds(lambda r, f: _request(r, "phishing", list(f.values())),
                              st.integers(-2**62, 2**62), features).map(_json), "InvalidEvent"),
    "nested-features": (st.builds(lambda r, f: _request(r, "phishing", {k: {"v": v} for k, v in
                                                                       f.items()}), ids, features)
                        .map(_json), "InvalidEvent"),
    "empty-features": (ids.map(lambda r: _json(_request(r, "phishing", {}))), "InvalidEvent"),
    "bad-model-name": (st.builds(lambda r, m, f: _request(r, "../" + m, f), ids, ids, features)
                       .map(_json), "InvalidEvent"),
    "non-finite-number": (st.builds(lambda r, k, bad: b'{"request_id": "' + r.encode()
                                    + b'", "model": "phishing", "features": {"' + k.encode()
                                    + b'": ' + bad + b"}}", ids, st.sampled_from(PHISHING_FEATURES),
                                    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"])),
                          "NotJson"),
    "unknown-model": (st.builds(lambda r, m, f: _request(r, "unknown-" + m, f), ids, ids, features)
                      .map(_json), "UnknownModel"),
    "missing-features": (st.builds(lambda r, f: _request(r, "phishing", f), ids,
                                   st.dictionaries(st.sampled_from(PHISHING_FEATURES[:-1]),
                                                   numbers, min_size=1)).map(_json),
                         "MissingFeatures"),
    "oversized": (st.builds(lambda r, n: _json(_request(r, "phishing", {"pad": "x" * n})),
                            ids, st.integers(MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 4096)),
                  "Oversized"),
}

FEEDBACK_CLASSES: dict[str, tuple[st.SearchStrategy[bytes | None], str | None]] = {
    "not-json": (REQUEST_CLASSES["not-json"][0], "NotJson"),
    "not-utf8": (REQUEST_CLASSES["not-utf8"][0], "NotUtf8"),
    "empty-value": (st.just(b""), "EmptyValue"),
    "null-value": (st.just(None), "EmptyValue"),
    "json-array": (REQUEST_CLASSES["json-array"][0], "InvalidEvent"),
    "wrong-label-type": (st.builds(lambda r, f: {"request_id": r, "model": "{model}",
                                                 "label": {"nested": True}, "features": f,
                                                 "observed_at": "2026-01-01T00:00:00+00:00"},
                                   ids, features).map(_json), "InvalidEvent"),
    "missing-label": (st.builds(lambda r: {"request_id": r, "model": "{model}",
                                           "observed_at": "2026-01-01T00:00:00+00:00"}, ids)
                      .map(_json), "InvalidEvent"),
    "never-predicted": (st.builds(lambda r: {"request_id": "ghost-" + r, "model": "{model}",
                                             "label": True,
                                             "observed_at": "2026-01-01T00:00:00+00:00"}, ids)
                        .map(_json), "UnknownRequest"),
}


# Each oversized request weighs as much as two hundred valid ones: a tenth of the others'
# count keeps the mix about records, not bytes, when throughput is compared.
WEIGHT = {"oversized": 0.1}


def corpus(strategy: st.SearchStrategy[Any], examples: int) -> list[Any]:
    """`examples` values drawn from `strategy` by Hypothesis, reproducibly.

    A strategy with fewer distinct values than `examples` (`st.just`) has them repeated.
    """
    drawn: list[Any] = []

    @settings(max_examples=examples, database=None, deadline=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        drawn.append(data.draw(strategy))

    draw()
    return [drawn[i % len(drawn)] for i in range(examples)]


def for_model(model: str) -> Callable[[bytes | None], bytes | None]:
    """Fill the `{model}` placeholder of a feedback corpus entry."""
    def fill(value: bytes | None) -> bytes | None:
        return value.replace(b"{model}", model.encode()) if value else value
    return fill
