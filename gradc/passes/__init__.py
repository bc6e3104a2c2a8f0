"""Graph passes: the reverse-mode pass and the optimization pipeline.

Passes are registered by name (see `manager.py`); a pipeline is a
comma-separated string of names run in order, each followed by the
verifier. `DEFAULT_PIPELINE` is what `gradc.compile` runs after the
reverse-mode pass; `gradc opt` runs any pipeline on IR text.
"""
from __future__ import annotations

from .manager import (
    DEFAULT_PIPELINE, PASSES, STATS, PassRecord, PipelineResult, Rewriter, format_report, graph_stats,
    parse_pipeline, register_pass, report, run_pipeline,
)
from . import cse, dce, fold, fuse, plan, simplify  # noqa: F401 - importing a pass module registers it
from .autodiff import autodiff

register_pass("autodiff")(autodiff)

__all__ = ["DEFAULT_PIPELINE", "PASSES", "STATS", "PassRecord", "PipelineResult", "Rewriter", "autodiff",
           "format_report", "graph_stats", "parse_pipeline", "register_pass", "report", "run_pipeline"]
