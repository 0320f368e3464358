"""Signed artifacts built only from River's own parts, made to abort, panic or balloon the
process that loads them: each is refused, and the process that asked is still here.

A key holder gone wrong can sign anything; what the loader admits is what the spec grammar's
classes pickle into, Rust-backed classes are built from their state and small constants only,
and every artifact is first loaded, probed and learned in a forked child under a memory budget.
"""

from __future__ import annotations

import functools
import pickle
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import datasets, linear_model, preprocessing, stats
from river._river_rust import drift as rust_drift
from river._river_rust import stats as rust_stats

from riverrun.workers.registry import RefusedArtifact, Signer, dump_model, open_artifact, seal
from riverrun.workers.registry.loading import is_allowed_global, is_state_only

SIGNER = Signer(b"k" * 32)
LIMIT = 64 * 1024 * 1024
BUDGET = 256 * 1024 * 1024


class _Calls:
    def __init__(self, target: Any, *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.target, self.args


def _piece(value: Any) -> bytes:
    return pickle.dumps(value, protocol=3)[2:-1]  # no PROTO, no FRAME, no STOP: to splice in


def built(cls: type, args: tuple[Any, ...], state: Any = None) -> bytes:
    """A pickle of `cls.__new__(cls, *args)`, then `__setstate__(state)`: NEWOBJ and BUILD."""
    module, name = cls.__module__, cls.__qualname__
    data = (b"\x80\x05\x8c" + bytes([len(module)]) + module.encode() + b"\x8c"
            + bytes([len(name)]) + name.encode() + b"\x93" + _piece(args) + b"\x81")
    if state is not None:
        data += _piece(state) + b"b"
    return data + b"."


def opened(obj: Any) -> Any:
    data = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=5)
    return open_artifact(data, seal(data, SIGNER, "mem://gadget"), SIGNER, LIMIT, None, BUDGET, 20)


def refusal(obj: Any) -> RefusedArtifact:
    with pytest.raises(RefusedArtifact) as caught:
        opened(obj)
    return caught.value


def trained_pipeline() -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in list(datasets.Phishing())[:200]:
        model.learn_one(x, y)
    return model


def test_a_rust_window_of_a_trillion_is_not_even_named() -> None:
    caught = refusal(_Calls(rust_stats.RsRollingQuantile, 0.5, 10**12))
    assert caught.error_class == "ForbiddenGlobal" and "RsRollingQuantile" in caught.reason


def test_a_planted_default_factory_is_refused_before_it_can_run() -> None:
    model = trained_pipeline()
    scaler = model["StandardScaler"]
    scaler.means = defaultdict(functools.partial(rust_stats.RsRollingQuantile, 0.5, 10**12),
                               scaler.means)  # fmt: skip
    assert refusal(model).error_class == "ForbiddenGlobal"
    # The same with a Rust class a spec does use, passed on instead of rebuilt.
    scaler.means = defaultdict(functools.partial(rust_drift.AdaptiveWindowing, 0.002, 32,
                                                 10**12, 5, 10), dict(scaler.vars))  # fmt: skip
    assert refusal(model).error_class == "ForbiddenCall"


def test_a_rust_class_built_from_a_huge_argument_is_refused() -> None:
    caught = refusal(built(rust_drift.AdaptiveWindowing, (0.002, 32, 10**12, 5, 10)))
    assert caught.error_class == "ForbiddenCall" and "AdaptiveWindowing" in caught.reason


def test_an_object_array_of_a_quarter_billion_is_not_named() -> None:
    caught = refusal(_Calls(np.ndarray, (250_000_000,), np.dtype("O")))
    assert caught.error_class == "ForbiddenGlobal"


def test_a_rust_state_cut_short_panics_in_the_trial_not_here() -> None:
    quantile = stats.Quantile(0.5)
    for i in range(50):
        quantile.update(float(i))
    state = quantile._quantile.__getstate__()  # noqa: SLF001  # the Rust object's own bytes
    caught = refusal(built(rust_stats.RsQuantile, (), state[:48]))
    assert caught.error_class in {"NotAPickle", "TrialFailed"} and "Panic" in caught.reason


def test_a_good_model_still_loads_and_answers_as_before() -> None:
    model = trained_pipeline()
    row = next(iter(datasets.Phishing()))[0]
    data = dump_model(model)
    loaded = open_artifact(data, seal(data, SIGNER, "mem://good"), SIGNER, LIMIT, None, BUDGET)
    assert loaded.predict_proba_one(row) == model.predict_proba_one(row)


STATE_ONLY = sorted(
    name for module, name in (
        ("river._river_rust.drift", "AdaptiveWindowing"), ("river._river_rust.stats", "RsEWMean"),
        ("river._river_rust.stats", "RsEWVar"), ("river._river_rust.stats", "RsIQR"),
        ("river._river_rust.stats", "RsQuantile"),
    ) if is_allowed_global(module, name) and is_state_only(module, name)
)  # fmt: skip
_CLASSES = {"AdaptiveWindowing": rust_drift.AdaptiveWindowing, "RsEWMean": rust_stats.RsEWMean,
            "RsEWVar": rust_stats.RsEWVar, "RsIQR": rust_stats.RsIQR,
            "RsQuantile": rust_stats.RsQuantile}  # fmt: skip
numbers = st.one_of(st.integers(-(2**63), 2**63), st.floats(allow_nan=True),
                    st.sampled_from([0, 1, 5, 32, 10**6, 10**12, -1]))  # fmt: skip


@pytest.mark.parametrize("name", STATE_ONLY)
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(args=st.lists(numbers, max_size=6), state=st.one_of(st.none(), st.binary(max_size=96)))
def test_fuzzed_rust_constructors_and_states_never_take_the_loader_down(
    name: str, args: list[Any], state: bytes | None
) -> None:
    """Whatever the arguments and state, loading returns or refuses; it never aborts here."""
    try:
        opened(built(_CLASSES[name], tuple(args), state))
    except RefusedArtifact as refused:
        assert refused.error_class in {"ForbiddenCall", "TrialFailed", "NotAPickle"}
