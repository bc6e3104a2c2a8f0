"""Lower an IR graph to one LLVM module: a function per kernel and an entry.

Calling convention (what the runtime and a future C export rely on): the
entry `void gradc_<graph>(ptr table)` receives one pointer to a table of
buffer addresses: `table[0]` the arena (64-byte aligned, owned by gradc;
its first word is the status), `table[1]` the constants blob, `table[2+i]`
the buffer of graph input i. Where each kernel's values live in the arena is
the graph's plan (passes/plan.py; without one, one buffer after the other);
constants sit at fixed offsets in the blob (no kernel). The step runs every
kernel in order, then, unless a kernel reported an index out of range in
the status word, copies the update values into their params and state (an
update the plan writes in place needs no copy; the status is checked before
the first such kernel runs, so a failed step changes no param). Next to the
entry, `step_wrappers` emits the two ways the runtime calls it: with no
argument on a table set once, and n steps in one call over stacked batches.

A kernel is a group of nodes made by the `fuse` pass (an unfused graph has
one per node). A node alone is emitted by its op's lowering (kernels.py); a
fused kernel by the stages `passes.fuse.analyze` lays out: loop nests whose
bodies compute the members in registers and store what is used outside,
around at most one GEMM or reduction.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from ..ir.graph import Graph, Node
from ..passes.fuse import operands
from ..passes.plan import (  # noqa: F401 - the runtime imports the slot numbers from here
    ALIGN, ARENA_SLOT, CONSTS_SLOT, FIRST_INPUT_SLOT, Buffer, layout,
)
from ..prims import REGISTRY, Arg
from . import gemm, kernels, pool, scalar
from .emitter import FunctionBuilder, mem_type, quote
from .kernels import nbytes
from .loops import Access, contiguous_strides, strided_loops
from .scalar import ipow_helpers


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
    lay = layout(graph)
    input_checks, checked, node_names = _plan_index_checks(graph)
    node_ids = {n.out.name: i for i, n in enumerate(graph.nodes, 1)}
    decls: set = set()
    functions = [ipow_helpers()]
    entry = FunctionBuilder(f"define void @{entry_name(graph)}(ptr noalias nonnull %table) nounwind", decls)
    ptr = _EntryPointers(entry, lay.buffers)
    entry.emit(f"store i64 0, ptr {ptr.arena}")
    done = entry.fresh("done")
    guarded, start = False, len(entry.lines)
    for k, spec in lay.kernels:
        writes_param = any(v.name in lay.in_place for v in spec.stores)
        if writes_param and checked and not guarded:  # a failed index check must leave params as they were
            ok = entry.fresh("in_place")
            status = entry.op(f"load i64, ptr {ptr.arena}")
            entry.emit(f"br i1 {entry.op(f'icmp eq i64 {status}, 0')}, label {ok}, label {done}")
            entry.label(ok)
            guarded = True
        fn, name, args = _kernel(k, spec, lay, checked, node_ids, decls)
        functions.append(fn)
        entry.emit(f"call void {name}({', '.join(f'ptr {ptr.at(b)}' for b in args)})")
    if pool.uses_pool(decls):  # a GEMM runs on the thread pool, whose address the constants blob holds
        entry.lines[start:start] = pool.entry_lines(entry, ptr.consts)
    for name, buf in lay.copies.items():
        entry.memcpy(ptr.at(buf), ptr.of(name), buf.nbytes)
    if checked and not guarded:
        ok = entry.fresh("update")
        status = entry.op(f"load i64, ptr {ptr.arena}")
        entry.emit(f"br i1 {entry.op(f'icmp eq i64 {status}, 0')}, label {ok}, label {done}")
        entry.label(ok)
    for target, v in graph.updates:
        if v.name in lay.in_place:
            continue
        src = ptr.at(lay.copies[v.name]) if v.name in lay.copies else ptr.of(v.name)
        entry.memcpy(ptr.of(target.name), src, nbytes(v))
    if checked:
        entry.emit(f"br label {done}")
        entry.label(done)
    entry.emit("ret void")

    outputs = [lay.copies.get(v.name, lay.buffers[v.name]) for v in graph.outputs]
    wrappers = step_wrappers(graph, lay.buffers, outputs, decls)
    text = "\n\n".join(
        [f"; gradc graph {graph.name}", *sorted(decls), *functions, entry.text(), *wrappers,
         "!0 = !{i64 64}\n!1 = !{}\n"]
    )
    consts = _consts_blob(graph, lay.buffers)
    if pool.uses_pool(decls):
        pool.write_address(consts)
    return Lowered(text, entry_name(graph), lay.buffers, lay.arena_bytes, consts, outputs, input_checks, node_names)


def relocate(graph: Graph, lowered: Lowered) -> Lowered:
    """`lowered`, made by another process for a graph of the same text (the disk cache of
    codegen/__init__.py), with this process's constants blob, as `lower_graph` makes it."""
    consts = _consts_blob(graph, lowered.buffers)
    if pool.uses_pool(lowered.text):
        pool.write_address(consts)
    return lowered._replace(consts=consts)


def _consts_blob(graph: Graph, buffers: dict) -> np.ndarray:
    ends = [b.offset + b.nbytes for b in buffers.values() if b.region == "const"]
    blob = np.zeros(max(max(ends, default=0), ALIGN), np.uint8)
    for n in graph.nodes:
        if n.op == "const":
            off = buffers[n.out.name].offset
            raw = np.ascontiguousarray(n.attrs["value"]).view(np.uint8).reshape(-1)
            blob[off:off + raw.size] = raw
    return blob


def _plan_index_checks(graph: Graph):
    """Index tensors that are inputs are checked before each call, constants
    now; the kernels check the ones computed in the graph."""
    input_checks, checked, node_names = [], {}, {}
    for node_id, n in enumerate(graph.nodes, 1):
        node_names[node_id] = n.describe()
        for v, size, axis in index_uses(n):
            c = IndexCheck(v.name, size, axis, n.describe())
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
        key = (buf.region, buf.offset)
        if key not in self._done:
            if buf.region == "input":
                self._done[key] = self._slot(buf.offset)
            else:
                self._done[key] = self.fb.gep("i8", self.arena if buf.region == "arena" else self.consts, buf.offset)
        return self._done[key]

    def of(self, name: str) -> str:
        return self.at(self.buffers[name])


def batch_inputs(graph: Graph) -> list:
    """The graph inputs a step's caller feeds per batch (kind `input`), in the order `__run` takes them."""
    return [v for v in graph.inputs if v.kind == "input"]


def step_wrappers(graph: Graph, buffers: dict, outputs: list, decls: set) -> list:
    """`@<entry>__table` (a global the runtime sets to the table once), `void <entry>__call()`
    (the entry on that table: a call from Python with no argument to convert) and
    `void <entry>__run(ptr table, ptr steps)`, n steps in one call. `steps` holds
    n, then (address, stride in bytes) of each batch input's stack, then the address
    of each output's stack; each step points the input slots at its batch, runs the
    entry and copies the outputs out. A step whose status word is set ends the run:
    steps[0] becomes the number of steps done. The input slots are restored."""
    name = entry_name(graph)
    call = FunctionBuilder(f"define void @{name}__call() nounwind", decls)
    call.emit(f"call void @{name}(ptr {call.op(f'load ptr, ptr @{name}__table, align 8')})")
    call.emit("ret void")

    run = FunctionBuilder(f"define void @{name}__run(ptr noalias nonnull %table, ptr noalias nonnull %steps) nounwind",
                          decls)
    ptr = _EntryPointers(run, buffers)
    word = iter(range(1, 1 << 30))

    def arg(ty):
        return run.op(f"load {ty}, ptr {run.gep('i64', '%steps', next(word))}, align 8")

    n = run.op("load i64, ptr %steps, align 8")
    feeds = []  # (slot pointer, saved address, stack base, stride)
    for v in batch_inputs(graph):
        slot = run.gep("ptr", "%table", buffers[v.name].offset)
        feeds.append((slot, run.op(f"load ptr, ptr {slot}, align 8"), arg("ptr"), arg("i64")))
    outs = [(arg("ptr"), ptr.at(buf), buf.nbytes) for buf in outputs]
    fail, done = run.fresh("fail"), run.fresh("done")
    with run.loop(n, "s") as s:
        for slot, _, base, stride in feeds:
            run.emit(f"store ptr {run.gep('i8', base, run.op(f'mul i64 {s}, {stride}'))}, ptr {slot}, align 8")
        run.emit(f"call void @{name}(ptr %table)")
        ok = run.fresh("ok")
        status = run.op(f"load i64, ptr {ptr.arena}, align 8")
        run.emit(f"br i1 {run.op(f'icmp eq i64 {status}, 0')}, label {ok}, label {fail}")
        run.label(ok)
        for stack, src, size in outs:
            run.memcpy(run.gep("i8", stack, run.mad(0, s, size)), src, size)
    run.emit(f"br label {done}")
    run.label(fail)
    run.emit(f"store i64 {s}, ptr %steps, align 8")
    run.emit(f"br label {done}")
    run.label(done)
    for slot, saved, _, _ in feeds:
        run.emit(f"store ptr {saved}, ptr {slot}, align 8")
    run.emit("ret void")
    return [f"@{name}__table = global ptr null, align 8", call.text(), run.text()]


# ---------------------------------------------------------------- kernel functions
def _touched(spec):
    """(value, written) for every value the kernel's code reads or writes."""
    out = [(v, True) for v in spec.stores + spec.temps]
    for st in spec.stages:
        if st.kind in ("node", "matmul"):
            out += [(o, False) for o in operands(st)]
        else:
            out += [(v, w) for v, _, w in st.accesses]
    return out


def _kernel(k, spec, lay, checked: dict, node_ids: dict, decls: set):
    """The function text of kernel `k`, its LLVM name and the Buffers it takes, in order."""
    params: dict = {}  # (region, offset) -> [Buffer, written, largest size]
    ptrs = {}
    for v, written in _touched(spec):
        buf = lay.buffers[v.name]
        key = (buf.region, buf.offset)
        if key not in params:
            params[key] = [buf, written, buf.nbytes]
        else:
            params[key][1] |= written
            params[key][2] = max(params[key][2], buf.nbytes)
        ptrs[v.name] = f"%a{list(params).index(key)}"
    heads = [_param(buf, size, f"%a{j}", not written) for j, (buf, written, size) in enumerate(params.values())]
    args = [buf for buf, _, _ in params.values()]
    if k.name in lay.scratch:
        heads.append(_param(lay.scratch[k.name], lay.scratch[k.name].nbytes, "%scratch", False))
        args.append(lay.scratch[k.name])
    node_checks = [node_ids[m.out.name] for m in spec.members if node_ids[m.out.name] in checked]
    if node_checks:
        heads.append("ptr noalias nonnull align 64 dereferenceable(8) %status")
        args.append(Buffer("arena", 0, 8, ALIGN))
    if len(spec.members) == 1:
        name = quote(f"{spec.members[0].op}.{spec.members[0].out.name}")
    else:
        name = quote(f"{k.name}." + "+".join(dict.fromkeys(m.op for m in spec.members))[:60])
    fb = FunctionBuilder(f"define internal void {name}({', '.join(heads)}) noinline nounwind", decls)
    if len(spec.stages) == 1 and spec.stages[0].kind == "node":
        n = spec.stages[0].node
        node_id = node_ids[n.out.name]
        kn = kernels.Kernel(fb, n, ptrs, "%status", checked.get(node_id, set()), node_id, "%scratch")
        kernels.lowering(n.op, REGISTRY[n.op].kind)(kn)
        kn.finish()
    else:
        stages = list(spec.stages)
        while stages:
            st = stages.pop(0)
            if st.kind == "matmul" and stages and gemm.fuses_epilogue(st, stages[0]):
                _matmul(fb, st, ptrs, stages.pop(0))  # run on each finished panel of the GEMM, by its threads
            else:
                _stage(fb, st, ptrs)
        fb.emit("ret void")
    return fb.text(), name, args


def _param(buf: Buffer, size: int, name: str, readonly: bool) -> str:
    attrs = ["noalias"]
    if size:
        attrs += ["nonnull", f"align {buf.align}", f"dereferenceable({size})"]
    if readonly:
        attrs.append("readonly")
    return f"ptr {' '.join(attrs)} {name}"


def _stage(fb: FunctionBuilder, st, ptrs: dict) -> None:
    if st.kind == "matmul":
        return _matmul(fb, st, ptrs)
    _fill_accumulators(fb, st, ptrs)
    strided_loops(fb, st.dims, _accesses(st, ptrs), lambda p: _body(fb, st, p), _accumulators(st))


def _accumulators(st) -> list:
    """Indices of the accesses loop stage `st` folds reductions into."""
    return [step[2] for step in st.steps if step[0] == "acc"]


def _fill_accumulators(fb: FunctionBuilder, st, ptrs: dict) -> None:
    """The results of the reductions loop stage `st` folds into, set to their identity first."""
    for kind, *step in st.steps:
        if kind == "acc":
            kernels.fill_identity(fb, step[2], ptrs[step[2].out.name])


def _accesses(st, ptrs: dict) -> list:
    return [Access(ptrs[v.name], mem_type(v.dtype), 0, s) for v, s, _ in st.accesses]


def _body(fb: FunctionBuilder, st, p: list) -> None:
    """Loop stage `st`'s body at one index, `p` the element pointer of each of its accesses."""
    regs = []  # register i: the LLVM value step i defines
    for kind, *step in st.steps:
        if kind == "load":
            regs.append(scalar.load(fb, p[step[0]], st.accesses[step[0]][0].dtype))
        elif kind == "op":
            node, args = step
            regs.append(kernels.apply(fb, node, [regs[a] for a in args]))
        elif kind == "store":
            scalar.store(fb, regs[step[0]], p[step[1]], st.accesses[step[1]][0].dtype)
            regs.append(None)
        else:  # "acc"
            kernels.fold(fb, step[2], regs[step[0]], p[step[1]])
            regs.append(None)


def _matmul(fb: FunctionBuilder, st, ptrs: dict, epilogue=None) -> None:
    n = st.node
    if not n.out.dtype.is_floating_point:
        kernels.matmul(kernels.Kernel(fb, n, ptrs, None, set(), 0, "%scratch"))
        return

    def operand(v):
        src, strides = gemm.through_transposes(v, ptrs) if v in st.views else (v, contiguous_strides(v.shape))
        return gemm.Operand(ptrs[src.name], v.shape, strides)

    if st.result is n.out:
        out = operand(n.out)
    else:  # written transposed: each element goes where the transpose puts it
        perm, cs = st.result.producer.attrs["perm"], contiguous_strides(st.result.shape)
        strides = [0] * len(perm)
        for d, p in enumerate(perm):
            strides[p] = cs[d]
        out = gemm.Operand(ptrs[st.result.name], n.out.shape, tuple(strides))
    a, b = n.operands
    if epilogue is not None:  # before the GEMM, whose threads fold each panel into them
        _fill_accumulators(fb, epilogue, ptrs)
    epi = None if epilogue is None else gemm.Epilogue(_accesses(epilogue, ptrs), lambda f, p: _body(f, epilogue, p),
                                                      gemm.fuses_epilogue(st, epilogue), _accumulators(epilogue))
    gemm.matmul(fb, n.out.dtype, out, operand(a), operand(b), "%scratch", epi)
