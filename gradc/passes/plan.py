"""`plan`: where every buffer of a compiled step lives, reusing the arena.

The code generator gives each kernel's stored and temporary values (and a
matmul's packing scratch) bytes in one arena. Without a plan each gets its
own bytes, one after the other. `plan` computes liveness over the kernel
schedule: a value lives from the kernel that writes it to the last kernel
that reads it; outputs and the sources of updates (copied into their params
after the last kernel) live to the end; temps and scratch only during their
kernel. Values whose lives do not overlap share bytes (greedy by size: the
largest buffers are placed first, each at the lowest 64-byte aligned offset
free for its whole life), so a kernel never writes bytes that a value it or
a later kernel reads still occupies. Buffers of a page or more start at
staggered offsets within a page (`colour`): arrays that all start at one
page offset make a kernel's loads wait on its stores to other arrays.

An update is done in place (its value written straight into the param's or
state's buffer, no copy at the end) when that is safe: no later kernel reads
the old value, the kernel that writes it reads the old value only at the
element it is writing (or in a loop that ends before the one writing it: a
reduction's), the value is not also an output or the source of a
second update, the param is not a result itself, and no kernel that checks
indices computed in the graph runs at or after it (a failed step must leave
params untouched; the step checks the status word before the first in-place
kernel).

The plan is printed in the kernel headers (`-> %5 @8256`, `%47 @%0.weight`);
`layout(graph)` turns it (or, for a graph without one, the one-after-the-other
layout) into the buffers the code generator uses.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..ir.graph import Graph
from . import fuse
from .manager import register_pass

ARENA_SLOT, CONSTS_SLOT, FIRST_INPUT_SLOT = 0, 1, 2  # the pointer table the entry function receives
STATUS_BYTES = 64  # the arena starts with the status word, padded to keep buffers 64-byte aligned
ALIGN = 64
PAGE = 4096  # loads and stores whose addresses agree in their low 12 bits look alike to the CPU at first
COLOUR_STEP = 39 * ALIGN  # between the page offsets of consecutive large buffers (see `colour`)
CONSTS_START = ALIGN  # the constants blob's first word holds the thread pool's address (codegen/pool.py)
INDEX_OPS = ("gather", "scatter_add", "index", "scatter_index")


class Buffer(NamedTuple):
    region: str  # "arena", "const" or "input"
    offset: int  # bytes into the arena or blob; the table slot for inputs
    nbytes: int
    align: int


class Layout(NamedTuple):
    kernels: list  # (Kernel header, KernelSpec) in schedule order
    buffers: dict  # value name -> Buffer (an in-place update's value: its param's)
    scratch: dict  # kernel name -> Buffer
    copies: dict  # name of a graph input that is also a result -> its copy in the arena
    arena_bytes: int
    in_place: dict  # update value name -> the param or state it is written into


def nbytes(v) -> int:
    return math.prod(v.shape) * v.dtype.itemsize


def round_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def scratch_bytes(spec) -> int:
    """Private bytes a kernel's code needs (a float matmul's packed panel)."""
    from ..codegen.kernels import scratch_bytes as node_scratch

    return max((node_scratch(st.node) for st in spec.stages if st.kind in ("matmul", "node")), default=0)


def _values(spec) -> list:
    return spec.stores + spec.temps


def checked_kernels(kernels) -> list:
    """Indices of the kernels that check index tensors computed in the graph."""
    out = []
    for t, (_, spec) in enumerate(kernels):
        for n in spec.members:
            idx = n.operands[1:] if n.op in INDEX_OPS else []
            if any(getattr(o, "producer", None) is not None and o.producer.op != "const" for o in idx):
                out.append(t)
                break
    return out


def liveness(g: Graph, kernels, in_place: dict) -> dict:
    """name -> (first, last) kernel index of every arena buffer; the end of the
    step (after the last kernel) is len(kernels). Scratch is named '#k<n>'."""
    end = len(kernels)
    roots = {v.name for v in g.outputs} | {v.name for _, v in g.updates if v.name not in in_place}
    live = {}
    for t, (k, spec) in enumerate(kernels):
        for v in _values(spec):
            if v.name not in in_place:
                live[v.name] = (t, end if v.name in roots else t)
        if scratch_bytes(spec):
            live["#" + k.name] = (t, t)
    for t, (_, spec) in enumerate(kernels):
        for v, _ in spec.reads():
            if v.name in live:
                live[v.name] = (live[v.name][0], max(live[v.name][1], t))
    return live


def _in_place_ok(g: Graph, kernels, t: int, target, v) -> bool:
    """May update value `v`, written by kernel `t`, be written straight into `target`'s buffer?"""
    results = [o.name for o in g.outputs] + [u.name for _, u in g.updates]
    if v.name in [o.name for o in g.outputs] or results.count(v.name) > 1 or target.name in results:
        return False
    checks = checked_kernels(kernels)
    if checks and max(checks) >= t:
        return False
    for later in range(t + 1, len(kernels)):
        if any(r.name == target.name for r, _ in kernels[later][1].reads()):
            return False
    spec, written = kernels[t][1], False
    for st in spec.stages:
        if st.kind == "node":
            n = st.node
            reads = [o for o in n.inputs if o.name == target.name]
            if reads and (fuse.role(n) != "elementwise" or target.shape != n.out.shape):
                return False
            continue
        if st.kind == "matmul":
            if any(o.name == target.name for o in fuse.operands(st)):
                return False
            written |= st.result.name == v.name
            continue
        writes = any(step[0] in ("store", "acc") and st.accesses[step[2]][0].name == v.name for step in st.steps)
        if (written or writes) and not _reads_before_write(st, target, v):  # earlier loops read the old value
            return False
        written |= writes
    return True


def _reads_before_write(st, target, v) -> bool:
    """In loop stage `st`, is every read of `target` a load of the element that `v`'s
    store then overwrites, done before it? (A reduction's result is filled with its
    identity before the loop: it can never overwrite what the loop reads.)"""
    reads = {i for i, (a, _, w) in enumerate(st.accesses) if a.name == target.name and not w}
    if not reads:
        return True
    store = next(((j, step) for j, step in enumerate(st.steps)
                  if step[0] in ("store", "acc") and st.accesses[step[2]][0].name == v.name), None)
    if store is None or store[1][0] == "acc":
        return False
    j0, strides = store[0], st.accesses[store[1][2]][1]
    return all(j < j0 and st.accesses[step[1]][1] == strides
               for j, step in enumerate(st.steps) if step[0] == "load" and step[1] in reads)


def _place(items: list) -> dict:
    """Offsets for (name, size, first, last): greedy by size, lowest free aligned offset; one
    of a page or more at the lowest free offset of its own colour (see `colour`)."""
    placed, out, coloured = [], {}, 0
    for name, size, first, last in sorted(items, key=lambda it: (-it[1], it[2], it[0])):
        busy = sorted((off, off + sz) for off, sz, f, l in placed if f <= last and first <= l and sz)
        phase = None
        if size >= PAGE:
            phase, coloured = colour(coloured), coloured + 1
        off = _at(STATUS_BYTES, phase)
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, _at(round_up(hi), phase))
        placed.append((off, size, first, last))
        out[name] = off
    return out


def colour(i: int) -> int:
    """Where in a page the i-th large buffer starts. Buffers that all start at one offset in a
    page (as sizes that are multiples of a page put them) have every element at the same low
    12 address bits as its peers: a load then waits on a store to another buffer that only
    aliases it ("4K aliasing"), and columns of equal rows share cache sets. Consecutive buffers
    get starts COLOUR_STEP apart, a step with no common factor with the lines of a page, so
    every line of a page comes once in PAGE // ALIGN buffers."""
    return (STATUS_BYTES + i * COLOUR_STEP) % PAGE


def _at(offset: int, phase: int | None) -> int:
    """The first offset from `offset` (aligned) that starts `phase` bytes into a page, if given."""
    return offset if phase is None else offset + (phase - offset) % PAGE


@register_pass("plan")
def plan(graph: Graph, reuse: bool = True, in_place: bool = True) -> Graph:
    """Give every buffer an arena offset, reusing bytes of values no longer live, and
    write updates straight into their params where safe."""
    g = graph.copy()
    if not g.kernels:  # one kernel per node, so the plan has headers to live in
        for k, spec in fuse.kernels(g):
            g.kernels[k.name] = k
            spec.members[0].kernel = k.name
    kernels = fuse.kernels(g)
    for k, _ in kernels:
        k.offsets, k.scratch = {}, None
    targets = {}
    if in_place:
        for target, v in g.updates:
            t = next((t for t, (k, _) in enumerate(kernels) if v.name in k.stores), None)
            if t is not None and _in_place_ok(g, kernels, t, target, v):
                targets[v.name] = target.name
    live = liveness(g, kernels, targets)
    sizes = {v.name: round_up(nbytes(v)) for _, spec in kernels for v in _values(spec)}
    sizes.update({"#" + k.name: round_up(scratch_bytes(spec)) for k, spec in kernels})
    items = [(name, sizes[name], *live[name]) for name in live]
    if reuse:
        offsets = _place(items)
    else:
        offsets, at = {}, STATUS_BYTES
        for name, size, _, _ in items:
            offsets[name], at = at, at + size
    for k, spec in kernels:
        for v in _values(spec):
            k.offsets[v.name] = targets.get(v.name, offsets.get(v.name))
        if "#" + k.name in offsets:
            k.scratch = offsets["#" + k.name]
    return g


def planned(g: Graph) -> bool:
    return any(k.offsets for k in g.kernels.values())


def layout(g: Graph) -> Layout:
    """The buffers of `g`'s code: its plan, or for a graph without one each buffer
    after the other in schedule order."""
    kernels = fuse.kernels(g)
    buffers = {}
    for i, v in enumerate(g.inputs):
        buffers[v.name] = Buffer("input", FIRST_INPUT_SLOT + i, nbytes(v), v.dtype.itemsize)
    consts_end = CONSTS_START
    for n in g.nodes:
        if n.op == "const":
            buffers[n.out.name] = Buffer("const", consts_end, nbytes(n.out), ALIGN)
            consts_end += round_up(nbytes(n.out))
    scratch, in_place, end = {}, {}, STATUS_BYTES
    use_plan = planned(g)
    for k, spec in kernels:
        for v in _values(spec):
            at = k.offsets.get(v.name) if use_plan else end
            if isinstance(at, str):
                in_place[v.name] = at
                buffers[v.name] = buffers[at]
                continue
            buffers[v.name] = Buffer("arena", at, nbytes(v), ALIGN)
            end = max(end, at + round_up(nbytes(v)))
        size = scratch_bytes(spec)
        if size:
            at = k.scratch if use_plan else end
            scratch[k.name] = Buffer("arena", at, size, ALIGN)
            end = max(end, at + round_up(size))
    copies = {}
    for v in g.roots():
        if buffers[v.name].region == "input" and v.name not in copies and v.name not in in_place:
            copies[v.name] = Buffer("arena", end, nbytes(v), ALIGN)
            end += round_up(nbytes(v))
    return Layout(kernels, buffers, scratch, copies, end, in_place)


def arena_bytes(g: Graph) -> int:
    """Bytes of the arena the code generator allocates for `g` (the `arena` statistic)."""
    return layout(g).arena_bytes


def check_plan(g: Graph) -> None:
    """The verifier's plan checks: every buffer placed, in-place updates safe, and no
    two buffers live at the same time share a byte."""
    from ..ir.verify import VerifyError

    if not planned(g):
        return
    kernels = fuse.kernels(g)
    inputs = {v.name: v for v in g.inputs}
    updates = {v.name: t for t, v in g.updates}
    targets = {}
    for t, (k, spec) in enumerate(kernels):
        for v in _values(spec):
            at = k.offsets.get(v.name)
            if at is None:
                raise VerifyError(f"kernel {k.name}: %{v.name} has no place in the plan")
            if isinstance(at, str):
                if updates.get(v.name) is None or updates[v.name].name != at or at not in inputs:
                    raise VerifyError(f"kernel {k.name}: %{v.name} is written into %{at}, but it is not the value "
                                      f"of an update of %{at}")
                if not _in_place_ok(g, kernels, t, inputs[at], v):
                    raise VerifyError(f"kernel {k.name}: writing %{v.name} into %{at} in place is not safe "
                                      f"(the old value is read after it is overwritten, or the step could fail)")
                targets[v.name] = at
            elif at < STATUS_BYTES or at % ALIGN:
                raise VerifyError(f"kernel {k.name}: %{v.name} @{at} is not a 64-byte aligned arena offset past "
                                  "the status word")
        if scratch_bytes(spec) and k.scratch is None:
            raise VerifyError(f"kernel {k.name}: its matmul's scratch has no place in the plan")
    lay = layout(g)
    live = liveness(g, kernels, targets)
    spans = []
    for name, (first, last) in live.items():
        buf = lay.scratch[name[1:]] if name.startswith("#") else lay.buffers[name]
        if buf.nbytes:
            spans.append((buf.offset, buf.offset + buf.nbytes, first, last, name))
    spans.sort()
    for i, (lo, hi, f, l, a) in enumerate(spans):
        for lo2, hi2, f2, l2, b in spans[i + 1:]:
            if lo2 >= hi:
                break
            if f <= l2 and f2 <= l:
                raise VerifyError(f"plan: %{a} and %{b} share arena bytes while both are live "
                                  f"(kernels {f + 1}-{l + 1} and {f2 + 1}-{l2 + 1})")
