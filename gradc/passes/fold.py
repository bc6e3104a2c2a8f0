"""`fold`: constant folding.

A node whose operands are all constants (const nodes or literals) is
evaluated at compile time with its op's registry impl, exactly as the
reference interpreter would, and becomes a `const`; chains fold in one
sweep, and shape arithmetic on constants (reshape, transpose, concat,
indexing) is folded the same way. Results above `max_elements` stay
computed at run time so graphs do not balloon, and so does a `broadcast`
that would only materialize copies of a smaller constant. An evaluation
that fails (say an out-of-range gather index) is left to fail at run time.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Graph, Value
from ..prims import REGISTRY, make_const_value
from .manager import Rewriter, register_pass

MAX_ELEMENTS = 4096


def _constant(o):
    """The array of a constant operand (a literal is its own value), else None."""
    if not isinstance(o, Value):
        return o
    if o.producer is not None and o.producer.op == "const":
        return o.producer.attrs["value"]
    return None


@register_pass("fold")
def fold(graph: Graph, max_elements: int = MAX_ELEMENTS) -> Graph:
    """Evaluate nodes whose operands are all constants (results up to max_elements elements)."""

    def visit(rw, n):
        if n.op == "const" or not n.inputs or math.prod(n.out.shape) > max_elements:
            return None
        if n.op == "broadcast" and math.prod(n.out.shape) > math.prod(n.inputs[0].shape):
            return None
        args = [_constant(o) for o in n.operands]
        if any(a is None for a in args):
            return None
        try:
            with np.errstate(all="ignore"):
                out = REGISTRY[n.op].impl(*args, **n.attrs)
        except Exception:  # noqa: BLE001 - whatever fails here fails at run time instead
            return None
        value = np.asarray(out).astype(n.out.dtype.np, copy=False)
        return rw.emit("const", [], {"value": make_const_value(value)})

    return Rewriter(graph).run(visit)
