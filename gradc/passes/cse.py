"""`cse`: common-subexpression elimination.

Two nodes compute the same thing when they apply the same op to the same
operands with equal attributes; the later one is replaced by the earlier,
whose name and source line stay (the transpose of a weight made in the
forward pass and again in the backward pass becomes one node). Equality is
exact: literals and attributes are compared by type and bits (`0.0` and
`-0.0` differ), const arrays by dtype, shape and bytes. The operands of
commutative ops are compared as a set (`add %a, %b` is `add %b, %a`, which
IEEE arithmetic guarantees bit for bit).
"""
from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..ir.graph import Graph, Value
from .manager import Rewriter, register_pass

COMMUTATIVE = {"add", "mul", "eq", "ne", "logical_and", "logical_or"}


def key(v):
    """A hashable key equal for two attributes or literals exactly when they are the same."""
    if isinstance(v, Value):
        return ("%", v.name)
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, DType):
        return ("dtype", v.name)
    if isinstance(v, (tuple, list)):
        return (type(v).__name__,) + tuple(key(e) for e in v)
    if isinstance(v, float):
        return ("float", v.hex())
    if isinstance(v, np.generic):
        return key(v.item())
    return (type(v).__name__, v)


def node_key(n):
    operands = [key(o) for o in n.operands]
    if n.op in COMMUTATIVE:
        operands.sort()
    return (n.op, tuple(operands), tuple(sorted((k, key(v)) for k, v in n.attrs.items())))


@register_pass("cse")
def cse(graph: Graph) -> Graph:
    """Compute each distinct (op, operands, attributes) once."""
    seen = {}

    def visit(rw, n):
        k = node_key(n)
        if k in seen:
            return seen[k]
        seen[k] = n.out
        return None

    return Rewriter(graph).run(visit)
