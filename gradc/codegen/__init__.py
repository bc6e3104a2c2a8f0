"""Native code for IR graphs through llvmlite (see lower.py for the calling convention).

`compile_graph(graph)` lowers every node to a loop nest in LLVM IR, optimizes
it for the host CPU and links it into its own JIT; the `CompiledGraph` it
returns runs with the reference interpreter's contract (`run`) or, bound once
to parameter arrays, in place with one pointer per call (`bind` + `call`).

Disk caches make a graph seen before cheap: by the graph's IR text (a
`.graph` file: the lowering's result and the key of its object code, so a
hit skips verification and lowering too), by the LLVM IR text and the host
(an `.obj` file, see `jit.cache_key`: a hit skips LLVM's optimizer and code
generator), and, for a large module, by the text of each kernel's own module
(`.kobj` files, see `jit.compile_module`: another graph with some of the
same kernels compiles only the others). `GRADC_CACHE_DIR` sets the
directory (default ~/.cache/gradc, never pruned: delete it to reclaim the
space), `GRADC_CACHE=0` turns them off. With GRADC_CHECK_IR set (the test suite, which patches the
lowering's settings) graphs are always lowered.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import time

from ..ir.graph import GRAD, Graph
from ..ir.printer import format_graph
from ..passes.manager import source_stamp
from . import jit
from .lower import Lowered, lower_graph, relocate
from .runtime import CompiledGraph

__all__ = ["compile_graph", "CompiledGraph"]


def compile_graph(graph: Graph) -> CompiledGraph:
    """Compile `graph` (running the reverse-mode pass first if it holds `grad` markers)."""
    t0 = time.perf_counter()
    if any(n.op == GRAD for n in graph.nodes):
        from ..passes.autodiff import autodiff

        graph = autodiff(graph)
    gkey = graph_key(graph) if jit.cache_dir() is not None and not os.environ.get("GRADC_CHECK_IR") else None
    compiled = _from_graph_cache(graph, gkey) if gkey else None
    if compiled is None:
        graph.verify()
        lowered = lower_graph(graph)
        key = jit.cache_key(lowered.text)
        compiled = _from_cache(graph, lowered, key) or _compile(graph, lowered, key)
        if gkey:
            jit.cache_store(gkey, key, pickle.dumps(lowered, pickle.HIGHEST_PROTOCOL), ".graph")
    compiled.compile_seconds = time.perf_counter() - t0
    return compiled


def graph_key(graph: Graph) -> str:
    """Names what compiling `graph` gives: its IR text (which round-trips exactly, so equal
    text means an equal graph), the source of gradc, whose lowering turns it into code, the
    host, and the GRADC_ settings (GRADC_NUM_THREADS changes the lowering)."""
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("GRADC_") and k not in _NOT_LOWERING)
    head = b"\0".join([source_stamp(), jit._host(), repr(settings).encode()])
    return hashlib.sha256(head + b"\0" + format_graph(graph).encode()).hexdigest()


_NOT_LOWERING = {"GRADC_CACHE", "GRADC_CACHE_DIR", "GRADC_COMPILE_THREADS", "GRADC_DUMP", "GRADC_LOG"}


def _from_graph_cache(graph, gkey) -> CompiledGraph | None:
    """The graph compiled before: its lowering from the `.graph` file (verified when it was
    stored, and the graph's text is the same), its object code from the `.obj` cache or LLVM."""
    entry = jit.cache_load(gkey, ".graph")
    if entry is None:
        return None
    key, blob = entry
    try:
        lowered = pickle.loads(blob)
    except Exception:  # damaged or of another gradc: lower again (and overwrite it)
        return None
    if not isinstance(lowered, Lowered):
        return None
    lowered = relocate(graph, lowered)
    return _from_cache(graph, lowered, key) or _compile(graph, lowered, key)


def _compile(graph, lowered, key) -> CompiledGraph:
    optimized, obj = jit.compile_module(lowered.text)
    compiled = CompiledGraph(graph, lowered, optimized, obj)
    jit.cache_store(key, optimized, obj)
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
