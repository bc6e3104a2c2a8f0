"""The reference interpreter: evaluate a graph on NumPy with the registry's impls.

It is the oracle every pass and the code generator are tested against.
"""
from __future__ import annotations

import numpy as np

from ..prims import REGISTRY
from .graph import GRAD, Graph


def interpret(graph: Graph, inputs: dict) -> dict:
    """Evaluate `graph` on `{input name: array}`.

    Returns `{name: array}` for every output and for every updated param or
    state (the value it would be given). State inputs that no node reads
    (optimizer buffers the step creates) may be omitted. A graph that still
    holds `grad` markers is run through the reverse-mode pass first.
    """
    if any(n.op == GRAD for n in graph.nodes):
        from ..passes.autodiff import autodiff

        graph = autodiff(graph)
    read = {o.name for n in graph.nodes for o in n.inputs} | {v.name for v in graph.outputs}
    env = {}
    for v in graph.inputs:
        if v.name in inputs:
            a = np.asarray(inputs[v.name])
            if tuple(a.shape) != v.shape:
                raise ValueError(f"input %{v.name}: expected shape {list(v.shape)}, got {list(a.shape)}")
            env[v.name] = a.astype(v.dtype.np, copy=False)
        elif v.name in read:
            raise KeyError(f"missing input %{v.name} ({v.type_str} {v.kind})")
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            args = [env[o.name] if hasattr(o, "name") else o for o in n.operands]
            out = REGISTRY[n.op].impl(*args, **n.attrs)
            env[n.out.name] = np.asarray(out).astype(n.out.dtype.np, copy=False)
    result = {v.name: env[v.name] for v in graph.outputs}
    for target, v in graph.updates:
        result[target.name] = env[v.name]
    return result
