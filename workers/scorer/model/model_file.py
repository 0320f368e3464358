"""A model served from a pickled River estimator on disk: the scorer's first model source.

The file is the operator's own; the registry (signed, allow-listed artifacts) replaces it.
"""

from __future__ import annotations

import logging
import pickle  # noqa: S403  # an operator-provided file, not network input
from pathlib import Path

from riverrun.workers.scorer.model.deployment import Deployment
from riverrun.workers.scorer.model.protocol import RowFailure, ServedModel
from riverrun.workers.scorer.model.source import serve

logger = logging.getLogger(__name__)


class ModelFileError(RuntimeError):
    """The model file cannot be served. Disposition: stop at start with this message."""


def load_model_file(
    path: Path, name: str, version: int = 1, snapshot: int = 0, *, fast_path: bool = True
) -> ServedModel:
    """Unpickle a River estimator and wrap it for batch scoring."""
    try:
        with path.open("rb") as handle:
            estimator = pickle.load(handle)  # noqa: S301  # trusted operator file, see module doc
    except FileNotFoundError as exc:
        raise ModelFileError(
            f"--model-file {path} does not exist: pass the path of a pickled River model"
        ) from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ModelFileError(
            f"--model-file {path} is not a pickled River model ({type(exc).__name__}: {exc})"
        ) from exc
    if not (hasattr(estimator, "predict_one") or hasattr(estimator, "predict_proba_one")):
        raise ModelFileError(
            f"--model-file {path} holds a {type(estimator).__name__}, which cannot predict: "
            "pickle a River classifier, regressor or pipeline"
        )
    # The file's modification time stands for its publication.
    served = serve(estimator, name, version, snapshot, path.stat().st_mtime, fast_path=fast_path)
    logger.info("serving %s from %s with %s", served.label, path, type(served.scorer).__name__)
    return served


class FileModelSource:
    """Serves the one model loaded from a file, under the name it was given."""

    def __init__(self, model: ServedModel) -> None:
        self._model = model
        self._deployment = Deployment.single(model)

    def deployment(self, name: str) -> Deployment | None:
        """The file's model answering everything as champion, when the name matches."""
        return self._deployment if name == self._model.name else None

    def refresh(self) -> None:
        """A file does not change while it is served."""

    def unavailable(self, name: str) -> RowFailure:
        """Only the file's model is served."""
        return RowFailure("UnknownModel", f"model {name!r} is not served by this scorer (it "
                          f"serves {self._model.name!r})")

    def served(self) -> list[ServedModel]:
        """Every model this source serves."""
        return [self._model]
