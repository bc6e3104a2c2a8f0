"""Native code for IR graphs through llvmlite (see lower.py for the calling convention).

`compile_graph(graph)` lowers every node to a loop nest in LLVM IR, optimizes
it for the host CPU and links it into its own JIT; the `CompiledGraph` it
returns runs with the reference interpreter's contract (`run`) or, bound once
to parameter arrays, in place with one pointer per call (`bind` + `call`).

Object code is cached on disk by the hash of the LLVM IR text and the host
(see `jit.cache_key`), so compiling a graph seen before skips LLVM's
optimizer and code generator: `GRADC_CACHE_DIR` sets the directory (default
~/.cache/gradc, never pruned: delete it to reclaim the space), `GRADC_CACHE=0`
turns the cache off.
"""
from __future__ import annotations

import time

from ..ir.graph import GRAD, Graph
from . import jit
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
    key = jit.cache_key(lowered.text)
    compiled = _from_cache(graph, lowered, key)
    if compiled is None:
        optimized, obj = jit.optimize(lowered.text)
        compiled = CompiledGraph(graph, lowered, optimized, obj)
        jit.cache_store(key, optimized, obj)
    compiled.compile_seconds = time.perf_counter() - t0
    return compiled


def _from_cache(graph, lowered, key) -> CompiledGraph | None:
    cached = jit.cache_load(key)
    if cached is None:
        return None
    try:
        compiled = CompiledGraph(graph, lowered, *cached)
    except Exception:  # object code the JIT refuses: compile it again (and overwrite it)
        return None
    compiled.from_cache = True
    return compiled
