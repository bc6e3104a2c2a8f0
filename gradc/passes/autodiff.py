"""The reverse-mode pass: turn `grad` markers into the backward graph.

For each `grad %loss wrt %p` marker (markers of one `backward()` call are
handled together) the pass sweeps the forward nodes that lead to `%loss` in
reverse order, asking each op's vjp rule (from the registry) for the
cotangents of its operands. Rules are called on symbolic tensors, so they
emit IR nodes, each tagged with the source line of the forward node it
differentiates. Only operands on a path from a requested input to the loss
get cotangents; a value used more than once gets its contributions added;
broadcasting is undone inside the rules. Gradients are named after their
primal (`%d.0.weight`, `%d.7`). Finally dead code is removed, so only what
the outputs and updates need survives.
"""
from __future__ import annotations

import numpy as np

from ..ir.builder import GraphBuilder, symbolic_tensor
from ..ir.graph import GRAD, Graph, Value
from ..ir.verify import check
from ..prims import REGISTRY, Aval, make_const_value
from .dce import dce


def autodiff(graph: Graph) -> Graph:
    """A new graph in which every `grad` marker is replaced by its gradient."""
    g = graph.copy()
    old_nodes, out = g.nodes, []
    g.nodes = out  # the builder appends here
    subst: dict[str, Value] = {}
    rename: list[tuple[Value, str]] = []
    b = GraphBuilder(g)
    i = 0
    with b:
        while i < len(old_nodes):
            n = old_nodes[i]
            if n.op != GRAD:
                n.operands = [subst.get(o.name, o) if isinstance(o, Value) else o for o in n.operands]
                out.append(n)
                i += 1
                continue
            loss = subst.get(n.operands[0].name, n.operands[0])
            group = []
            while i < len(old_nodes) and old_nodes[i].op == GRAD and old_nodes[i].operands[0] is n.operands[0]:
                group.append(old_nodes[i])
                i += 1
            wrt = [m.operands[1] for m in group]
            b.loc = (n.loc, n.source)
            grads = _backward(b, list(out), loss, wrt, rename)
            for m, gv in zip(group, grads):
                subst[m.out.name] = gv
                rename.insert(0, (gv, m.out.name))
    g.outputs = [subst.get(v.name, v) for v in g.outputs]
    g.updates = [(t, subst.get(v.name, v)) for t, v in g.updates]
    g.rebuild(out)
    g = dce(g)
    _apply_names(g, rename)
    check(g)
    return g


def _backward(b: GraphBuilder, nodes, loss: Value, wrt: list[Value], rename) -> list[Value]:
    """Emit the gradient of `loss` with respect to each of `wrt`; return their values."""
    # values on a path from a requested input to the loss
    below = {w.name for w in wrt}
    for n in nodes:
        if any(o.name in below for o in n.inputs):
            below.add(n.out.name)
    above = _ancestor_names(loss)
    needed = below & above
    seed = b.emit("const", [], {"value": make_const_value(np.ones((), loss.dtype.np))}, Aval((), loss.dtype))
    cot = {loss.name: seed}
    created = {seed.name}
    for n in reversed(nodes):
        g = cot.get(n.out.name)
        if g is None or n.op == GRAD:
            continue
        needs = tuple(isinstance(o, Value) and o.name in needed for o in n.operands)
        if not any(needs):
            continue
        prim = REGISTRY[n.op]
        b.loc = (n.loc, n.source)
        operands = [symbolic_tensor(o) if isinstance(o, Value) else o for o in n.operands]
        cts = prim.cotangents(symbolic_tensor(g), operands, symbolic_tensor(n.out), n.attrs, needs)
        for o, ct, need in zip(n.operands, cts, needs):
            if not need or ct is None:
                continue
            cv = b.value_of(ct)
            if o.name in cot:
                cv = b.value_of(symbolic_tensor(cot[o.name]) + symbolic_tensor(cv))
            cot[o.name] = cv
            created.add(cv.name)
        if n.out.name != loss.name:
            rename.append((g, f"d.{n.out.name}"))
    rename.append((seed, f"d.{loss.name}"))
    grads = []
    for w in wrt:
        if w.name in cot:
            grads.append(cot[w.name])
        else:  # the loss does not depend on w: its gradient is zero
            zero = make_const_value(np.zeros(w.shape, w.dtype.np))
            grads.append(b.emit("const", [], {"value": zero}, Aval(w.shape, w.dtype)))
    return grads


def _ancestor_names(v: Value) -> set:
    from ..ir.graph import ancestors

    return ancestors([v])


def _apply_names(g: Graph, rename):
    """Give cotangent values readable names (`%d.7` is the gradient of `%7`), first claim wins."""
    live = {v.name: v for v in g.values()}
    done = set()
    for v, name in rename:
        if id(v) in done or live.get(v.name) is not v or name in live or not v.name.isdigit():
            continue
        del live[v.name]
        v.name = name
        live[name] = v
        done.add(id(v))
    g.rebuild(g.nodes)


def grad(graph: Graph, wrt) -> Graph:
    """Gradients of a graph's scalar output: a graph returning that output and
    the gradient with respect to each named input, in order."""
    g = graph.copy()
    if len(g.outputs) != 1 or g.outputs[0].shape != ():
        raise ValueError(f"grad() needs a graph with one scalar output; {g.name} returns {g.outputs}")
    loss = g.outputs[0]
    marks = []
    for name in wrt:
        w = g.input(name)
        marks.append(g.add_node(GRAD, [loss, w], {}, w.dtype, w.shape, name=g.fresh_name(f"d.{name}")))
    g.outputs = [loss] + marks
    return autodiff(g)
