"""Models as the scorer sees them: a small batch-scoring protocol over River estimators."""

from __future__ import annotations

from workers.model.generic import RiverScorer
from workers.model.linear import LinearPipelineScorer, linear_fast_path
from workers.model.model_file import FileModelSource, load_model_file
from workers.model.readonly import freeze_for_scoring
from workers.model.scoring import BatchScorer, ModelSource, RowFailure, ServedModel, build_scorer

__all__ = [
    "BatchScorer",
    "FileModelSource",
    "LinearPipelineScorer",
    "ModelSource",
    "RiverScorer",
    "RowFailure",
    "ServedModel",
    "build_scorer",
    "freeze_for_scoring",
    "linear_fast_path",
    "load_model_file",
]
