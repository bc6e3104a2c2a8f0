"""`dce`: dead-code elimination.

Keeps only the nodes that the outputs and the updates need: the forward loss
when the step returns only gradients, gradients of frozen parameters, and
`zero_grad` leftovers all go. An update that writes a value back unchanged
(`%p <- %p`) is dropped too. Graph inputs stay: they are the step's calling
convention.
"""
from __future__ import annotations

from ..ir.graph import Graph, ancestors
from .manager import Rewriter, register_pass


def dce(g: Graph) -> Graph:
    """Remove dead code from `g` in place and return it (the reverse-mode pass
    renames values of the result, so it needs its own objects back)."""
    g.updates = [(t, v) for t, v in g.updates if v is not t]
    live = ancestors(g.roots())
    g.rebuild([n for n in g.nodes if n.out.name in live])
    return g


@register_pass("dce")
def dead_code_elimination(graph: Graph) -> Graph:
    """Remove nodes whose values reach no output or update, and updates that change nothing."""
    return dce(Rewriter(graph).run(lambda rw, n: None))  # on an independent copy
