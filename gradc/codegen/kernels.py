"""One kernel per IR node: the loop nest that computes its output buffer.

Every lowering reads its operands through strides (broadcasting, transposes,
slices and the batch dims of matmul need no copies of their inputs) and
writes its output contiguously. Only reductions and matmul carry fast-math
flags (`reassoc contract`: a different summation order, within float
tolerance); everything else computes exactly what the NumPy impl does.
"""
from __future__ import annotations

import math

from .. import dtypes
from ..ir.graph import Node, Value
from ..prims import Arg, Slice, broadcast_shapes
from . import gemm, scalar
from .emitter import FunctionBuilder, const, mem_type, reg_type
from .loops import Access, broadcast_strides, contiguous_strides, strided_loops, tiled_loops

REDUCE_FLAGS = "reassoc contract"


class Kernel:
    """What a lowering rule sees: the node, its function builder and its buffers."""

    def __init__(self, fb: FunctionBuilder, node: Node, ptrs: dict, status: str | None, checked: set, node_id: int,
                 scratch: str | None = None):
        self.fb, self.node, self.ptrs = fb, node, ptrs
        self.status, self.checked, self.node_id = status, checked, node_id
        self.scratch = scratch  # the kernel's private arena bytes (see `scratch_bytes`)
        self._flag = None

    @property
    def out(self) -> Value:
        return self.node.out

    def ptr(self, v: Value) -> str:
        return self.ptrs[v.name]

    def access(self, v: Value, strides=None, offset=0) -> Access:
        strides = contiguous_strides(v.shape) if strides is None else strides
        return Access(self.ptr(v), mem_type(v.dtype), offset, strides)

    def out_access(self) -> Access:
        return self.access(self.out)

    def index_value(self, v: Value, ptr: str, size: int) -> str:
        """Load an index from `ptr` and wrap it into [0, size) as NumPy does for negatives.

        Index tensors computed inside the graph are checked here (an index
        out of range records this node in the status word and reads element
        0 instead); graph inputs and constants were checked before the call.
        """
        fb = self.fb
        i = fb.op(f"load {mem_type(v.dtype)}, ptr {ptr}", "ix")
        if v.dtype is dtypes.int32:
            i = fb.op(f"sext i32 {i} to i64")
        neg = fb.op(f"icmp slt i64 {i}, 0")
        w = fb.op(f"select i1 {neg}, i64 {fb.op(f'add i64 {i}, {size}')}, i64 {i}")
        if v.name not in self.checked:
            return w
        if self._flag is None:
            self._flag = fb.local("i1", "false", at_entry=True)
        bad = fb.op(f"icmp uge i64 {w}, {size}")
        seen = fb.op(f"load i1, ptr {self._flag}")
        fb.emit(f"store i1 {fb.op(f'or i1 {seen}, {bad}')}, ptr {self._flag}")
        return fb.op(f"select i1 {bad}, i64 0, i64 {w}")

    def finish(self) -> None:
        fb = self.fb
        if self._flag is not None:
            bad, ok = fb.fresh("oob"), fb.fresh("ret")
            fb.emit(f"br i1 {fb.op(f'load i1, ptr {self._flag}')}, label {bad}, label {ok}")
            fb.label(bad)
            fb.emit(f"store i64 {self.node_id}, ptr {self.status}")
            fb.emit(f"br label {ok}")
            fb.label(ok)
        fb.emit("ret void")


def _operand_dtypes(node: Node) -> list:
    """Each operand's dtype; a literal takes that of the op's value operands (bool as where's condition)."""
    if node.op == "where":
        return [dtypes.bool_, node.out.dtype, node.out.dtype]
    d = next(o.dtype for o in node.operands if isinstance(o, Value))
    return [o.dtype if isinstance(o, Value) else d for o in node.operands]


# ---------------------------------------------------------------- elementwise
def apply(fb: FunctionBuilder, node: Node, regs: list) -> str:
    """The elementwise op of `node` on one element, given the registers of its value
    operands in order (its literal operands become constants); returns the result."""
    ds, it = _operand_dtypes(node), iter(regs)
    args = [next(it) if isinstance(o, Value) else const(o, t) for o, t in zip(node.operands, ds)]
    d = ds[-1]
    if node.op == "convert":
        return scalar.convert(fb, args[0], node.operands[0].dtype, node.out.dtype)
    if node.op == "where":
        t = reg_type(node.out.dtype)
        return fb.op(f"select i1 {args[0]}, {t} {args[1]}, {t} {args[2]}")
    if len(args) == 1:
        return scalar.unary(fb, node.op, args[0], d)
    if node.op == "matmul":  # one product term of a matmul computed in a loop (fuse: a tiny matmul)
        return scalar.binary(fb, "mul", args[0], args[1], d, "contract")
    return scalar.binary(fb, node.op, args[0], args[1], d)


def elementwise(k: Kernel) -> None:
    node, fb, out = k.node, k.fb, k.out
    values = [o for o in node.operands if isinstance(o, Value)]
    accesses = [k.out_access()] + [k.access(v, broadcast_strides(v.shape, out.shape)) for v in values]

    def body(ptrs):
        regs = [scalar.load(fb, p, v.dtype) for p, v in zip(ptrs[1:], values)]
        scalar.store(fb, apply(fb, node, regs), ptrs[0], out.dtype)

    strided_loops(fb, out.shape, accesses, body)


# ---------------------------------------------------------------- shape ops
def _copy_loop(k: Kernel, src: Access, shape=None, dst: Access | None = None) -> None:
    fb, d = k.fb, k.out.dtype
    shape = k.out.shape if shape is None else shape
    dst = k.out_access() if dst is None else dst

    def body(p):
        fb.emit(f"store {mem_type(d)} {fb.op(f'load {mem_type(d)}, ptr {p[1]}', 'v')}, ptr {p[0]}")

    tiled_loops(fb, shape, dst, src, body)


def nbytes(v: Value) -> int:
    return math.prod(v.shape) * v.dtype.itemsize


def reshape(k: Kernel) -> None:
    k.fb.memcpy(k.ptr(k.out), k.ptr(k.node.operands[0]), nbytes(k.out))


def transpose(k: Kernel) -> None:
    x = k.node.operands[0]
    xs = contiguous_strides(x.shape)
    _copy_loop(k, k.access(x, tuple(xs[p] for p in k.node.attrs["perm"])))


def broadcast(k: Kernel) -> None:
    x = k.node.operands[0]
    _copy_loop(k, k.access(x, broadcast_strides(x.shape, k.out.shape)))


def concat(k: Kernel) -> None:
    axis, os = k.node.attrs["axis"], contiguous_strides(k.out.shape)
    start = 0
    for x in k.node.operands:
        _copy_loop(k, k.access(x), x.shape, k.access(k.out, os, start * os[axis]))
        start += x.shape[axis]


# ---------------------------------------------------------------- reductions
def _identity(op, d):
    if op in ("sum", "matmul"):
        return const(0, d)
    if op == "prod":
        return const(1, d)
    if d.is_floating_point:
        return const(-math.inf, d)
    return "false" if d is dtypes.bool_ else str(-(2 ** (8 * d.itemsize - 1)))


def reduce(k: Kernel) -> None:
    """Fill the output with the identity, then fold x into it in x's memory order.

    Walking x in order keeps the innermost loop contiguous whichever axes are
    reduced: over a reduced axis it is a register reduction, over a kept axis
    a vector update of the output row.
    """
    node, fb, out = k.node, k.fb, k.out
    x, axes = node.operands[0], node.attrs["axes"]
    fill_identity(fb, node, k.ptr(out))
    os, j = contiguous_strides(out.shape), iter(range(out.ndim))
    o_strides = tuple(0 if i in axes else os[next(j)] for i in range(x.ndim))

    def body(p):
        fold(fb, node, scalar.load(fb, p[1], x.dtype), p[0])

    strided_loops(fb, x.shape, [k.access(out, o_strides), k.access(x)], body, accumulators=[0])


def fill_identity(fb: FunctionBuilder, node: Node, ptr: str) -> None:
    """Set the output of reduction `node` (at `ptr`) to its identity, before folding."""
    d, out = node.out.dtype, node.out
    init = _identity(node.op, d)
    strided_loops(fb, out.shape, [Access(ptr, mem_type(d), 0, contiguous_strides(out.shape))],
                  lambda p: scalar.store(fb, init, p[0], d))


def fold(fb: FunctionBuilder, node: Node, x: str, acc_ptr: str) -> None:
    """Fold one element `x` (a register of the operand's dtype; a matmul's product term)
    into reduction `node`'s accumulator."""
    d = node.out.dtype
    acc = scalar.load(fb, acc_ptr, d)
    v = scalar.convert(fb, x, node.operands[0].dtype, d)
    if node.op == "max":
        r = scalar.binary(fb, "maximum", acc, v, d)
    else:
        r = scalar.binary(fb, "mul" if node.op == "prod" else "add", acc, v, d, REDUCE_FLAGS)
    scalar.store(fb, r, acc_ptr, d)


def argmax(k: Kernel) -> None:
    """First index of the maximum; the first NaN wins, as in NumPy."""
    node, fb, out = k.node, k.fb, k.out
    x, axis = node.operands[0], node.attrs["axis"]
    if x.ndim == 0:
        fb.emit(f"store i64 0, ptr {k.ptr(out)}")
        return
    xs = contiguous_strides(x.shape)
    n, step, d = x.shape[axis], xs[axis], x.dtype
    t = reg_type(d)
    kept = tuple(s for i, s in enumerate(xs) if i != axis)

    def body(p):
        best, at = fb.local(t, scalar.load(fb, p[1], d)), fb.local("i64", "0")
        with fb.loop(n, "j") as i:
            v = scalar.load(fb, fb.gep(mem_type(d), p[1], fb.mad(0, i, step)), d)
            b = fb.op(f"load {t}, ptr {best}")
            if d.is_floating_point:
                nan_v = fb.op(f"fcmp uno {t} {v}, {v}")
                num_b = fb.op(f"fcmp ord {t} {b}, {b}")
                take = fb.op(f"or i1 {fb.op(f'fcmp ogt {t} {v}, {b}')}, {fb.op(f'and i1 {nan_v}, {num_b}')}")
            else:
                take = fb.op(f"icmp {'ugt' if d is dtypes.bool_ else 'sgt'} {t} {v}, {b}")
            fb.emit(f"store {t} {fb.op(f'select i1 {take}, {t} {v}, {t} {b}')}, ptr {best}")
            a = fb.op(f"load i64, ptr {at}")
            fb.emit(f"store i64 {fb.op(f'select i1 {take}, i64 {i}, i64 {a}')}, ptr {at}")
        fb.emit(f"store i64 {fb.op(f'load i64, ptr {at}')}, ptr {p[0]}")

    strided_loops(fb, out.shape, [k.out_access(), k.access(x, kept)], body)


# ---------------------------------------------------------------- matmul
def matmul(k: Kernel) -> None:
    """Batched: a loop over the broadcast batch dims around one GEMM per matrix."""
    fb, out = k.fb, k.out
    a, b = k.node.operands
    d = out.dtype
    mt = mem_type(d)
    m, kk, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = out.shape[:-2]
    accesses = [
        Access(k.ptr(out), mt, 0, tuple(s * m * n for s in contiguous_strides(batch))),
        Access(k.ptr(a), mt, 0, broadcast_strides(a.shape[:-2], batch, contiguous_strides(a.shape)[:-2])),
        Access(k.ptr(b), mt, 0, broadcast_strides(b.shape[:-2], batch, contiguous_strides(b.shape)[:-2])),
    ]
    if d.is_floating_point:
        def body(p):
            gemm.gemm(fb, d, p[0], p[1], p[2], m, kk, n, (kk, 1), k.scratch)
    else:
        def body(p):
            _matmul_ikj(fb, d, *p, m, kk, n)

    strided_loops(fb, batch, accesses, body)


def _matmul_ikj(fb: FunctionBuilder, d, po, pa, pb, m, kk, n) -> None:
    """Integer and bool matmul: plain i-k-j loops (NumPy's bool algebra for bool)."""
    mt = mem_type(d)
    with fb.loop(m, "i") as i:
        row = fb.gep(mt, po, fb.mad(0, i, n))
        with fb.loop(n, "j") as j:
            scalar.store(fb, const(0, d), fb.gep(mt, row, j), d)
        with fb.loop(kk, "k") as q:
            aik = scalar.load(fb, fb.gep(mt, pa, fb.mad(fb.mad(0, i, kk), q, 1)), d)
            brow = fb.gep(mt, pb, fb.mad(0, q, n))
            with fb.loop(n, "j") as j:
                po_j = fb.gep(mt, row, j)
                prod = scalar.binary(fb, "mul", aik, scalar.load(fb, fb.gep(mt, brow, j), d), d)
                scalar.store(fb, scalar.binary(fb, "add", scalar.load(fb, po_j, d), prod, d), po_j, d)


# ---------------------------------------------------------------- indexing
def index_plan(x_shape, spec, idx_shapes, out_shape):
    """How `x[spec]` reads x, per output dim (NumPy's basic + advanced indexing rules).

    Returns `(offset, strides, args)`: the element offset and strides of the
    strided part (slices, ints, new axes), and per index tensor entry
    `(k, stride in x, size of its axis, strides of index tensor k)`. The
    broadcast index dims go where the advanced indices stand if those are
    adjacent in the spec (ints count as advanced when tensors are present),
    else first.
    """
    xs = contiguous_strides(x_shape)
    advanced = any(isinstance(e, Arg) for e in spec)
    basic, adv_pos, entries, offset, axis = [], [], [], 0, 0
    for p, e in enumerate(spec):
        if e is None:
            basic.append((p, 0))
            continue
        if isinstance(e, Slice):
            basic.append((p, e.step * xs[axis]))
            offset += e.start * xs[axis]
        elif isinstance(e, Arg):
            adv_pos.append(p)
            entries.append((e.k, xs[axis], x_shape[axis]))
        else:
            offset += (e + x_shape[axis] if e < 0 else e) * xs[axis]
            if advanced:
                adv_pos.append(p)
        axis += 1
    bshape = broadcast_shapes(*(idx_shapes[k] for k, _, _ in entries)) if entries else ()
    at = 0
    if adv_pos and adv_pos == list(range(adv_pos[0], adv_pos[-1] + 1)):
        at = sum(p < adv_pos[0] for p, _ in basic)
    strides = tuple(s for _, s in basic[:at]) + (0,) * len(bshape) + tuple(s for _, s in basic[at:])
    assert len(strides) == len(out_shape), (spec, out_shape)
    args = []
    for k, stride, size in entries:
        b = broadcast_strides(idx_shapes[k], bshape)
        args.append((k, stride, size, (0,) * at + b + (0,) * (len(basic) - at)))
    return offset, strides, args


def _indexed(k: Kernel, target: Value, space, idx_values, spec, first: Access, combine) -> None:
    """Loop over `space`; `combine(p_first, p_target)` with target's element chosen by spec."""
    fb = k.fb
    offset, strides, args = index_plan(target.shape, spec, [v.shape for v in idx_values], space)
    accesses = [first, k.access(target, strides, offset)]
    accesses += [k.access(idx_values[a[0]], a[3]) for a in args]

    def body(p):
        off = 0
        for (j, stride, size, _), pi in zip(args, p[2:]):
            off = fb.mad(off, k.index_value(idx_values[j], pi, size), stride)
        combine(p[0], fb.gep(mem_type(target.dtype), p[1], off))

    strided_loops(fb, space, accesses, body)


def _copy_to(k, d):
    def combine(dst, src):
        k.fb.emit(f"store {mem_type(d)} {k.fb.op(f'load {mem_type(d)}, ptr {src}', 'v')}, ptr {dst}")

    return combine


def _add_to(k, d):
    fb = k.fb

    def combine(src, dst):
        s = scalar.binary(fb, "add", scalar.load(fb, dst, d), scalar.load(fb, src, d), d)
        scalar.store(fb, s, dst, d)

    return combine


def index(k: Kernel) -> None:
    x, *idx = k.node.operands
    _indexed(k, x, k.out.shape, idx, k.node.attrs["spec"], k.out_access(), _copy_to(k, x.dtype))


def scatter_index(k: Kernel) -> None:
    g, *idx = k.node.operands
    k.fb.memzero(k.ptr(k.out), nbytes(k.out))
    _indexed(k, k.out, g.shape, idx, k.node.attrs["spec"], k.access(g), _add_to(k, g.dtype))


def _along(k: Kernel, target: Value, idx: Value, first: Access, axis: int, combine) -> None:
    """gather/scatter_add: loop over idx; target's element on `axis` is chosen by idx."""
    fb = k.fb
    ts = contiguous_strides(target.shape)
    strides = tuple(0 if i == axis else s for i, s in enumerate(ts))

    def body(p):
        j = k.index_value(idx, p[1], target.shape[axis])
        combine(p[0], fb.gep(mem_type(target.dtype), p[2], fb.mad(0, j, ts[axis])))

    strided_loops(fb, idx.shape, [first, k.access(idx), k.access(target, strides)], body)


def gather(k: Kernel) -> None:
    x, idx = k.node.operands
    if x.ndim == 0:
        return _copy_loop(k, k.access(x))
    _along(k, x, idx, k.out_access(), k.node.attrs["axis"], _copy_to(k, x.dtype))


def scatter_add(k: Kernel) -> None:
    u, idx = k.node.operands
    if k.out.ndim == 0:
        return _copy_loop(k, k.access(u))
    k.fb.memzero(k.ptr(k.out), nbytes(k.out))
    _along(k, k.out, idx, k.access(u), k.node.attrs["axis"], _add_to(k, u.dtype))


LOWER = {
    "reshape": reshape, "transpose": transpose, "broadcast": broadcast, "concat": concat,
    "sum": reduce, "max": reduce, "prod": reduce, "argmax": argmax, "matmul": matmul,
    "index": index, "scatter_index": scatter_index, "gather": gather, "scatter_add": scatter_add,
}


def scratch_bytes(node: Node) -> int:
    """Arena bytes a node's kernel needs for itself (a packed matmul panel)."""
    if node.op == "matmul" and node.out.dtype.is_floating_point:
        return gemm.scratch_bytes(node.out.dtype.itemsize)
    return 0


def lowering(op: str, kind: str):
    """The lowering rule of a registry op (elementwise ops share one)."""
    if op in LOWER:
        return LOWER[op]
    if kind in ("unary", "binary", "compare", "select"):
        return elementwise
    raise NotImplementedError(f"codegen: no lowering for op {op!r}")
