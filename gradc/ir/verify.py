"""The verifier: structural and type checks every graph must pass.

Checks SSA (each value defined once, before use), every node's type against
its op's shape rule, input kinds, and that updates only write params or
state with a value of the same type. Errors name the node and the rule.
A fused graph's kernels are checked too (passes/fuse.py: members contiguous,
headers as the code generator derives them; passes/plan.py: no two buffers
live at once share bytes, in-place updates are safe).
"""
from __future__ import annotations

from ..prims import REGISTRY, Aval, ShapeError
from .graph import GRAD, INPUT_KINDS, Graph, type_str


class VerifyError(ValueError):
    pass


def verify(g: Graph) -> None:
    defined = {}
    for v in g.inputs:
        if v.kind not in INPUT_KINDS:
            raise VerifyError(f"input %{v.name}: kind {v.kind!r} is not one of {INPUT_KINDS}")
        if v.name in defined:
            raise VerifyError(f"input %{v.name} is defined twice")
        defined[v.name] = v
    for n in g.nodes:
        for o in n.inputs:
            if defined.get(o.name) is not o:
                raise VerifyError(f"node {n.describe()}: operand %{o.name} is not defined before its use (SSA)")
        if n.out.name in defined:
            raise VerifyError(f"node {n.describe()}: %{n.out.name} is defined twice (SSA)")
        if n.op == GRAD:
            loss, wrt = n.operands
            if loss.shape != () or wrt.kind not in ("param", "input", "state") and wrt.producer is not None:
                raise VerifyError(f"node {n.describe()}: grad needs a scalar loss and a graph input, got {loss!r} wrt {wrt!r}")
            want = Aval(wrt.shape, wrt.dtype)
        else:
            prim = REGISTRY.get(n.op)
            if prim is None:
                raise VerifyError(f"node {n.describe()}: unknown op {n.op!r}")
            avals = [Aval(o.shape, o.dtype) if hasattr(o, "name") else Aval((), None) for o in n.operands]
            try:
                want = prim.shape(*avals, **n.attrs)
            except (ShapeError, TypeError) as e:
                raise VerifyError(f"node {n.describe()}: the {n.op} rule rejects its operands: {e}") from None
        if tuple(want.shape) != n.out.shape or want.dtype is not n.out.dtype:
            raise VerifyError(
                f"node {n.describe()}: result type {n.out.type_str} does not match the {n.op} rule, which gives "
                f"{type_str(want.dtype, want.shape)}"
            )
        defined[n.out.name] = n.out
    for v in g.outputs:
        if defined.get(v.name) is not v:
            raise VerifyError(f"return: %{v.name} is not defined")
    targets = set()
    for target, v in g.updates:
        if target.kind not in ("param", "state") or defined.get(target.name) is not target:
            raise VerifyError(f"update %{target.name} <- %{v.name}: only param and state inputs can be updated")
        if defined.get(v.name) is not v:
            raise VerifyError(f"update %{target.name} <- %{v.name}: %{v.name} is not defined")
        if (v.shape, v.dtype) != (target.shape, target.dtype):
            raise VerifyError(f"update %{target.name} <- %{v.name}: type {v.type_str} differs from {target.type_str}")
        if target.name in targets:
            raise VerifyError(f"update %{target.name}: updated twice")
        targets.add(target.name)
    if g.kernels or any(n.kernel is not None for n in g.nodes):
        from ..passes.fuse import check_kernels
        from ..passes.plan import check_plan

        check_kernels(g)
        check_plan(g)


def check(g: Graph) -> Graph:
    """Verify `g`; with GRADC_CHECK_IR=1 (the test suite sets it) also check that
    its text round-trips exactly through the parser."""
    import os

    verify(g)
    if os.environ.get("GRADC_CHECK_IR"):
        from .parser import parse
        from .printer import format_graph

        text = format_graph(g)
        again = format_graph(parse(text))
        if again != text:
            raise VerifyError(f"graph {g.name}: printed IR does not round-trip through the parser")
    return g
