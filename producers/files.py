"""Your own data as a dataset: CSV, JSON lines or Parquet files, read as River reads a CSV.

River's `stream.iter_csv` conventions: one row a record, a `target` column that is the label,
every other column a feature. Column types are inferred from the first rows (a column whose
values all read as numbers is a number, anything else a category) and can be set by hand
(`number`, `category`, `date` for an ISO date or time read as POSIX seconds, or `skip`). An
empty value is a missing feature. A `key` column gives each record its Kafka key. A row that
cannot be read (a field too many or too few, a number column holding a word, a line that is
not JSON) stops the read with its file and line: nothing is skipped silently.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field

Label = bool | int | float | str
Features = dict[str, float | str]
ColumnType = Literal["number", "category", "date", "skip"]
LabelType = Literal["bool", "int", "float", "str"]

SUFFIXES = frozenset({".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet"})
SAMPLE_ROWS = 1_000
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


class DatasetError(ValueError):
    """A file that cannot be read as a dataset; the message names the file and the line."""


class FileOptions(BaseModel):
    """How a file becomes records: which column is the label, which the key, and the types."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str | None = Field(default=None, description="The label's column.")
    key: str | None = Field(default=None, description="The column that keys each record.")
    types: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="Column types by name (number, category, date, skip); inferred otherwise.",
    )
    delimiter: str | None = Field(
        default=None, description="CSV delimiter; `,` (a tab for .tsv) when unset."
    )


class Row(NamedTuple):
    """One record: its features, its label (None without a target) and its key."""

    features: Features
    label: Any
    key: str | None = None


@dataclass(frozen=True)
class FileSummary:
    """What a file holds, read from a sample: the feature types and the label's type."""

    features: dict[str, ColumnType]
    label_type: LabelType | None
    rows: int


def read_file(path: str, options: FileOptions) -> Iterator[Row]:
    """Every record of a CSV, JSON-lines or Parquet file, in order.

    Raises:
        DatasetError: the file is missing or of no known kind, a named column is absent, or a
            row cannot be read.

    """
    opened = _open(path, options)
    for line, raw in itertools.chain(opened.sample, opened.records):
        yield _row(path, line, raw, opened.types, options, opened.label_type)


def summarize(path: str, options: FileOptions) -> FileSummary:
    """The feature types, label type and row count of a file (reading it once)."""
    opened = _open(path, options)
    count = len(opened.sample) + sum(1 for _ in opened.records)
    features = {name: kind for name, kind in opened.types.items()
                if name not in (options.target, options.key) and kind != "skip"}  # fmt: skip
    return FileSummary(features, opened.label_type, count)


class _Opened(NamedTuple):
    """A file being read: its first rows, the rest to come, and what the first rows say."""

    sample: list[tuple[int, Mapping[str, Any]]]
    records: Iterator[tuple[int, Mapping[str, Any]]]
    types: dict[str, ColumnType]
    label_type: LabelType | None


def _open(path: str, options: FileOptions) -> _Opened:
    source = Path(path)
    if not source.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    records = _raw(source, options)
    sample = list(itertools.islice(records, SAMPLE_ROWS))
    types = _column_types(path, sample, options)
    label_type = _label_type([r[1].get(options.target) for r in sample]) if options.target else None
    return _Opened(sample, records, types, label_type)


def _raw(source: Path, options: FileOptions) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line number, column values) of each record, values as the file holds them."""
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _csv(source, options.delimiter or ("\t" if suffix == ".tsv" else ","))
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _json_lines(source)
    if suffix == ".parquet":
        return _parquet(source)
    raise DatasetError(f"dataset file {source} is not .csv, .tsv, .jsonl or .parquet")


def _csv(source: Path, delimiter: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise DatasetError(f"{source} is empty: a CSV dataset starts with a header row")
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise DatasetError(f"{source}:{reader.line_num}: {len(fields)} fields where the "
                                   f"header has {len(header)}")  # fmt: skip
            yield reader.line_num, dict(zip(header, fields, strict=True))


def _json_lines(source: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with source.open("rb") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{source}:{line}: not JSON ({exc})") from exc
            if not isinstance(value, dict):
                raise DatasetError(f"{source}:{line}: a JSON-lines record must be an object")
            yield line, value


def _parquet(source: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with the server extra
        raise DatasetError("reading Parquet needs pyarrow: pip install 'riverrun[server]'") from exc
    row = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _column_types(
    path: str, sample: list[tuple[int, Mapping[str, Any]]], options: FileOptions
) -> dict[str, ColumnType]:
    columns: dict[str, None] = {}
    for _line, raw in sample:
        columns.update(dict.fromkeys(raw))
    for named, what in ((options.target, "target"), (options.key, "key")):
        if named is not None and sample and named not in columns:
            raise DatasetError(f"{path} has no {what} column {named!r}: its columns are "
                               f"{', '.join(columns)}")  # fmt: skip
    unknown = set(options.types) - set(columns)
    if unknown and sample:
        raise DatasetError(f"{path} has no column {', '.join(sorted(unknown))} to give a type")
    types: dict[str, ColumnType] = {}
    for name in columns:
        given = options.types.get(name)
        if given is not None:
            types[name] = given
            continue
        values = [raw.get(name) for _line, raw in sample]
        types[name] = "number" if all(_is_number(v) for v in values if v not in ("", None)) \
            else "category"  # fmt: skip
    return types


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _label_type(values: list[Any]) -> LabelType:
    present = [v for v in values if v not in ("", None)]
    if all(isinstance(v, bool) or str(v).strip().lower() in _TRUE | _FALSE for v in present):
        return "bool"
    if all(isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("+-").isdigit())
           for v in present):  # fmt: skip
        return "int"
    if all(_is_number(v) for v in present):
        return "float"
    return "str"


def _row(
    path: str, line: int, raw: Mapping[str, Any], types: dict[str, ColumnType],
    options: FileOptions, label_type: LabelType | None,
) -> Row:
    features: Features = {}
    for name, value in raw.items():
        if name in (options.target, options.key) or value in ("", None):
            continue
        kind = types.get(name, "category")
        if kind == "skip":
            continue
        features[name] = _feature(path, line, name, kind, value)
    label = None
    if options.target is not None:
        value = raw.get(options.target)
        if value in ("", None):
            raise DatasetError(f"{path}:{line}: no value in target column {options.target!r}")
        label = _cast_label(path, line, value, label_type)
    key = raw.get(options.key) if options.key is not None else None
    return Row(features, label, None if key in ("", None) else str(key))


def _feature(path: str, line: int, name: str, kind: ColumnType, value: Any) -> float | str:
    if kind == "category":
        return value if isinstance(value, str) else str(value)
    if kind == "date":
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise DatasetError(f"{path}:{line}: column {name!r} holds {value!r}, not an ISO "
                               "date or time") from exc  # fmt: skip
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise DatasetError(f"{path}:{line}: number column {name!r} holds {value!r}: fix the row, "
                           f"or read the column as a category (--types {name}=category)")
    return number


def _cast_label(path: str, line: int, value: Any, label_type: LabelType | None) -> Label:
    text = str(value).strip()
    try:
        if label_type == "bool":
            if isinstance(value, bool):
                return value
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
        elif label_type == "int":
            return int(text)
        elif label_type == "float":
            number = float(text)
            if math.isfinite(number):
                return number
        else:
            return text
    except ValueError:
        pass
    raise DatasetError(f"{path}:{line}: target {value!r} is not a {label_type} like the rows "
                       "before it")


def add_file_flags(parser: Any) -> None:
    """Add `--target`, `--key` and `--types` for commands that read a dataset file."""
    parser.add_argument("--target", default=None,
                        help="A file dataset's label column (River's iter_csv `target`).")
    parser.add_argument("--key", default=None,
                        help="A file dataset's key column (a record key, never a feature).")
    parser.add_argument("--types", action="append", default=None, metavar="COLUMN=TYPE",
                        help="A file column's type: number, category, date or skip "
                        "(repeatable); inferred from the first rows otherwise.")


def file_options(args: Any) -> FileOptions:
    """The `FileOptions` the flags of `add_file_flags` say."""
    types: dict[str, str] = {}
    for item in getattr(args, "types", None) or ():
        column, sep, kind = str(item).partition("=")
        if not sep:
            raise DatasetError(f"--types {item!r} is not COLUMN=TYPE")
        types[column] = kind
    return FileOptions(target=args.target, key=getattr(args, "key", None),
                       types=types)  # type: ignore[arg-type]  # validated by pydantic
