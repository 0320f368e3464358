"""Model specs: the pipeline expression is interpreted, never evaluated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from river import compose, forest, linear_model, optim, preprocessing

from riverrun.workers.registry import ModelSpec, SpecError, build_estimator, load_spec

ROOT = Path(__file__).resolve().parents[2]


def spec(pipeline: str, task: str = "binary", label_type: str = "bool") -> ModelSpec:
    return ModelSpec(pipeline=pipeline, task=task, label_type=label_type)  # type: ignore[arg-type]


def test_pipeline_with_nested_calls() -> None:
    model = build_estimator(spec("StandardScaler | LogisticRegression(optimizer=SGD(0.05))"))
    assert isinstance(model, compose.Pipeline)
    scaler, logreg = model.steps.values()
    assert isinstance(scaler, preprocessing.StandardScaler)
    assert isinstance(logreg, linear_model.LogisticRegression)
    assert isinstance(logreg.optimizer, optim.SGD)
    assert logreg.optimizer.learning_rate == 0.05


def test_constants_lists_and_negative_numbers() -> None:
    model = build_estimator(spec("ARFClassifier(n_models=3, seed=-1, max_features='sqrt')"))
    assert isinstance(model, forest.ARFClassifier)
    assert model.n_models == 3 and model.seed == -1 and model.max_features == "sqrt"
    hashed = build_estimator(
        spec("OneHotEncoder | LinearRegression(l2=0.1)", "regression", "float")
    )
    assert isinstance(hashed, compose.Pipeline)


@pytest.mark.parametrize(
    ("pipeline", "named"),
    [
        ("__import__('os').system('true')", "__import__"),
        ("StandardScaler | LogisticRegression(optimizer=optim.sgd.os.system(0.1))",
         "optim.sgd.os.system"),
        ("river.utils.math.sigmoid(0.0)", "river.utils.math.sigmoid"),
        ("FuncTransformer(print) | LogisticRegression", "module:function"),
        ("StandardScaler.__class__", "StandardScaler.__class__"),
        ("(lambda: 1)()", "lambda"),
        ("eval('1')", "eval"),
        ("Frobnicator()", "Frobnicator"),
        ("LogisticRegression(**{'l2': 1})", "**"),
        ("[c for c in ()]", "ListComp"),
        ("StandardScaler()[0]", "Subscript"),
    ],
)
def test_refuses_anything_outside_the_grammar(pipeline: str, named: str) -> None:
    with pytest.raises(SpecError) as caught:
        build_estimator(spec(pipeline))
    message = str(caught.value)
    assert named in message
    assert "allowed classes: " in message and "LogisticRegression" in message


def test_syntax_error_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="not a valid expression"):
        build_estimator(spec("StandardScaler |"))


def test_bad_arguments_name_the_class() -> None:
    with pytest.raises(SpecError, match="LogisticRegression"):
        build_estimator(spec("LogisticRegression(no_such_argument=1)"))


@pytest.mark.parametrize(
    ("pipeline", "task", "wanted"),
    [
        ("StandardScaler | LinearRegression", "binary", "not a classifier"),
        ("StandardScaler | LogisticRegression", "regression", "not a regressor"),
        ("LogisticRegression", "multiclass", "binary only"),
        ("StandardScaler", "binary", "not a classifier"),
    ],
)
def test_task_must_match_the_final_estimator(pipeline: str, task: str, wanted: str) -> None:
    with pytest.raises(SpecError, match=wanted):
        build_estimator(spec(pipeline, task))


def test_multiclass_accepts_a_multiclass_classifier() -> None:
    build_estimator(spec("HoeffdingTreeClassifier(grace_period=50)", "multiclass", "str"))


def test_load_yaml_and_json(tmp_path: Path) -> None:
    loaded = load_spec(ROOT / "deploy" / "specs" / "phishing-logreg.yaml")
    assert loaded.task == "binary" and loaded.warm_start is not None
    assert loaded.warm_start.dataset == "phishing"
    build_estimator(loaded)
    build_estimator(load_spec(ROOT / "deploy" / "specs" / "agrawal-arf.yaml"))
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"pipeline": "GaussianNB", "task": "binary", "label_type": "int"}))
    assert load_spec(path).pipeline == "GaussianNB"


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("pipeline: GaussianNB\ntask: binary\n", "label_type"),
        ("pipeline: GaussianNB\ntask: sorting\nlabel_type: int\n", "task"),
        ("- a list\n", "mapping"),
        ("pipeline: [unclosed\n", "not valid YAML"),
        ("pipeline: GaussianNB\ntask: binary\nlabel_type: int\nextra: 1\n", "extra"),
    ],
)
def test_load_refuses_bad_files(tmp_path: Path, text: str, wanted: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=wanted):
        load_spec(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="nope.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_pipelines_as_people_write_them() -> None:
    """Dotted names, `+` unions, `*` products, Select, Discard, Renamer, Agg with a statistic."""
    from river import feature_extraction

    built = build_estimator(spec(
        "compose.Renamer({'a': 'b'}) | compose.Discard('c') "
        "| (Select('b') | preprocessing.StandardScaler()) + (Select('d') | OneHotEncoder()) "
        "+ feature_extraction.Agg(on='b', by=['d'], how=stats.Mean()) "
        "+ (Select('b') | StandardScaler()) * (Select('b') | MinMaxScaler()) "
        "| LogisticRegression(optimizer=SGD(0.05))"))
    steps = list(built.steps.values())
    assert isinstance(steps[0], compose.Renamer) and isinstance(steps[1], compose.Discard)
    union = steps[2]
    assert isinstance(union, compose.TransformerUnion)
    assert any(isinstance(t, feature_extraction.Agg) for t in union.transformers.values())
    assert any(isinstance(t, compose.TransformerProduct) for t in union.transformers.values())
    row = {"a": 1.0, "c": 2.0, "d": "fr"}
    built.learn_one(row, True)
    assert set(built.predict_proba_one(row)) == {False, True}


def test_a_feature_function_of_an_allowed_module_is_built_in(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shopfeatures.py").write_text(
        "def add_ratio(x):\n    return {**x, 'ratio': x['a'] / (1 + x['b'])}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pipeline = "FuncTransformer('shopfeatures:add_ratio') | StandardScaler | LogisticRegression"
    with pytest.raises(SpecError, match="'shopfeatures'.*RIVERRUN_REGISTRY__FEATURE_MODULES"):
        build_estimator(spec(pipeline))
    built = build_estimator(spec(pipeline), feature_modules=["shopfeatures"])
    assert built.transform_one({"a": 4.0, "b": 1.0}) is not None
