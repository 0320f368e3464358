"""`riverrun train`: fit `StandardScaler | LogisticRegression` on a dataset prefix and pickle it.

The model file `riverrun score --model-file` serves, for operators who have no pipeline of their
own yet. Like the demo, this is a composition root that reads datasets from `producers/`.
"""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import Any

from riverrun.producers.dataset import DATASETS, is_file, load
from riverrun.producers.files import FileOptions, add_file_flags, file_options
from riverrun.workers.runtime.errors import ConfigurationError

logger = logging.getLogger(__name__)


def train_linear(
    dataset: str, limit: int, seed: int, learning_rate: float = 0.01,
    file: FileOptions | None = None,
) -> Any:
    """A `StandardScaler | LogisticRegression` fitted online on the first `limit` records.

    When the records have category features (a file's), they are one-hot encoded beside the
    scaled numbers: `(Select(numbers) | StandardScaler) + (Select(categories) | OneHotEncoder)`.
    """
    from river import compose, linear_model, optim, preprocessing  # on use: a quick parser

    records = list(load(dataset, seed=seed, limit=limit, file=file))
    categories = sorted({k for x, _ in records for k, v in x.items() if isinstance(v, str)})
    numbers = sorted({k for x, _ in records for k in x} - set(categories))
    scaled: Any = preprocessing.StandardScaler()
    if categories:
        scaled = ((compose.Select(*numbers) | preprocessing.StandardScaler())
                  + (compose.Select(*categories) | preprocessing.OneHotEncoder()))  # fmt: skip
    model = scaled | linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate))
    for x, y in records:
        model.learn_one(x, y)
    return model


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun train`."""
    parser.add_argument("--dataset", required=True, metavar="DATASET",
                        help=f"Dataset to learn: one of {', '.join(DATASETS)}, or a CSV, "
                        "JSON-lines or Parquet file (with --target).")
    add_file_flags(parser)
    parser.add_argument("--limit", type=int, default=2000, help="Records to learn from [2000].")
    parser.add_argument("--seed", type=int, default=1, help="Seed of synthetic datasets [1].")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="SGD rate [0.01].")
    parser.add_argument("--out", type=Path, required=True, help="Path of the pickle to write.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    file = file_options(args)
    if is_file(args.dataset) and file.target is None:
        raise ConfigurationError(f"--target must name the label column of {args.dataset}")
    try:
        model = train_linear(args.dataset, args.limit, args.seed, args.learning_rate, file)
    except ValueError as exc:  # an unknown name, or a file row that cannot be read
        raise ConfigurationError(str(exc)) from exc
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(pickle.dumps(model))
    from riverrun.workers.registry.render import render_pipeline

    print(f"wrote {args.out} ({render_pipeline(model)} on the first {args.limit} records of "
          f"{args.dataset})")
    return 0
