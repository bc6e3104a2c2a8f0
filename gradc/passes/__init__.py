"""Graph passes: the reverse-mode pass and the optimization pipeline.

Passes are registered by name; a pipeline is a comma-separated string of
names run in order, each followed by the verifier.
"""
from __future__ import annotations

from ..ir.verify import check
from .dce import dce

PASSES = {"dce": dce}
DEFAULT_PIPELINE = "dce"


def run_pipeline(graph, pipeline: str | None = None) -> dict:
    """Run the passes of `pipeline` on a copy of `graph`; returns {'optimized': graph}."""
    g = graph.copy()
    for name in filter(None, (p.strip() for p in (pipeline or DEFAULT_PIPELINE).split(","))):
        if name not in PASSES:
            raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(PASSES)}")
        g = PASSES[name](g)
        check(g)
    return {"optimized": g}
