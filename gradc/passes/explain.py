"""`explain(result)`: what the pass pipeline made of a graph, for people.

The report has four parts: the pipeline; the per-pass statistics table
(nodes, kernels, FLOPs, bytes, arena); the kernels of the final graph, each
with the loops it runs, the nodes it absorbed, the user's source lines they
came from and the values it writes; and, for every value that crosses from
one kernel to another, why `fuse` did not put them together. The arena
plan closes it (its size and the updates written in place).
"""
from __future__ import annotations

from . import fuse
from .manager import format_report


def _shape(shape) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _stages(spec) -> str:
    parts = []
    for st in spec.stages:
        n = st.node
        if st.kind == "node":
            parts.append(f"{n.op} {_shape(n.out.shape)} (its own lowering)")
        elif st.kind == "matmul":
            a, b = n.operands
            seen = "" if not st.views else " (" + ", ".join(f"%{v.name}" for v in st.views) + " read transposed)"
            parts.append(f"gemm {_shape(a.shape)} @ {_shape(b.shape)}{seen}")
        elif st.kind == "reduce":
            folds = ", ".join(f"{s[3].op} -> {_shape(s[3].out.shape)}" for s in st.steps if s[0] == "acc")
            parts.append(f"loop {_shape(st.dims)} folding {folds}")
        else:
            dims = _shape(st.dims) if st.dims else "once"
            parts.append(f"{st.kind} {dims}" if st.kind != "loop" else f"loop {dims}")
    return "; ".join(parts)


def _uses(g, kernel_of) -> dict:
    """value name -> where it is used after its kernel: kernels, 'return', 'update %p'."""
    out: dict = {}
    for n in g.nodes:
        for o in n.inputs:
            if n.kernel is not None and kernel_of.get(o.name) not in (None, n.kernel):
                out.setdefault(o.name, []).append(n.kernel)
    for v in g.outputs:
        out.setdefault(v.name, []).append("return")
    for t, v in g.updates:
        out.setdefault(v.name, []).append(f"update %{t.name}")
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def _notes(result) -> dict:
    g = result.graph
    if g.fusion_notes:
        return g.fusion_notes
    for rec in reversed(result.records):  # a graph parsed from text keeps no notes: look at the fuse pass's
        if rec.name.startswith("fuse") and rec.graph_after.fusion_notes:
            return rec.graph_after.fusion_notes
    return {}


def explain(result) -> str:
    """The report for `result`, a `PipelineResult` (what `run_pipeline` returns)."""
    g = result.graph
    lines = [f"graph {g.name}: pipeline {result.pipeline or '(none)'}", ""]
    if result.records:
        lines += ["per pass:", *("  " + ln for ln in format_report(result.records).splitlines()), ""]
    kernels = fuse.kernels(g)
    if not g.kernels:
        lines.append(f"not fused: {len(kernels)} kernels, one per node (add 'fuse' to the pipeline to group them)")
        return "\n".join(lines) + "\n"
    kernel_of = {n.out.name: n.kernel for n in g.nodes}
    uses = _uses(g, kernel_of)
    lines.append(f"{len(kernels)} kernels for {len(g.nodes)} nodes:")
    for k, spec in kernels:
        ops = "+".join(dict.fromkeys(m.op for m in spec.members))
        lines.append(f"  {k.name} [{ops}]: {_stages(spec)}")
        lines.append("      absorbs " + " ".join(f"%{m.out.name}" for m in spec.members))
        for loc, source in dict.fromkeys((m.loc, m.source) for m in spec.members if m.loc):
            lines.append(f"      from {loc}" + (f"  {source}" if source else ""))
        for v in spec.stores:
            at = k.offsets.get(v.name)
            where = "" if at is None else f" in %{at}" if isinstance(at, str) else f" @{at}"
            lines.append(f"      writes %{v.name} {v.type_str}{where} for " + ", ".join(uses.get(v.name, ["nothing"])))
        if spec.temps:
            lines.append("      temps " + ", ".join(f"%{v.name} {v.type_str}" for v in spec.temps))
    notes = _notes(result)
    lines += ["", "where fusion stopped:"]
    crossing = [(n.out.name, o.name) for n in g.nodes for o in n.inputs
                if n.kernel is not None and kernel_of.get(o.name) not in (None, n.kernel)]
    if crossing and not notes:
        lines.append("  (the reasons are recorded when 'fuse' runs: this graph was fused before the pipeline)")
    for user, value in dict.fromkeys(crossing):
        why = notes.get((value, user))
        lines.append(f"  %{value} ({kernel_of[value]}) -> %{user} ({kernel_of[user]})" + (f": {why}" if why else ""))
    if not crossing:
        lines.append("  nowhere: one kernel")
    if any(k.offsets for k in g.kernels.values()):
        from .plan import arena_bytes

        in_place = [f"%{v} -> %{at}" for k in g.kernels.values() for v, at in k.offsets.items() if isinstance(at, str)]
        lines += ["", f"arena: {arena_bytes(g):,} bytes (planned: buffers that are not live at once share bytes)",
                  "in place: " + (", ".join(in_place) if in_place else "no update")]
    return "\n".join(lines) + "\n"
