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

from riverrun.producers.dataset import DATASETS, load

logger = logging.getLogger(__name__)


def train_linear(dataset: str, limit: int, seed: int, learning_rate: float = 0.01) -> Any:
    """A `StandardScaler | LogisticRegression` fitted online on the first `limit` records."""
    from river import linear_model, optim, preprocessing  # on use: the parser stays quick

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(learning_rate)
    )
    for x, y in load(dataset, seed=seed, limit=limit):
        model.learn_one(x, y)
    return model


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun train`."""
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="Dataset to learn.")
    parser.add_argument("--limit", type=int, default=2000, help="Records to learn from [2000].")
    parser.add_argument("--seed", type=int, default=1, help="Seed of synthetic datasets [1].")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="SGD rate [0.01].")
    parser.add_argument("--out", type=Path, required=True, help="Path of the pickle to write.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    model = train_linear(args.dataset, args.limit, args.seed, args.learning_rate)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(pickle.dumps(model))
    print(f"wrote {args.out} (StandardScaler | LogisticRegression on {args.limit} {args.dataset})")
    return 0
