"""Lower an IR graph to one LLVM module: a kernel function per node and an entry.

Calling convention (what the runtime and a future C export rely on): the
entry `void gradc_<graph>(ptr table)` receives one pointer to a table of
buffer addresses: `table[0]` the arena (64-byte aligned, owned by gradc;
its first word is the status), `table[1]` the constants blob, `table[2+i]`
the buffer of graph input i. Each node's result lives at a fixed offset in
the arena; constants at fixed offsets in the blob (no kernel). The step
computes every node, then, unless a kernel reported an index out of range in
the status word, copies the update values into their params and state: all
reads of a param happen before it is overwritten.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from ..ir.graph import Graph, Node
from ..prims import REGISTRY, Arg
from . import kernels
from .kernels import nbytes
from .emitter import FunctionBuilder, quote
from .scalar import ipow_helpers

ARENA_SLOT, CONSTS_SLOT, FIRST_INPUT_SLOT = 0, 1, 2
STATUS_BYTES = 64  # the status word, padded to keep buffers 64-byte aligned
ALIGN = 64


class Buffer(NamedTuple):
    region: str  # "arena", "const" or "input"
    offset: int  # bytes into the arena or blob; the table slot for inputs
    nbytes: int
    align: int


class IndexCheck(NamedTuple):
    """An index tensor read by a node: each element must lie in [-size, size)."""

    value: str
    size: int
    axis: int
    node: str  # how to name the node in an error


class Lowered(NamedTuple):
    text: str
    entry: str
    buffers: dict  # value name -> Buffer
    arena_bytes: int
    consts: np.ndarray  # uint8, the blob's contents
    outputs: list  # Buffer of each graph output
    input_checks: list  # IndexChecks on graph inputs, done before each call
    node_names: dict  # status code -> node description


def _round(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def describe(n: Node) -> str:
    return f"%{n.out.name} = {n.op}" + (f" ({n.loc})" if n.loc else "")


def index_uses(n: Node):
    """(index operand, size of the axis it indexes, axis) for every index tensor `n` reads."""
    if n.op in ("gather", "scatter_add"):
        shape = n.operands[0].shape if n.op == "gather" else n.attrs["shape"]
        axis = n.attrs["axis"]
        if len(shape):
            yield n.operands[1], shape[axis], axis
    elif n.op in ("index", "scatter_index"):
        shape = n.operands[0].shape if n.op == "index" else n.attrs["shape"]
        axis = 0
        for e in n.attrs["spec"]:
            if e is None:
                continue
            if isinstance(e, Arg):
                yield n.operands[1 + e.k], shape[axis], axis
            axis += 1


def check_indices(a: np.ndarray, c: IndexCheck) -> None:
    """Raise PyTorch's IndexError if an index array holds a value outside [-size, size)."""
    if a.size and (a.min() < -c.size or a.max() >= c.size):
        bad = a[(a < -c.size) | (a >= c.size)].flat[0]
        raise IndexError(
            f"index {bad} is out of bounds for dimension {c.axis} with size {c.size} "
            f"(index tensor %{c.value} read by {c.node})"
        )


def entry_name(graph: Graph) -> str:
    return "gradc_" + re.sub(r"\W", "_", graph.name)


def lower_graph(graph: Graph) -> Lowered:
    buffers, scratch, copies, arena_bytes, consts = _plan_memory(graph)
    input_checks, checked, node_names = _plan_index_checks(graph)
    decls: set = set()
    functions = [ipow_helpers()]
    entry = FunctionBuilder(f"define void @{entry_name(graph)}(ptr noalias nonnull %table) nounwind", decls)
    ptr = _EntryPointers(entry, buffers)
    entry.emit(f"store i64 0, ptr {ptr.arena}")
    for node_id, n in enumerate(graph.nodes, 1):
        if n.op == "const":
            continue
        fn, args = _kernel(n, node_id, buffers, checked.get(node_id, set()), scratch.get(n.out.name), decls)
        functions.append(fn)
        call_args = [f"ptr {ptr.of(name)}" for name in args]
        if n.out.name in scratch:
            call_args.append(f"ptr {ptr.at(scratch[n.out.name])}")
        if node_id in checked:
            call_args.append(f"ptr {ptr.arena}")
        entry.emit(f"call void {quote(f'{n.op}.{n.out.name}')}({', '.join(call_args)})")
    for name, buf in copies.items():
        entry.memcpy(ptr.at(buf), ptr.of(name), buf.nbytes)
    if checked:  # a kernel found an index out of range: leave params and state as they were
        ok, done = entry.fresh("update"), entry.fresh("done")
        status = entry.op(f"load i64, ptr {ptr.arena}")
        entry.emit(f"br i1 {entry.op(f'icmp eq i64 {status}, 0')}, label {ok}, label {done}")
        entry.label(ok)
    for target, v in graph.updates:
        src = ptr.at(copies[v.name]) if v.name in copies else ptr.of(v.name)
        entry.memcpy(ptr.of(target.name), src, nbytes(v))
    if checked:
        entry.emit(f"br label {done}")
        entry.label(done)
    entry.emit("ret void")

    text = "\n\n".join(
        [f"; gradc graph {graph.name}", *sorted(decls), *functions, entry.text(), "!0 = !{i64 64}\n!1 = !{}\n"]
    )
    outputs = [copies.get(v.name, buffers[v.name]) for v in graph.outputs]
    return Lowered(text, entry_name(graph), buffers, arena_bytes, consts, outputs, input_checks, node_names)


def _plan_memory(graph: Graph):
    """Where every value lives: inputs in their table slots, node results (and
    kernel scratch) at fixed arena offsets, constants in the blob."""
    buffers: dict[str, Buffer] = {}
    for i, v in enumerate(graph.inputs):
        buffers[v.name] = Buffer("input", FIRST_INPUT_SLOT + i, nbytes(v), v.dtype.itemsize)
    arena, consts_end, blob, scratch = STATUS_BYTES, 0, [], {}

    def take(nb: int) -> Buffer:
        nonlocal arena
        arena += _round(nb)
        return Buffer("arena", arena - _round(nb), nb, ALIGN)

    for n in graph.nodes:
        if n.op == "const":
            buffers[n.out.name] = Buffer("const", consts_end, nbytes(n.out), ALIGN)
            blob.append((consts_end, n.attrs["value"]))
            consts_end += _round(nbytes(n.out))
            continue
        buffers[n.out.name] = take(nbytes(n.out))
        if kernels.scratch_bytes(n):
            scratch[n.out.name] = take(kernels.scratch_bytes(n))
    # results that are graph inputs are copied first: outputs show the value
    # before the updates, and an update never reads a buffer another one wrote
    copies = {}
    for v in graph.roots():
        if buffers[v.name].region == "input" and v.name not in copies:
            copies[v.name] = take(nbytes(v))
    consts = np.zeros(max(consts_end, ALIGN), np.uint8)
    for off, value in blob:
        raw = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
        consts[off:off + raw.size] = raw
    return buffers, scratch, copies, arena, consts


def _plan_index_checks(graph: Graph):
    """Index tensors that are inputs are checked before each call, constants
    now; the kernels check the ones computed in the graph."""
    input_checks, checked, node_names = [], {}, {}
    for node_id, n in enumerate(graph.nodes, 1):
        node_names[node_id] = describe(n)
        for v, size, axis in index_uses(n):
            c = IndexCheck(v.name, size, axis, describe(n))
            if v.producer is None:
                input_checks.append(c)
            elif v.producer.op == "const":
                check_indices(v.producer.attrs["value"], c)
            else:
                checked.setdefault(node_id, set()).add(v.name)
    return input_checks, checked, node_names


class _EntryPointers:
    """Buffer addresses in the entry function, each computed once on first use."""

    def __init__(self, fb: FunctionBuilder, buffers: dict):
        self.fb, self.buffers, self._done = fb, buffers, {}
        self.arena = self._slot(ARENA_SLOT, aligned=True)
        self.consts = self._slot(CONSTS_SLOT, aligned=True)

    def _slot(self, i: int, aligned=False) -> str:
        p = self.fb.gep("ptr", "%table", i)
        meta = ", !align !0, !nonnull !1" if aligned else ""
        return self.fb.op(f"load ptr, ptr {p}, align 8{meta}", "buf")

    def at(self, buf: Buffer) -> str:
        if buf.region == "input":
            if buf not in self._done:
                self._done[buf] = self._slot(buf.offset)
            return self._done[buf]
        base = self.arena if buf.region == "arena" else self.consts
        return self.fb.gep("i8", base, buf.offset)

    def of(self, name: str) -> str:
        if name not in self._done:
            self._done[name] = self.at(self.buffers[name])
        return self._done[name]


def _param(buf: Buffer, name: str, readonly: bool) -> str:
    attrs = ["noalias"]
    if buf.nbytes:
        attrs += ["nonnull", f"align {buf.align}", f"dereferenceable({buf.nbytes})"]
    if readonly:
        attrs.append("readonly")
    return f"ptr {' '.join(attrs)} {name}"


def _kernel(n: Node, node_id: int, buffers: dict, checked: set, scratch: Buffer | None, decls: set):
    """The function text of node `n`'s kernel and the value names it takes, in order."""
    args = [n.out.name] + list(dict.fromkeys(o.name for o in n.inputs))
    params = [_param(buffers[a], f"%a{j}", j > 0) for j, a in enumerate(args)]
    if scratch is not None:
        params.append(_param(scratch, "%scratch", False))
    if checked:
        params.append("ptr noalias nonnull align 64 dereferenceable(8) %status")
    fb = FunctionBuilder(
        f"define internal void {quote(f'{n.op}.{n.out.name}')}({', '.join(params)}) noinline nounwind", decls
    )
    k = kernels.Kernel(fb, n, {a: f"%a{j}" for j, a in enumerate(args)}, "%status", checked, node_id, "%scratch")
    kernels.lowering(n.op, REGISTRY[n.op].kind)(k)
    k.finish()
    return fb.text(), args
