"""One source for the spec grammar and the loader: every class a spec may name builds, learns
1,000 rows, snapshots and loads back answering the same, and the loader admits exactly the
globals those snapshots name (the committed `allowed_globals.json`)."""

from __future__ import annotations

import pytest

from riverrun.workers.registry import Signer, dump_model, open_artifact, seal
from riverrun.workers.registry.allowlist import (
    BASE_GLOBALS,
    RECIPES,
    committed,
    exercise,
    globals_of,
    recipes,
    rows,
)
from riverrun.workers.registry.spec import allowed_classes

SIGNER = Signer(b"k" * 32)
RECIPE_MODULE = "riverrun.workers.registry.allowlist"


def test_every_class_a_spec_may_name_has_a_recipe() -> None:
    assert set(allowed_classes()) == set(recipes())


def test_every_spec_class_learns_snapshots_and_loads_and_the_allow_list_is_what_they_name() -> None:
    named = set(BASE_GLOBALS)
    failures = []
    for name in sorted(RECIPES):
        try:
            for estimator in exercise(name):  # untrained, then after 1,000 rows
                # Through the restricted loader: a fixed point.
                data = dump_model(estimator, [RECIPE_MODULE])
                named |= {g for g in globals_of(data) if g[0] != RECIPE_MODULE}
            loaded = open_artifact(data, seal(data, SIGNER, f"mem://{name}"), SIGNER, 2**28,
                                   feature_modules=[RECIPE_MODULE])
            task = RECIPES[name][1]
            for x, _ in rows(task)[:20]:
                assert loaded.predict_one(dict(x)) == estimator.predict_one(dict(x)), name
        except Exception as exc:  # noqa: BLE001  # every class is tried; all failures listed
            failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    assert not failures, "\n".join(failures)
    # A River upgrade, or a new spec class, changes this: regenerate with
    # `python -m riverrun.workers.registry.allowlist` and read what the new list admits.
    assert named == set(committed()), (
        f"admitted but not named: {sorted(set(committed()) - named)}; "
        f"named but not admitted: {sorted(named - set(committed()))}"
    )


@pytest.mark.parametrize(("module", "name"), [
    ("river._river_rust.stats", "RsRollingQuantile"), ("numpy", "ndarray"),
    ("builtins", "bytearray"), ("river.utils.math", "sigmoid"), ("os", "system"),
])  # fmt: skip
def test_what_no_spec_class_pickles_into_is_not_admitted(module: str, name: str) -> None:
    assert (module, name) not in committed()
