"""Graphviz DOT for a graph: shapes on the edges; forward, backward and update
parts coloured apart."""
from __future__ import annotations

from .graph import GRAD, Graph, ancestors

COLORS = {"input": "#dddddd", "forward": "#cfe2ff", "backward": "#ffd8b0", "update": "#c8f0c8"}


def classify(g: Graph) -> dict:
    """value name -> 'forward' | 'backward' | 'update'.

    Backward nodes depend on a cotangent (a `%d.*` value or a `grad` marker)
    and lead to a parameter's gradient; update nodes depend on a cotangent but
    lead to no gradient (the optimizer's math); everything else is forward.
    """
    params = {v.name for v in g.inputs if v.kind == "param"}
    grads = [n.out for n in g.nodes if n.op == GRAD or n.out.name[2:] in params and n.out.name.startswith("d.")]
    on_grad_path = ancestors(grads)
    tangent = set()
    part = {}
    for n in g.nodes:
        name = n.out.name
        if n.op == GRAD or name.startswith("d.") or any(o.name in tangent for o in n.inputs):
            tangent.add(name)
            part[name] = "backward" if name in on_grad_path else "update"
        else:
            part[name] = "forward"
    return part


def to_dot(g: Graph) -> str:
    part = classify(g)
    out = [f'digraph "{g.name}" {{', "  rankdir=TB;", '  node [shape=box, style=filled, fontname="monospace"];']
    for v in g.inputs:
        out.append(f'  "{v.name}" [label="%{v.name}\\n{v.kind}", fillcolor="{COLORS["input"]}", shape=ellipse];')
    for n in g.nodes:
        label = f"%{n.out.name} = {n.op}" + (f"\\n{n.loc}" if n.loc else "")
        out.append(f'  "{n.out.name}" [label="{label}", fillcolor="{COLORS[part[n.out.name]]}"];')
        for o in n.inputs:
            out.append(f'  "{o.name}" -> "{n.out.name}" [label="{o.type_str}"];')
    for t, v in g.updates:
        out.append(f'  "{v.name}" -> "{t.name}" [style=dashed, color="#2a9d2a", label="update"];')
    for i, v in enumerate(g.outputs):
        out.append(f'  "out{i}" [label="return", shape=ellipse, fillcolor="#ffffff"];')
        out.append(f'  "{v.name}" -> "out{i}" [label="{v.type_str}"];')
    out.append("}")
    return "\n".join(out) + "\n"
