"""`dce`: dead-code elimination. Keeps the nodes that outputs and updates need."""
from __future__ import annotations

from ..ir.graph import Graph, ancestors


def dce(g: Graph) -> Graph:
    live = ancestors(g.roots())
    g.rebuild([n for n in g.nodes if n.out.name in live])
    return g
