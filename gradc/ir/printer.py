"""IR text: one flat, typed line per node, as the parser reads it back.

    graph step(
        %0.weight: f32[1,1] param,
        %x: f32[100,1] input,
        %lr: f32[] scalar
    ) {
      %1: f32[1,1] = transpose %0.weight {perm=(1, 0)}  # seed.py:12  return self.linear(x)
      %d.0.weight: f32[1,1] = grad %9 wrt %0.weight      # seed.py:20  loss.backward()
      %0.weight <- %12
      return %9
    }

After `fuse`, a kernel's members follow its header line, indented further;
the header lists the ops it absorbed and the values it writes (after `plan`
with their arena offsets, or the param an update is written into):

      kernel k2 [matmul+add+le+where] -> %4 @64, %5 @8256; temps %2 @16448; scratch @49216
        %2: f32[64,128] = matmul %x, %1
"""
from __future__ import annotations

import math

import numpy as np

from ..dtypes import DType
from ..prims import Arg, Slice
from .graph import GRAD, Node


def format_literal(x) -> str:
    if isinstance(x, bool):
        return "True" if x else "False"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return repr(x)
    return repr(int(x))


def format_attr(v) -> str:
    if isinstance(v, DType):
        return v.short
    if isinstance(v, np.ndarray):
        return "[" + ", ".join(format_literal(x) for x in v.ravel().tolist()) + "]"
    if isinstance(v, tuple) and any(isinstance(e, (Slice, Arg)) or e is None for e in v):
        return "[" + ", ".join("None" if e is None else repr(e) for e in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(format_attr(e) for e in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, (bool, int, float)):
        return format_literal(v)
    return repr(v)


def format_operand(o) -> str:
    return f"%{o.name}" if hasattr(o, "name") else format_literal(o)


def _node_parts(n: Node) -> tuple[str, str]:
    """A node's code and its source comment ("" without a location)."""
    if n.op == GRAD:
        body = f"grad {format_operand(n.operands[0])} wrt {format_operand(n.operands[1])}"
    else:
        body = n.op + (" " + ", ".join(format_operand(o) for o in n.operands) if n.operands else "")
    if n.attrs:
        body += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in n.attrs.items()) + "}"
    comment = f"  # {n.loc}" + (f"  {n.source}" if n.source else "") if n.loc else ""
    return f"%{n.out.name}: {n.out.type_str} = {body}", comment


def format_node(n: Node, width: int = 0) -> str:
    """One node's line, its source comment (if any) starting at column `width`."""
    code, comment = _node_parts(n)
    return code.ljust(width) + comment if comment else code


def _placed(k, name: str) -> str:
    at = k.offsets.get(name)
    return f"%{name}" + ("" if at is None else f" @%{at}" if isinstance(at, str) else f" @{at}")


def format_kernel(k, members) -> str:
    """`kernel k2 [matmul+add] -> %3 @64; temps %2 @128; scratch @192` (see the module docstring)."""
    ops = "+".join(dict.fromkeys(n.op for n in members))
    line = f"kernel {k.name} [{ops}]"
    if k.stores:
        line += " -> " + ", ".join(_placed(k, s) for s in k.stores)
    if k.temps:
        line += "; temps " + ", ".join(_placed(k, s) for s in k.temps)
    if k.scratch is not None:
        line += f"; scratch @{k.scratch}"
    return line


def format_graph(g) -> str:
    lines = [f"graph {g.name}("]
    for i, v in enumerate(g.inputs):
        lines.append(f"    %{v.name}: {v.type_str} {v.kind}" + ("," if i < len(g.inputs) - 1 else ""))
    lines.append(") {")
    parts = [_node_parts(n) for n in g.nodes]  # formatted once: large graphs are printed for cache keys
    width = min(max((len(code) + 2 * (n.kernel is not None) for (code, _), n in zip(parts, g.nodes)), default=0), 72)
    members: dict = {}
    for n in g.nodes:
        if n.kernel is not None:
            members.setdefault(n.kernel, []).append(n)
    current = None
    for n, (code, comment) in zip(g.nodes, parts):
        if n.kernel != current and n.kernel is not None:
            lines.append("  " + format_kernel(g.kernels[n.kernel], members[n.kernel]))
        current = n.kernel
        indent = "    " if n.kernel is not None else "  "
        lines.append(indent + (code.ljust(width - len(indent) + 2) + comment if comment else code))
    for target, v in g.updates:
        lines.append(f"  %{target.name} <- %{v.name}")
    lines.append("  return" + ("" if not g.outputs else " " + ", ".join(f"%{v.name}" for v in g.outputs)))
    lines.append("}")
    return "\n".join(lines) + "\n"
