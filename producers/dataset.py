"""The streams replay, training and warm starts read: a catalog of named ones, or your own file.

A dataset is named either by a catalog name (River's bundled datasets and seeded drifting ones)
or by the path of a file: CSV, JSON lines or Parquet (`files`), read with a `FileOptions`
(the target column, a key column, column types).

Every stream yields `(features, label)` (`rows` adds each record's key: a file's key column,
the `keyed` stream's key) with string feature keys, numbers as `float`, and a
JSON-safe label (`bool`, `int`, `float` or `str`), so records encode as riverrun events as they are.

| name            | source                                 | task   | default length | drift at |
|-----------------|----------------------------------------|--------|----------------|----------|
| `agrawal`       | `synth.Agrawal`, function 0            | binary | 10,000         | -        |
| `agrawal-drift` | Agrawal function 0, then function 4    | binary | 10,000         | 5,000    |
| `bananas`       | `datasets.Bananas` (bundled)           | binary | 5,300          | -        |
| `keyed`         | `producers.keyed`, 100 keys' concepts  | binary | 10,000         | -        |
| `phishing`      | `datasets.Phishing` (bundled)          | binary | 1,250          | -        |
| `sea`           | `synth.SEA`, variant 0                 | binary | 10,000         | -        |
| `sea-drift`     | SEA variant 0, then variant 3          | binary | 10,000         | 5,000    |
| `shuttle`       | `datasets.Shuttle` (bundled)           | binary | 49,097         | -        |

Drifting streams use `synth.ConceptDriftStream`: the new concept's share follows a sigmoid centred
on `drift_at` (half the records come from each concept there) with a width of `DRIFT_WIDTH`
records, so the change is abrupt at the scale of the whole stream. Synthetic streams are endless
in River; here they stop at their default length unless `limit` asks for another length.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from riverrun.producers.files import (
    SUFFIXES,
    Features,
    FileOptions,
    Label,
    Row,
    read_file,
    summarize,
)

logger = logging.getLogger(__name__)

Task = Literal["binary", "multiclass", "regression"]

SYNTHETIC_LENGTH = 10_000
DRIFT_AT = 5_000
# Wide enough that ConceptDriftStream's exp(-4 (i - position) / width) stays below float overflow
# (exp(709)) from the first record, narrow enough that the drift is abrupt over 10,000 records.
DRIFT_WIDTH = 100
KEYED_KEYS = 100  # keys of the `keyed` stream


class DatasetInfo(BaseModel):
    """What a named stream is: its task, width, default length and where its concept drifts."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Catalog name, as given to `load`.")
    task: Task = Field(description="binary, multiclass or regression.")
    n_features: int = Field(ge=1, description="Number of features per record.")
    length: int = Field(ge=1, description="Records yielded when no `limit` is given.")
    drift_at: int | None = Field(
        default=None,
        description="Index (0-based record count) around which the concept changes; None when "
        "the stream has no planned drift.",
    )
    synthetic: bool = Field(
        default=False,
        description="Generated from a seed (endless; `limit` sets any length) rather than read "
        "from a bundled file (which ends at `length`).",
    )
    description: str = Field(default="", description="One line on where the stream comes from.")


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    build: Callable[[int], Iterable[tuple[dict[Any, Any], Any]]]
    # Yields (key, features, label): a stream whose records name their key.
    keyed: bool = False


def _keyed(seed: int) -> Iterable[Any]:
    from riverrun.producers.keyed import keyed_concepts

    return keyed_concepts(KEYED_KEYS, 10**12, seed=seed)


def _phishing(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river import datasets

    return datasets.Phishing()


def _bananas(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river import datasets

    return datasets.Bananas()  # type: ignore[no-untyped-call]  # river's class is untyped


def _shuttle(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river import datasets

    return datasets.Shuttle()


def _agrawal(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river.datasets import synth

    return synth.Agrawal(classification_function=0, seed=seed)


def _agrawal_drift(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river.datasets import synth

    return synth.ConceptDriftStream(
        stream=synth.Agrawal(classification_function=0, seed=seed),
        drift_stream=synth.Agrawal(classification_function=4, seed=seed + 1),
        position=DRIFT_AT,
        width=DRIFT_WIDTH,
        seed=seed,
    )


def _sea(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river.datasets import synth

    return synth.SEA(variant=0, seed=seed)


def _sea_drift(seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river.datasets import synth

    return synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, seed=seed),
        drift_stream=synth.SEA(variant=3, seed=seed + 1),
        position=DRIFT_AT,
        width=DRIFT_WIDTH,
        seed=seed,
    )


_CATALOG: dict[str, _Entry] = {
    entry.info.name: entry
    for entry in (
        _Entry(
            DatasetInfo(
                name="agrawal", task="binary", n_features=9, length=SYNTHETIC_LENGTH,
                synthetic=True,
                description="Agrawal loan applications, classification function 0, no drift.",
            ),
            _agrawal,
        ),
        _Entry(
            DatasetInfo(
                name="agrawal-drift", task="binary", n_features=9, length=SYNTHETIC_LENGTH,
                synthetic=True,
                drift_at=DRIFT_AT,
                description="Agrawal, classification function 0 switching to 4 at record 5000.",
            ),
            _agrawal_drift,
        ),
        _Entry(
            DatasetInfo(
                name="bananas", task="binary", n_features=2, length=5_300,
                description="River's bundled Bananas: two banana-shaped clusters.",
            ),
            _bananas,
        ),
        _Entry(
            DatasetInfo(
                name="keyed", task="binary", n_features=5, length=SYNTHETIC_LENGTH,
                synthetic=True,
                description=f"{KEYED_KEYS} keys (user-0 ...), each with logistic coefficients "
                "of its own: what per-key models learn (producers/keyed.py).",
            ),
            _keyed,  # type: ignore[arg-type]  # yields (key, features, label)
            keyed=True,
        ),
        _Entry(
            DatasetInfo(
                name="phishing", task="binary", n_features=9, length=1_250,
                description="River's bundled Phishing websites.",
            ),
            _phishing,
        ),
        _Entry(
            DatasetInfo(
                name="sea", task="binary", n_features=3, length=SYNTHETIC_LENGTH,
                synthetic=True,
                description="SEA concepts, variant 0, no drift.",
            ),
            _sea,
        ),
        _Entry(
            DatasetInfo(
                name="sea-drift", task="binary", n_features=3, length=SYNTHETIC_LENGTH,
                synthetic=True,
                drift_at=DRIFT_AT,
                description="SEA concepts, variant 0 switching to variant 3 at record 5000.",
            ),
            _sea_drift,
        ),
        _Entry(
            DatasetInfo(
                name="shuttle", task="binary", n_features=9, length=49_097,
                description="River's bundled Statlog Shuttle (anomaly = 1).",
            ),
            _shuttle,
        ),
    )
}

DATASETS: tuple[str, ...] = tuple(sorted(_CATALOG))


def _entry(name: str) -> _Entry:
    try:
        return _CATALOG[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}"
        ) from None


def describe(name: str, file: FileOptions | None = None) -> DatasetInfo:
    """Return what the stream is; `ValueError` naming the valid names when unknown."""
    if is_file(name):
        return describe_file(name, file or FileOptions())
    return _entry(name).info


def describe_file(path: str, options: FileOptions) -> DatasetInfo:
    """What a file holds, as a catalog entry: its task from the target's type, its width."""
    summary = summarize(path, options)
    task: Task = {"bool": "binary", "float": "regression"}.get(
        summary.label_type or "", "multiclass")  # type: ignore[assignment]  # one of the three
    return DatasetInfo(name=path, task=task, n_features=max(1, len(summary.features)),
                       length=max(1, summary.rows), description=f"the file {path}")


def is_file(name: str) -> bool:
    """Whether a dataset name is a file's path rather than a catalog name."""
    return name not in _CATALOG and (
        Path(name).suffix.lower() in SUFFIXES or "/" in name or Path(name).exists()
    )


def _feature_value(value: Any) -> float | str:
    if isinstance(value, str):
        return value
    if value is None:
        raise ValueError("a feature value is None: riverrun features are numbers or strings")
    return float(value)


def _label(value: Any) -> Label:
    # numpy scalars and the like expose .item(); JSON needs the plain Python type.
    if hasattr(value, "item") and not isinstance(value, bool | int | float | str):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"label {value!r} of type {type(value).__name__} is not JSON-safe")


def load(
    name: str, seed: int = 42, limit: int | None = None, file: FileOptions | None = None
) -> Iterator[tuple[Features, Label]]:
    """Yield `(features, label)` of the named stream, or of the file `name` is the path of.

    Args:
        name: one of `DATASETS`, or a CSV, JSON-lines or Parquet file.
        seed: seeds synthetic streams and their drift; files ignore it.
        limit: how many records to yield; the stream's default length when None. A file stops
            at its end even when `limit` is larger.
        file: how to read a file (target and key columns, column types).

    Raises:
        ValueError: the name is unknown, or `limit` is negative.
        DatasetError: a file cannot be read; the message names the file and the line.

    """
    for row in rows(name, seed, limit, file):
        yield row.features, row.label


def rows(
    name: str, seed: int = 42, limit: int | None = None, file: FileOptions | None = None
) -> Iterator[Row]:
    """Like `load`, with each record's key (a file's key column; None for the catalog's)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be zero or more, got {limit}")
    if is_file(name):
        yield from itertools.islice(read_file(name, file or FileOptions()), limit)
        return
    entry = _entry(name)
    count = limit if limit is not None else entry.info.length
    logger.debug("loading dataset %s (seed %d, %d records)", name, seed, count)
    stream = entry.build(seed)
    if entry.keyed:
        for key, x, y in itertools.islice(stream, count):  # type: ignore[misc]  # keyed rows
            yield Row({str(k): _feature_value(v) for k, v in x.items()}, _label(y), key)
        return
    for x, y in itertools.islice(stream, count):
        features: Features = {str(k): _feature_value(v) for k, v in x.items()}
        yield Row(features, _label(y))
