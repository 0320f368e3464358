"""Models as the scorer sees them: a small batch-scoring protocol over River estimators."""

from __future__ import annotations

from riverrun.workers.scorer.model.generic import RiverScorer
from riverrun.workers.scorer.model.linear import LinearPipelineScorer, linear_fast_path
from riverrun.workers.scorer.model.model_file import FileModelSource, load_model_file
from riverrun.workers.scorer.model.protocol import BatchScorer, RowFailure, ServedModel
from riverrun.workers.scorer.model.readonly import freeze_for_scoring
from riverrun.workers.scorer.model.source import ModelSource, build_scorer, serve

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
    "serve",
]
