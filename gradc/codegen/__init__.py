"""Native code for IR graphs through llvmlite (see lower.py for the calling convention).

`compile_graph(graph)` lowers every node to a loop nest in LLVM IR, optimizes
it for the host CPU and links it into its own JIT; the `CompiledGraph` it
returns runs with the reference interpreter's contract (`run`) or, bound once
to parameter arrays, in place with one pointer per call (`bind` + `call`).
"""
from __future__ import annotations

import time

from ..ir.graph import GRAD, Graph
from .jit import optimize
from .lower import lower_graph
from .runtime import CompiledGraph

__all__ = ["compile_graph", "CompiledGraph"]


def compile_graph(graph: Graph) -> CompiledGraph:
    """Compile `graph` (running the reverse-mode pass first if it holds `grad` markers)."""
    t0 = time.perf_counter()
    if any(n.op == GRAD for n in graph.nodes):
        from ..passes.autodiff import autodiff

        graph = autodiff(graph)
    graph.verify()
    lowered = lower_graph(graph)
    compiled = CompiledGraph(graph, lowered, *optimize(lowered.text))
    compiled.compile_seconds = time.perf_counter() - t0
    return compiled
