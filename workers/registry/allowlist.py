"""What an artifact may name: derived from what the spec grammar can build, not from a prefix.

Every class a spec may name is built into a small pipeline (`RECIPES`, written in the spec
grammar itself), learns 1,000 rows, and is pickled untrained and trained; the globals those
pickles name are the loader's allow-list, and nothing else is. A River class no spec can build
(a Rust-backed statistic with a window of any size, a private function) is refused, and every
class a spec allows can be released, learned, snapshotted and loaded.

The list is committed as `allowed_globals.json` beside this module, for the River version it was
derived with; `python -m riverrun.workers.registry.allowlist` writes it again, and a test fails
when the committed list and a fresh derivation differ.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).with_name("allowed_globals.json")
_RECIPE_MODULE = "riverrun.workers.registry.allowlist"  # where the recipes' feature function lives
ROWS = 1_000

# Besides River's classes: what their pickles are made of (pickle protocol 5 writes bytes and
# bytearrays with opcodes of their own, so `bytes`, `bytearray` and `range`, which allocate
# whatever one integer says, are never needed).
BASE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("builtins", name) for name in (
        "set", "frozenset", "list", "dict", "tuple", "float", "int", "str", "bool", "complex",
        "slice", "object",
    )
} | {
    ("collections", name) for name in ("defaultdict", "OrderedDict", "Counter", "deque")
} | {
    ("functools", "partial"), ("copyreg", "_reconstructor"), ("random", "Random"),
})  # fmt: skip

# One spec pipeline per class a spec may name, with the task it learns (the rows it learns come
# from that task: phishing for binary, TrumpApproval for regression, phishing with a text field
# for text extractors).
RECIPES: dict[str, tuple[str, str]] = {
    **{name: (f"{name} | LogisticRegression", "binary") for name in (
        "AdaptiveStandardScaler", "Binarizer", "MaxAbsScaler", "MinMaxScaler", "Normalizer",
        "OneHotEncoder", "OrdinalEncoder", "PreviousImputer", "RobustScaler", "StandardScaler",
        "StatImputer", "PolynomialExtender",
    )},
    # Seeded wherever a class takes a seed: the same recipe pickles into the same globals.
    **{name: (f"{name}(seed=1) | LogisticRegression", "binary")
       for name in ("FeatureHasher", "RBFSampler")},
    "TargetMinMaxScaler": ("TargetMinMaxScaler(regressor=LinearRegression())", "regression"),
    "TargetStandardScaler": ("TargetStandardScaler(regressor=LinearRegression())",
                             "regression"),
    **{name: (f"StandardScaler | {name}", "binary") for name in (
        "ALMAClassifier", "LogisticRegression", "PAClassifier", "Perceptron",
        "SoftmaxRegression",
    )},
    **{name: (f"StandardScaler | {name}", "regression") for name in (
        "BayesianLinearRegression", "LinearRegression", "PARegressor",
    )},
    **{name: (name, "binary") for name in (
        "ExtremelyFastDecisionTreeClassifier", "HoeffdingTreeClassifier", "SGTClassifier",
        "BernoulliNB", "ComplementNB", "GaussianNB", "MultinomialNB", "KNNClassifier",
    )},
    **{name: (f"{name}(seed=1)", "binary")
       for name in ("HoeffdingAdaptiveTreeClassifier", "AMFClassifier")},
    **{name: (name, "regression") for name in (
        "HoeffdingTreeRegressor", "SGTRegressor", "KNNRegressor",
    )},
    **{name: (f"{name}(seed=1)", "regression")
       for name in ("HoeffdingAdaptiveTreeRegressor", "AMFRegressor")},
    "ARFClassifier": ("ARFClassifier(n_models=3, seed=1)", "binary"),
    "ARFRegressor": ("ARFRegressor(n_models=3, seed=1)", "regression"),
    "SRPClassifier": ("SRPClassifier(n_models=3, seed=1)", "binary"),
    "SRPRegressor": ("SRPRegressor(n_models=3, seed=1)", "regression"),
    **{name: (f"HoeffdingTreeClassifier(splitter={name}())", "binary")
       for name in ("GaussianSplitter", "HistogramSplitter")},
    **{name: (f"HoeffdingTreeRegressor(splitter={name}())", "regression")
       for name in ("EBSTSplitter", "QOSplitter", "TEBSTSplitter")},
    **{name: (f"StandardScaler | LogisticRegression(optimizer={name}())", "binary") for name in (
        "AdaGrad", "Adam", "AdaMax", "Momentum", "RMSProp", "SGD", "FTRLProximal",
    )},
    **{name: (f"StandardScaler | LogisticRegression(loss={name}())", "binary")
       for name in ("Log", "Hinge")},
    "CrossEntropy": ("StandardScaler | SoftmaxRegression(loss=CrossEntropy())", "binary"),
    **{name: (f"StandardScaler | LinearRegression(loss={name}())", "regression")
       for name in ("Absolute", "Cauchy", "Huber", "Quantile", "Squared")},
    "LazySearch": ("StandardScaler | KNNClassifier(engine=LazySearch())", "binary"),
    "SWINN": ("StandardScaler | KNNClassifier(engine=SWINN(seed=1))", "binary"),
    **{name: (f"{name}(model=LogisticRegression(), n_models=3, seed=1)", "binary") for name in (
        "ADWINBaggingClassifier", "AdaBoostClassifier", "BaggingClassifier",
        "LeveragingBaggingClassifier",
    )},
    "BaggingRegressor": ("BaggingRegressor(model=LinearRegression(), n_models=3, seed=1)",
                         "regression"),
    **{name: (f"{name}(on='text') | LogisticRegression", "text")
       for name in ("BagOfWords", "TFIDF")},
    **{name: (f"ARFClassifier(n_models=2, seed=1, drift_detector={name}(), "
              f"warning_detector={name}())", "binary")
       for name in ("ADWIN", "NoDrift", "PageHinkley")},
    "KSWIN": ("ARFClassifier(n_models=2, seed=1, drift_detector=KSWIN(seed=1), "
              "warning_detector=KSWIN(seed=2))", "binary"),
    # Compositions, and what a feature function pickles into besides itself (the function is
    # named by reference, and admitted by the operator's feature modules, not by this list).
    "Select": ("Select('https', 'long_url') | LogisticRegression", "binary"),
    "Discard": ("Discard('ip_in_url') | LogisticRegression", "binary"),
    "Renamer": ("Renamer({'https': 'secure'}) | LogisticRegression", "binary"),
    "TransformerUnion": ("TransformerUnion(Select('https'), Select('long_url') | StandardScaler)"
                         " | LogisticRegression", "binary"),
    "TransformerProduct": ("Select('https') * Select('long_url') | LogisticRegression",
                           "binary"),
    "FuncTransformer": (f"FuncTransformer('{_RECIPE_MODULE}:recipe_features') | LogisticRegression",
                        "binary"),
    **{name: (f"Agg(on='long_url', by='https', how={name}()) | LogisticRegression", "binary")
       for name in ("Count", "EWMean", "EWVar", "Max", "Mean", "Min", "Sum", "Var")},
    # An unseen group's mode is None, which a linear model cannot take: imputed.
    "Mode": ("Agg(on='long_url', by='https', how=Mode()) | "
             "StatImputer(('long_url_mode_by_https', Mean())) | LogisticRegression", "binary"),
    "Agg": ("Agg(on='long_url', by=['https', 'is_popular'], how=Mean()) | LogisticRegression",
            "binary"),
    "TargetAgg": ("TargetAgg(by='https', how=Mean()) | LogisticRegression", "binary"),
    **{name: (f"StandardScaler | LogisticRegression(optimizer=SGD({args}))", "binary")
       for name, args in (("Constant", "Constant(0.01)"),
                          ("InverseScaling", "InverseScaling(0.01)"),
                          ("Optimal", "Optimal(Log())"))},
}  # fmt: skip


def recipe_features(x: dict[str, Any]) -> dict[str, Any]:
    """The feature function of the `FuncTransformer` recipe."""
    return {**x, "https_and_popular": x.get("https", 0) * x.get("is_popular", 0)}


def recipes() -> dict[str, tuple[str, str]]:
    """`RECIPES` by the qualified names the spec grammar knows (`preprocessing.StandardScaler`).

    Raises:
        KeyError: a recipe names a class the grammar does not know by that plain name.

    """
    from riverrun.workers.registry.spec import short_names

    names = short_names()
    return {names[short]: recipe for short, recipe in RECIPES.items()}


@cache
def rows(task: str) -> list[tuple[dict[str, Any], Any]]:
    """The rows a recipe of `task` learns (River's bundled datasets)."""
    from river import datasets

    if task == "regression":
        return [({k: float(v) for k, v in x.items()}, float(y))
                for x, y in itertools.islice(datasets.TrumpApproval(), ROWS)]  # fmt: skip
    phishing = [(dict(x), bool(y)) for x, y in itertools.islice(datasets.Phishing(), ROWS)]
    if task == "text":
        words = ("login", "verify", "account", "offer", "invoice", "meeting")
        return [({"text": " ".join(words[j % 6] for j in range(i % 5 + 1)) + (" urgent" * y)}, y)
                for i, (_, y) in enumerate(phishing)]  # fmt: skip
    return phishing


def exercise(name: str) -> Iterator[Any]:
    """Build a class's recipe (by its plain name), yield it untrained, then after 1,000 rows."""
    from riverrun.workers.registry.spec import ModelSpec, build_estimator

    pipeline, task = RECIPES[name]
    label_type = "float" if task == "regression" else "bool"
    spec = ModelSpec(pipeline=pipeline, task="regression" if task == "regression" else "binary",
                     label_type=label_type)  # fmt: skip
    estimator = build_estimator(spec, feature_modules=(_RECIPE_MODULE,))
    yield estimator
    for x, y in rows(task):
        # Copies: a transformer may change the row it is given (`Renamer` does).
        estimator.predict_one(dict(x))
        estimator.learn_one(dict(x), y)
    yield estimator


def globals_of(data: bytes) -> set[tuple[str, str]]:
    """Every global a pickle names, read from its opcodes (nothing of it runs)."""
    from riverrun.workers.registry.pickle_scan import scan_pickle

    named: set[tuple[str, str]] = set()

    def note(module: str, name: str) -> bool:
        named.add((module, name))
        return True

    scan_pickle(data, note, "a recipe")
    return named


def derive() -> set[tuple[str, str]]:
    """Every global the recipes' pickles name, untrained and trained, with the base ones."""
    from riverrun.workers.registry.artifact import deep_dumps

    named = set(BASE_GLOBALS)
    for name in sorted(RECIPES):
        for estimator in exercise(name):
            named |= globals_of(deep_dumps(estimator))
    # The recipe's own feature function is admitted as any feature function is: by setting.
    return {(module, name) for module, name in named if module != _RECIPE_MODULE}


def render(named: set[tuple[str, str]]) -> str:
    """The committed file's text: the River version and the sorted list."""
    import river

    return json.dumps({"river": river.__version__,
                       "globals": [list(pair) for pair in sorted(named)]}, indent=1) + "\n"


@cache
def committed() -> frozenset[tuple[str, str]]:
    """The allow-list the loader uses."""
    data = json.loads(HERE.read_text())
    return frozenset((module, name) for module, name in data["globals"])


def main() -> int:
    """Derive the allow-list and write it beside this module."""
    HERE.write_text(render(derive()))
    print(f"wrote {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
