"""Pipelines built in Python, written back as specs that rebuild them, and the feature modules
an artifact may name."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from river import anomaly, compose, feature_extraction, linear_model, optim, preprocessing, stats

from riverrun.workers.registry import ModelSpec, RefusedArtifact, SpecError, build_estimator
from riverrun.workers.registry.artifact import dump_model
from riverrun.workers.registry.loading import restricted_loads
from riverrun.workers.registry.render import render_pipeline

MODULE = "rr_test_features"


@pytest.fixture
def features_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    (tmp_path / f"{MODULE}.py").write_text("def add(x):\n    return {**x, 'one': 1.0}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    yield importlib.import_module(MODULE)
    sys.modules.pop(MODULE, None)


def pipelines(module: ModuleType) -> list[Any]:
    return [
        compose.FuncTransformer(module.add)
        | (compose.Select("a", "b") | preprocessing.StandardScaler())
        + (compose.Select("c") | preprocessing.OneHotEncoder())
        | linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=0.001),
        feature_extraction.Agg(on="a", by="c", how=stats.EWMean(0.3))
        | linear_model.LogisticRegression(),
        compose.Select("a") * compose.Select("b") | linear_model.LogisticRegression(),
        compose.Renamer({"a": "z"}) | compose.Discard("b")
        | linear_model.LinearRegression(optimizer=optim.Adam()),
    ]  # fmt: skip


def test_a_rendered_pipeline_rebuilds_to_the_same_spec(features_module: ModuleType) -> None:
    for pipeline in pipelines(features_module):
        text = render_pipeline(pipeline)
        task = "regression" if "LinearRegression" in text else "binary"
        spec = ModelSpec(pipeline=text, task=task, label_type="float" if task == "regression"
                         else "bool")  # fmt: skip
        assert render_pipeline(build_estimator(spec, [MODULE])) == text


def test_defaults_are_left_out_and_short_names_used() -> None:
    pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01)
    assert render_pipeline(pipeline) == "StandardScaler() | LogisticRegression(l2=0.01)"


@pytest.mark.parametrize(("make", "named"), [
    (lambda: compose.FuncTransformer(lambda x: x) | linear_model.LogisticRegression(),
     "not a plain function"),
    (lambda: preprocessing.StandardScaler() | anomaly.HalfSpaceTrees(), "HalfSpaceTrees"),
])  # fmt: skip
def test_what_the_grammar_cannot_say_is_refused_by_name(make: Any, named: str) -> None:
    with pytest.raises(SpecError, match=named):
        render_pipeline(make())


def test_artifacts_may_name_functions_of_allowed_feature_modules_only(
    features_module: ModuleType,
) -> None:
    model = compose.FuncTransformer(features_module.add) | linear_model.LogisticRegression()
    data = dump_model(model, [MODULE])
    assert restricted_loads(data, feature_modules=[MODULE]).predict_one({"a": 1.0}) is not None
    with pytest.raises(RefusedArtifact, match=f"{MODULE}.add.*RIVERRUN_REGISTRY__FEATURE_MODULES"):
        restricted_loads(data)
    # Not a function of the module, though the module is allowed: refused.
    smuggled = pickle.dumps(compose.FuncTransformer(features_module.add)).replace(
        b"\x03add", b"\x03sys")  # a module global that is not a function
    features_module.sys = sys
    with pytest.raises(RefusedArtifact, match="not a function defined"):
        restricted_loads(smuggled, feature_modules=[MODULE])


def test_a_notebook_function_is_refused_with_what_to_do() -> None:
    def add(x: dict[str, float]) -> dict[str, float]:
        return x

    add.__module__, add.__qualname__ = "__main__", "add"
    sys.modules["__main__"].add = add  # type: ignore[attr-defined]
    try:
        with pytest.raises(RefusedArtifact, match="move it into a module"):
            dump_model(compose.FuncTransformer(add) | linear_model.LogisticRegression())
    finally:
        del sys.modules["__main__"].add  # type: ignore[attr-defined]
