"""Artifacts are checked (size, signature, digest) before unpickling, then restrictively."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import compose, datasets, forest, linear_model, naive_bayes, optim, preprocessing, tree

from riverrun.workers.registry import (
    FileArtifactStore,
    RefusedArtifact,
    Signer,
    dump_model,
    open_artifact,
    seal,
)

SIGNER = Signer(b"test-key")
LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def phishing() -> list[tuple[dict[str, Any], bool]]:
    return list(datasets.Phishing())[:300]


def _stringly(x: dict[str, Any]) -> dict[str, Any]:
    return {k: str(round(v, 1)) for k, v in x.items()}


MODELS: dict[str, tuple[Callable[[], Any], Callable[[Any, dict[str, Any], bool], None]]] = {
    "scaled-logreg": (
        lambda: preprocessing.StandardScaler()
        | linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
        lambda m, x, y: m.learn_one(x, y),
    ),
    "hoeffding-tree": (tree.HoeffdingTreeClassifier, lambda m, x, y: m.learn_one(x, y)),
    "gaussian-nb": (naive_bayes.GaussianNB, lambda m, x, y: m.learn_one(x, y)),
    "arf": (lambda: forest.ARFClassifier(n_models=3, seed=1), lambda m, x, y: m.learn_one(x, y)),
    "linear-regression": (
        lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
        lambda m, x, y: m.learn_one(x, float(y)),
    ),
    "one-hot-logreg": (
        lambda: compose.Pipeline(preprocessing.OneHotEncoder(), linear_model.LogisticRegression()),
        lambda m, x, y: m.learn_one(_stringly(x), y),
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_allowed_models_round_trip_byte_identically(
    name: str, phishing: list[tuple[dict[str, Any], bool]]
) -> None:
    build, learn = MODELS[name]
    model = build()
    for x, y in phishing:
        learn(model, x, y)
    data = dump_model(model)
    loaded = open_artifact(data, seal(data, SIGNER, "mem://x"), SIGNER, LIMIT)
    assert type(loaded) is type(model)
    assert dump_model(loaded) == data


@pytest.fixture
def sealed(phishing: list[tuple[dict[str, Any], bool]]) -> tuple[bytes, Any]:
    model = tree.HoeffdingTreeClassifier()
    for x, y in phishing:
        model.learn_one(x, y)
    data = dump_model(model)
    return data, seal(data, SIGNER, "mem://ht")


def test_flipped_byte_is_refused(sealed: tuple[bytes, Any]) -> None:
    data, ref = sealed
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(RefusedArtifact) as caught:
        open_artifact(bytes(flipped), ref, SIGNER, LIMIT)
    assert caught.value.error_class == "BadSignature"


def test_wrong_key_is_refused(sealed: tuple[bytes, Any]) -> None:
    data, ref = sealed
    with pytest.raises(RefusedArtifact, match="SIGNING_KEY") as caught:
        open_artifact(data, ref, Signer(b"another-key"), LIMIT)
    assert caught.value.error_class == "BadSignature"


def test_wrong_digest_is_refused(sealed: tuple[bytes, Any]) -> None:
    data, ref = sealed
    forged = ref.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(RefusedArtifact) as caught:
        open_artifact(data, forged, SIGNER, LIMIT)
    assert caught.value.error_class == "BadDigest"


def test_truncated_is_refused(sealed: tuple[bytes, Any]) -> None:
    data, ref = sealed
    with pytest.raises(RefusedArtifact) as caught:
        open_artifact(data[:-10], ref, SIGNER, LIMIT)
    assert caught.value.error_class == "Truncated"


def test_oversize_is_refused(sealed: tuple[bytes, Any]) -> None:
    data, ref = sealed
    with pytest.raises(RefusedArtifact, match="MAX_ARTIFACT_BYTES") as caught:
        open_artifact(data, ref, SIGNER, len(data) - 1)
    assert caught.value.error_class == "Oversized"


class _RunsCode:
    def __init__(self, call: Callable[..., Any], *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.call, self.args


@pytest.mark.parametrize(
    ("callable_", "named"),
    [
        (os.system, "posix.system"),
        (eval, "builtins.eval"),
        (pickle.loads, "_pickle.loads"),
    ],
)
def test_signed_pickle_of_a_disallowed_callable_runs_nothing(
    tmp_path: Path, callable_: Callable[..., Any], named: str
) -> None:
    canary = tmp_path / "canary"
    if callable_ is os.system:
        payload = _RunsCode(os.system, f"touch {canary}")
    else:
        payload = _RunsCode(callable_, "1")
    data = pickle.dumps(payload, protocol=5)
    ref = seal(data, SIGNER, "mem://evil")
    with pytest.raises(RefusedArtifact) as caught:
        open_artifact(data, ref, SIGNER, LIMIT)
    assert caught.value.error_class == "ForbiddenGlobal"
    assert named in caught.value.reason
    assert not canary.exists()


def test_getattr_in_a_pickle_finds_river_methods_only() -> None:
    # The classic gadget: getattr(object, "__subclasses__") reaches every class in the process.
    data = pickle.dumps(_RunsCode(getattr, object, "__subclasses__"), protocol=5)
    with pytest.raises(RefusedArtifact, match="not a River method") as caught:
        open_artifact(data, seal(data, SIGNER, "mem://evil"), SIGNER, LIMIT)
    assert caught.value.error_class == "ForbiddenGlobal"


def test_river_functions_are_not_classes() -> None:
    from river.utils import math as river_math

    data = pickle.dumps(_RunsCode(river_math.sigmoid, 0.0), protocol=5)
    with pytest.raises(RefusedArtifact, match="river.utils.math.sigmoid"):
        open_artifact(data, seal(data, SIGNER, "mem://f"), SIGNER, LIMIT)


def test_garbage_is_refused_not_crashed() -> None:
    data = b"\x80\x05not a pickle at all"
    with pytest.raises(RefusedArtifact) as caught:
        open_artifact(data, seal(data, SIGNER, "mem://g"), SIGNER, LIMIT)
    assert caught.value.error_class == "NotAPickle"


def test_signer_rejects_malformed_signatures() -> None:
    assert SIGNER.verify(b"x", SIGNER.sign(b"x"))
    assert not SIGNER.verify(b"x", "é" * 64)
    assert not SIGNER.verify(b"x", "")


def test_dump_model_is_deterministic(phishing: list[tuple[dict[str, Any], bool]]) -> None:
    model = forest.ARFClassifier(n_models=2, seed=3)
    for x, y in phishing[:100]:
        model.learn_one(x, y)
    assert dump_model(model) == dump_model(model)


def test_file_store_round_trip(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    location = store.put("fraud", 2, 7, b"bytes" * 1000)
    assert location.startswith("file:///")
    assert store.get(location, 5000, 10_000) == b"bytes" * 1000
    from riverrun.workers.registry import ArtifactTooLarge

    with pytest.raises(ArtifactTooLarge, match="MAX_ARTIFACT_BYTES"):
        store.get(location, 5000, 4000)


def test_dump_model_refuses_what_no_scorer_could_load() -> None:
    with pytest.raises(RefusedArtifact, match="posix.system"):
        dump_model(_RunsCode(os.system, "true"))


def test_registry_settings_need_a_key_or_insecure_dev(caplog: pytest.LogCaptureFixture) -> None:
    from pydantic import SecretStr

    from riverrun.workers.registry import RegistrySettings
    from riverrun.workers.runtime.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="RIVERRUN_REGISTRY__SIGNING_KEY is not set"):
        RegistrySettings().signer()
    keyed = RegistrySettings(signing_key=SecretStr("k" * 32)).signer()
    assert keyed.verify(b"x", Signer(b"k" * 32).sign(b"x"))
    # A short key is refused, naming the setting and the length it needs, outside --insecure-dev.
    with pytest.raises(ConfigurationError, match="SIGNING_KEY is 3 bytes: .* at least 32"):
        RegistrySettings(signing_key=SecretStr("abc")).signer()
    assert RegistrySettings(signing_key=SecretStr("abc"), insecure_dev=True).signer()
    assert "s3cr3t" not in repr(RegistrySettings(signing_key=SecretStr("s3cr3t")))
    with caplog.at_level("WARNING"):
        dev = RegistrySettings(insecure_dev=True).signer()
    assert "INSECURE" in caplog.text
    assert not dev.verify(b"x", keyed.sign(b"x"))
