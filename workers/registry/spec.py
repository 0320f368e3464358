"""Declarative model specs: a River pipeline written as an expression, built without `eval`.

A spec names its pipeline as text, as it is written in Python:

    FuncTransformer("myfeatures:add_features")
    | (Select("age", "income") | preprocessing.StandardScaler())
    + (Select("country") | OneHotEncoder())
    | LogisticRegression(optimizer=SGD(0.05))

The text is parsed with `ast` and only a small grammar is interpreted: `|` (a pipeline), `+` (a
transformer union), `*` (a transformer product), calls of allow-listed River classes named
plainly or with their module (`preprocessing.StandardScaler`) with constant or nested-call
arguments, constants, unary minus, and lists, tuples and dicts of those. A feature function is
the user's own Python, named as `"module:function"` where a function is expected
(`FuncTransformer`); only modules the operator allows (`RIVERRUN_REGISTRY__FEATURE_MODULES`,
installed in the worker image) may be named, and they are imported only once allowed.
Everything else (attribute access off the grammar, lambdas, `__import__`, subscripts,
comprehensions, unknown names, modules not allowed) is a `SpecError` naming it, before anything
of it runs.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from riverrun.schemas import FeatureSignature
from riverrun.workers.runtime.errors import ConfigurationError

# Module of river, then the classes a spec may name from it.
_ALLOWED_MODULES: dict[str, tuple[str, ...]] = {
    "compose": ("Discard", "FuncTransformer", "Renamer", "Select", "TransformerProduct",
                "TransformerUnion"),
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
    "optim.schedulers": ("Constant", "InverseScaling", "Optimal"),
    "neighbors": ("KNNClassifier", "KNNRegressor", "LazySearch", "SWINN"),
    "ensemble": ("ADWINBaggingClassifier", "AdaBoostClassifier", "BaggingClassifier",
                 "BaggingRegressor", "LeveragingBaggingClassifier", "SRPClassifier",
                 "SRPRegressor"),
    "feature_extraction": ("Agg", "BagOfWords", "PolynomialExtender", "RBFSampler", "TargetAgg",
                           "TFIDF"),
    "stats": ("Count", "EWMean", "EWVar", "Max", "Mean", "Min", "Mode", "Sum", "Var"),
    "drift": ("ADWIN", "KSWIN", "NoDrift", "PageHinkley"),
}  # fmt: skip
# A string argument of these is a feature function's `module:function`, not a constant.
_FUNCTION_ARGUMENTS = {"compose.FuncTransformer": ("func", 0)}

_MAX_SPEC_CHARS = 10_000


class SpecError(ConfigurationError):
    """A spec that cannot become a River pipeline; the message says which part and why."""


class WarmStart(BaseModel):
    """Records to learn from before the first release, so version 1 is not a blank model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(
        description="A catalog name (`riverrun.producers.dataset.DATASETS`) or a file's path."
    )
    limit: int = Field(ge=0, description="How many records to learn from.")
    seed: int = Field(default=1, description="Seed of synthetic datasets.")
    target: str | None = Field(default=None, description="A file's label column.")
    key: str | None = Field(default=None, description="A file's key column (not a feature).")
    types: dict[str, str] = Field(default_factory=dict, description="A file's column types.")


class PerKey(BaseModel):
    """A model per request key: each key's own copy of the pipeline, the global one as fallback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: Literal["blend", "local"] = Field(
        default="blend",
        description="`blend`: w * key's own + (1 - w) * global, w = n / (n + tau) after n labels "
        "of the key; `local`: the key's own model alone once it has learned a label.",
    )
    tau: float = Field(
        default=20.0, gt=0.0, allow_inf_nan=False,
        description="Labels of a key at which its own model weighs as much as the global one.",
    )  # fmt: skip
    expire_after_s: float | None = Field(
        default=None, gt=0.0, allow_inf_nan=False,
        description="Forget a key's model after this long without a label (a tombstone on "
        "the key-state changelog); never when not set.",
    )


class ModelSpec(BaseModel):
    """A declarative model definition: a River pipeline expression and what it predicts."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

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
    features: list[FeatureSignature] | None = Field(
        default=None,
        description="The features requests must carry (name, kind number|category, required); "
        "inferred from the warm start when not declared.",
    )
    per_key: PerKey | None = Field(
        default=None,
        description="Learn and serve a model per request key (user, tenant, device), with the "
        "global model as fallback; a global model only when not set.",
    )

    def released_form(self) -> dict[str, Any]:
        """The spec as a release record carries it (`per_key` only when set)."""
        data = self.model_dump(mode="json")
        if data["per_key"] is None:
            del data["per_key"]
        return data


def per_key_of(spec: object) -> PerKey | None:
    """The per-key settings of a released spec (a release record's dict), if it has them."""
    data = spec.get("per_key") if isinstance(spec, dict) else None
    return PerKey.model_validate(data) if data is not None else None


@cache
def allowed_classes() -> dict[str, type]:
    """Every class a spec may use, by its module-qualified name (`preprocessing.StandardScaler`)."""
    out: dict[str, type] = {}
    for module_name, names in _ALLOWED_MODULES.items():
        module = importlib.import_module(f"river.{module_name}")
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                out[f"{module_name}.{name}"] = cls
    return out


@cache
def short_names() -> dict[str, str]:
    """A class's plain name to its qualified one, where only one module has that name."""
    seen: dict[str, list[str]] = {}
    for qualified in allowed_classes():
        seen.setdefault(qualified.rpartition(".")[2], []).append(qualified)
    return {short: names[0] for short, names in seen.items() if len(names) == 1}


def qualified_name(cls: type) -> str | None:
    """The name a spec knows `cls` by (`preprocessing.StandardScaler`), None when it does not."""
    for name, known in allowed_classes().items():
        if known is cls:
            return name
    return None


def _refuse(what: str, node: ast.AST | None = None) -> SpecError:
    column = getattr(node, "col_offset", None)
    where = f" at column {column + 1}" if column is not None else ""
    return SpecError(
        f"spec pipeline: {what}{where}. A pipeline is `A | B(...)` of allowed River classes "
        "called with constants, `+` and `*` of transformers, and feature functions as "
        "\"module:function\" of allowed modules; allowed classes: "
        f"{', '.join(sorted(allowed_classes()))}"
    )


def feature_function(reference: str, feature_modules: Iterable[str]) -> Any:
    """The function `module:function` names, if its module is allowed; imported only then.

    Raises:
        SpecError: the reference is malformed, the module is not allowed, or the name is not a
            plain function defined in that module.

    """
    module_name, sep, name = reference.partition(":")
    if not sep or not module_name or not name.isidentifier():
        raise SpecError(f"spec pipeline: {reference!r} is not a feature function: write it as "
                        "\"module:function\"")
    allowed = set(feature_modules)
    if module_name not in allowed:
        raise SpecError(
            f"spec pipeline: module {module_name!r} (of {reference!r}) is not an allowed feature "
            "module: add it to RIVERRUN_REGISTRY__FEATURE_MODULES and install it in the worker "
            f"image{' (allowed: ' + ', '.join(sorted(allowed)) + ')' if allowed else ''}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"spec pipeline: feature module {module_name!r} cannot be imported "
                        f"({exc}): install it where the workers run") from exc
    function = getattr(module, name, None)
    if not inspect.isfunction(function) or function.__module__ != module_name:
        raise SpecError(f"spec pipeline: {reference!r} is not a function defined in "
                        f"{module_name}")
    return function


class _Interpreter:
    """Builds what a spec expression says, node by node, and nothing else."""

    def __init__(self, feature_modules: Iterable[str]) -> None:
        self.feature_modules = tuple(feature_modules)

    def value(self, node: ast.AST) -> Any:
        """Interpret one node of the allowed grammar."""
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, bool | int | float | str):
                return node.value
            raise _refuse(f"constant {node.value!r} is not allowed", node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.value(node.operand)
            if isinstance(operand, bool) or not isinstance(operand, int | float):
                raise _refuse("unary minus applies to numbers only", node)
            return -operand
        if isinstance(node, ast.List | ast.Tuple):
            items = [self.value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(key is None for key in node.keys):
                raise _refuse("`**` in a dict is not allowed", node)
            return {self.value(k): self.value(v)  # type: ignore[arg-type]  # None checked above
                    for k, v in zip(node.keys, node.values, strict=True)}  # fmt: skip
        if isinstance(node, ast.Name | ast.Attribute):
            return self.construct(self.klass(node), [], {})
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr | ast.Add | ast.Mult):
            left, right = self.value(node.left), self.value(node.right)
            try:
                if isinstance(node.op, ast.BitOr):
                    return left | right
                return left + right if isinstance(node.op, ast.Add) else left * right
            except TypeError as exc:
                raise _refuse(f"`{ast.unparse(node)}` does not combine: {exc}", node) from exc
        raise _refuse(f"`{ast.unparse(node)}` ({type(node).__name__}) is not allowed", node)

    def call(self, node: ast.Call) -> Any:
        """A call of an allowed class, with feature functions resolved where they go."""
        cls = self.klass(node.func)
        name = qualified_name(cls) or ""
        function_at = _FUNCTION_ARGUMENTS.get(name)
        args = []
        for position, arg in enumerate(node.args):
            args.append(self.function(arg) if function_at and position == function_at[1]
                        else self.value(arg))  # fmt: skip
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _refuse("`**` arguments are not allowed", node)
            is_function = function_at is not None and keyword.arg == function_at[0]
            kwargs[keyword.arg] = (self.function(keyword.value) if is_function
                                   else self.value(keyword.value))  # fmt: skip
        return self.construct(cls, args, kwargs)

    @staticmethod
    def construct(cls: type, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """`cls(*args, **kwargs)`, a refusal of its arguments said as a spec error."""
        try:
            return cls(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            name = qualified_name(cls) or cls.__name__
            raise SpecError(f"spec pipeline: {name}(...) refused its arguments: {exc}") from exc

    def function(self, node: ast.AST) -> Any:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            raise _refuse("a feature function is written as a string, \"module:function\"",
                          node)  # fmt: skip
        return feature_function(node.value, self.feature_modules)

    def klass(self, node: ast.AST) -> type:
        """The allowed class a plain (`StandardScaler`) or dotted name means."""
        if isinstance(node, ast.Name):
            qualified = short_names().get(node.id)
            if qualified is None:
                known = [q for q in allowed_classes() if q.endswith("." + node.id)]
                hint = f": write one of {', '.join(known)}" if known else ""
                raise _refuse(f"name `{node.id}` is not an allowed River class{hint}", node)
            return allowed_classes()[qualified]
        dotted = ast.unparse(node).removeprefix("river.")
        cls = allowed_classes().get(dotted)
        if cls is None:
            raise _refuse(f"`{ast.unparse(node)}` is not an allowed River class", node)
        return cls


def _final_estimator(estimator: Any) -> Any:
    from river import compose

    while isinstance(estimator, compose.Pipeline):
        estimator = list(estimator.steps.values())[-1]
    return estimator


def build_estimator(spec: ModelSpec, feature_modules: Iterable[str] = ()) -> Any:
    """Build the spec's River pipeline, unfitted, by interpreting its expression (no `eval`).

    `feature_modules` are the modules whose functions the spec may name.

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
    estimator = _Interpreter(feature_modules).value(tree.body)
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
