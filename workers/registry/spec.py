"""Declarative model specs: a River pipeline written as an expression, built without `eval`.

A spec names its pipeline as text, `StandardScaler | LogisticRegression(optimizer=SGD(0.05))`.
The text is parsed with `ast` and only a small grammar is interpreted: `|` (a pipeline), calls
of allow-listed River classes with constant or nested-call arguments, names of allow-listed
classes, constants, unary minus, and lists or tuples of those. Everything else (attribute access,
lambdas, `__import__`, subscripts, comprehensions, unknown names) is a `SpecError`.
"""

from __future__ import annotations

import ast
import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from riverrun.workers.runtime.errors import ConfigurationError

# Module of river, then the classes a spec may name from it.
_ALLOWED_MODULES: dict[str, tuple[str, ...]] = {
    "preprocessing": (
        "AdaptiveStandardScaler", "Binarizer", "FeatureHasher", "MaxAbsScaler", "MinMaxScaler",
        "Normalizer", "OneHotEncoder", "OrdinalEncoder", "PreviousImputer", "RobustScaler",
        "StandardScaler", "StatImputer", "TargetMinMaxScaler", "TargetStandardScaler",
    ),
    "linear_model": (
        "ALMAClassifier", "BayesianLinearRegression", "LinearRegression", "LogisticRegression",
        "PAClassifier", "PARegressor", "Perceptron", "SoftmaxRegression",
    ),
    "tree": (
        "ExtremelyFastDecisionTreeClassifier", "HoeffdingAdaptiveTreeClassifier",
        "HoeffdingAdaptiveTreeRegressor", "HoeffdingTreeClassifier", "HoeffdingTreeRegressor",
        "SGTClassifier", "SGTRegressor",
    ),
    "tree.splitter": ("EBSTSplitter", "GaussianSplitter", "HistogramSplitter", "QOSplitter",
                      "TEBSTSplitter"),
    "naive_bayes": ("BernoulliNB", "ComplementNB", "GaussianNB", "MultinomialNB"),
    "forest": ("AMFClassifier", "AMFRegressor", "ARFClassifier", "ARFRegressor"),
    "optim": ("AdaGrad", "Adam", "AdaMax", "Momentum", "RMSProp", "SGD", "FTRLProximal"),
    "optim.losses": ("Absolute", "Cauchy", "CrossEntropy", "Hinge", "Huber", "Log", "Quantile",
                     "Squared"),
    "neighbors": ("KNNClassifier", "KNNRegressor", "LazySearch", "SWINN"),
    "ensemble": ("ADWINBaggingClassifier", "AdaBoostClassifier", "BaggingClassifier",
                 "BaggingRegressor", "LeveragingBaggingClassifier", "SRPClassifier",
                 "SRPRegressor"),
    "feature_extraction": ("BagOfWords", "PolynomialExtender", "RBFSampler", "TFIDF"),
    "drift": ("ADWIN", "KSWIN", "NoDrift", "PageHinkley"),
}  # fmt: skip

_MAX_SPEC_CHARS = 10_000


class SpecError(ConfigurationError):
    """A spec that cannot become a River pipeline; the message says which part and why."""


class WarmStart(BaseModel):
    """Records to learn from before the first release, so version 1 is not a blank model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(description="Dataset name, one of `producers.dataset.DATASETS`.")
    limit: int = Field(ge=0, description="How many records to learn from.")
    seed: int = Field(default=1, description="Seed of synthetic datasets.")


class ModelSpec(BaseModel):
    """A declarative model definition: a River pipeline expression and what it predicts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str = Field(
        min_length=1,
        max_length=_MAX_SPEC_CHARS,
        description="River pipeline, e.g. "
        "`StandardScaler | LogisticRegression(optimizer=SGD(0.05))`.",
    )
    task: Literal["binary", "multiclass", "regression"] = Field(description="What is predicted.")
    label_type: Literal["bool", "int", "str", "float"] = Field(description="Type of the label.")
    warm_start: WarmStart | None = Field(default=None, description="Records to learn first.")
    description: str = Field(default="", description="Free text for operators.")


@cache
def allowed_classes() -> dict[str, type]:
    """Every class name a spec may use, to the River class it means."""
    import importlib

    out: dict[str, type] = {}
    for module_name, names in _ALLOWED_MODULES.items():
        module = importlib.import_module(f"river.{module_name}")
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                out[name] = cls
    return out


def _refuse(what: str, node: ast.AST | None = None) -> SpecError:
    column = getattr(node, "col_offset", None)
    where = f" at column {column + 1}" if column is not None else ""
    return SpecError(
        f"spec pipeline: {what}{where}. A pipeline is `A | B(...)` of allowed River classes "
        f"called with constants; allowed classes: {', '.join(sorted(allowed_classes()))}"
    )


def _value(node: ast.AST) -> Any:
    """Interpret one node of the allowed grammar."""
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, bool | int | float | str):
            return node.value
        raise _refuse(f"constant {node.value!r} is not allowed", node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = _value(node.operand)
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise _refuse("unary minus applies to numbers only", node)
        return -operand
    if isinstance(node, ast.List | ast.Tuple):
        items = [_value(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Name):
        return _class(node)()
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _refuse(f"`{ast.unparse(node.func)}` is not a plain class name", node)
        cls = _class(node.func)
        args = [_value(arg) for arg in node.args]
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _refuse("`**` arguments are not allowed", node)
            kwargs[keyword.arg] = _value(keyword.value)
        try:
            return cls(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise SpecError(
                f"spec pipeline: {cls.__name__}(...) refused its arguments: {exc}"
            ) from exc
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _value(node.left) | _value(node.right)
    raise _refuse(f"`{ast.unparse(node)}` ({type(node).__name__}) is not allowed", node)


def _class(node: ast.Name) -> type:
    cls = allowed_classes().get(node.id)
    if cls is None:
        raise _refuse(f"name `{node.id}` is not an allowed River class", node)
    return cls


def _final_estimator(estimator: Any) -> Any:
    from river import compose

    while isinstance(estimator, compose.Pipeline):
        estimator = list(estimator.steps.values())[-1]
    return estimator


def build_estimator(spec: ModelSpec) -> Any:
    """Build the spec's River pipeline, unfitted, by interpreting its expression (no `eval`).

    Raises:
        SpecError: the expression uses anything outside the grammar or the allow-list, a class
            refuses its arguments, or the final estimator does not fit the spec's task.

    """
    try:
        tree = ast.parse(spec.pipeline.strip(), mode="eval")
    except SyntaxError as exc:
        raise SpecError(
            f"spec pipeline is not a valid expression: {exc.msg} (column {exc.offset})"
        ) from exc
    estimator = _value(tree.body)
    if isinstance(estimator, int | float | str | list | tuple) or estimator is None:
        raise _refuse("the pipeline must build an estimator, not a constant")
    _check_task(spec, _final_estimator(estimator))
    return estimator


def _check_task(spec: ModelSpec, final: Any) -> None:
    from river import base

    name = type(final).__name__
    if spec.task == "regression":
        if not isinstance(final, base.Regressor):
            raise SpecError(
                f"spec task is regression but the pipeline ends in {name}, not a regressor: "
                "end it with a regressor or set task to binary/multiclass"
            )
        return
    if not isinstance(final, base.Classifier):
        raise SpecError(
            f"spec task is {spec.task} but the pipeline ends in {name}, not a classifier: "
            "end it with a classifier or set task to regression"
        )
    if spec.task == "multiclass" and not getattr(final, "_multiclass", False):
        raise SpecError(
            f"spec task is multiclass but {name} is binary only: pick a multiclass classifier "
            "(e.g. HoeffdingTreeClassifier, SoftmaxRegression) or set task to binary"
        )


def load_spec(path: Path) -> ModelSpec:
    """Read a spec from a YAML (`.yaml`/`.yml`) or JSON file.

    Raises:
        SpecError: the file is missing, unreadable, not YAML/JSON, or not a valid spec.

    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"spec file {path} is not valid YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(
            f"spec file {path} must hold a mapping with `pipeline`, `task` and `label_type`"
        )
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise SpecError(f"spec file {path} is not a valid spec: {details}") from exc
