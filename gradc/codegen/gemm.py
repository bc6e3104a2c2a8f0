"""Float matmul: a register-blocked GEMM written with explicit vectors.

out[M, N] = a[M, K] @ b[K, N], out row-major; a and b are read through any
(row, column) strides, so transposed operands need no copy. The output is
cut into tiles of MR rows by NR vectors of W lanes; a tile's MR*NR
accumulators stay in registers while k runs over a block of KC (so the b
panel it streams stays in L1), each step broadcasting one element of a per
row and fusing a multiply-add per accumulator. Shapes are static, so tails
are their own instances of the same tile code: fewer rows, fewer vectors, a
constant mask on the last vector. The tile is unrolled in the IR; its k
loop stays a loop, which keeps compile time at tens of milliseconds.

`a` is read one element at a time, so its layout costs nothing. Each
KC x NR*W panel of `b` is packed into a contiguous scratch buffer first
(rows of a row-major b lie n elements apart, which for n a multiple of 512
bytes maps a panel onto a couple of cache sets): a row-major b by vector
copies, a transposed b (`x @ w.T`, the forward pass of a linear layer) by
loading W x W blocks along its rows and transposing them in registers.

`matmul` adds the broadcast batch dims and a transposed output (computed as
out.T = b.T @ a.T, which is only a swap of operands and strides), and
`through_transposes` finds the buffer and strides a `transpose` node's
result can be read at, so a graph's transposes of matmul operands and
results need no kernel of their own.
"""
from __future__ import annotations

import functools
import math
import os
from contextlib import contextmanager
from typing import NamedTuple

from .emitter import FunctionBuilder, mem_type
from .jit import vector_bits
from .loops import Access, block_span, broadcast_strides, contiguous_strides, strided_loops


def tile_shape(itemsize: int) -> tuple:
    """(MR rows, NR vectors, W lanes, KC) for the host's vector registers."""
    bits = vector_bits()
    w = max(bits // (8 * itemsize), 2)
    if bits >= 512:  # 32 registers: 8x3 accumulators + 3 of b + 1 of a
        return 8, 3, w, 128
    return 6, 2, w, 256  # 16 registers: 6x2 + 2 + 1


def _panel_elems(itemsize: int) -> int:
    _, nr, w, kc = tile_shape(itemsize)
    return kc * nr * w


def scratch_bytes(itemsize: int) -> int:
    """Size of the packed b panels (KC rows of NR*W lanes), one per thread."""
    return _panel_elems(itemsize) * itemsize * threads()


# ---------------------------------------------------------------- threads
PARALLEL_FLOPS = 8_000_000  # below this a product stays on one thread (see _parts)


@functools.lru_cache(maxsize=None)
def threads() -> int:
    """Threads a large GEMM is split over: GRADC_NUM_THREADS (default 1).

    Off by default: helpers started per call measured slower than one thread
    on the shared 2-core VM this was written on (a new thread waits up to a
    scheduler tick before it runs), and libgomp's pool, fast while hot, hangs
    in a forked child. A persistent pool whose workers claim parts the same
    way is what would make this pay by default.
    """
    return max(1, int(os.environ.get("GRADC_NUM_THREADS", "1")))


def _parts(d, m: int, k: int, n: int) -> int:
    """How many column shares to split out = a @ b into (1: no split)."""
    _, nr, w, _ = tile_shape(d.itemsize)
    units = -(-n // (nr * w))
    if threads() == 1 or units < 2 or 2 * m * k * n < PARALLEL_FLOPS:
        return 1
    return min(threads(), units)


class Operand(NamedTuple):
    """A matmul operand or result in memory: LLVM pointer, logical shape, element strides per dim."""

    ptr: str
    shape: tuple
    strides: tuple


def through_transposes(v, buffers):
    """(buffer value, strides): where the elements of IR value `v` lie, looking through
    `transpose` nodes (v[i] = buffer[sum(i * strides)], buffer contiguous) down to the
    first value in `buffers` (names of what is in memory: a transpose that another
    kernel stored is read as stored, not through its own source)."""
    strides = None
    while v.name not in buffers and v.producer is not None and v.producer.op == "transpose":
        perm = v.producer.attrs["perm"]
        strides = tuple(perm) if strides is None else tuple(perm[p] for p in strides)
        v = v.producer.operands[0]
    base = contiguous_strides(v.shape)
    return v, base if strides is None else tuple(base[p] for p in strides)


def matmul(fb: FunctionBuilder, d, out: Operand, a: Operand, b: Operand, scratch: str) -> None:
    """out = a @ b over the broadcast batch dims, every operand read or written through its strides.

    out's matrix dims must be row-major (strides (N, 1)) or transposed
    ((1, M)); a and b may have any strides.
    """
    if math.prod(out.shape) == 0:
        return
    m, kk, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = out.shape[:-2]
    mt = mem_type(d)
    accesses = [Access(out.ptr, mt, 0, out.strides[:-2]),
                Access(a.ptr, mt, 0, broadcast_strides(a.shape[:-2], batch, a.strides[:-2])),
                Access(b.ptr, mt, 0, broadcast_strides(b.shape[:-2], batch, b.strides[:-2]))]
    sa, sb, (s0, s1) = a.strides[-2:], b.strides[-2:], out.strides[-2:]
    if (m == 1 or s0 == n) and (n == 1 or s1 == 1):
        def body(p):
            gemm(fb, d, p[0], p[1], p[2], m, kk, n, sa, scratch, sb)
    elif (m == 1 or s0 == 1) and (n == 1 or s1 == m):
        def body(p):  # out.T = b.T @ a.T
            gemm(fb, d, p[0], p[2], p[1], n, kk, m, sb[::-1], scratch, sa[::-1])
    else:
        raise NotImplementedError(f"matmul output strides {(s0, s1)} for a [{m}, {n}] result")
    strided_loops(fb, batch, accesses, body)


def gemm(fb: FunctionBuilder, d, po: str, pa: str, pb: str, m: int, k: int, n: int, a_strides: tuple,
         scratch: str, b_strides: tuple | None = None) -> None:
    """Emit out = a @ b for one matrix; `a_strides`, `b_strides` = (row, column) element strides
    (b row-major when None); out is row-major, `scratch` holds `scratch_bytes`.

    A large product is split by column panels over `threads()` threads: the
    caller starts helper threads (pthreads, made per call: no pool to outlive
    the code or to break in a forked child) and all of them, the caller too,
    claim parts with an atomic counter, so a helper that starts late or not
    at all only leaves more parts to the others.
    """
    b_strides = (n, 1) if b_strides is None else tuple(b_strides)
    if not (m and n and k):
        fb.memzero(po, m * n * d.itemsize)
        return
    parts = _parts(d, m, k, n)
    if parts == 1:
        _emit(fb, d, po, pa, pb, m, k, n, tuple(a_strides), b_strides, scratch)
        return
    name = f"gradc.gemm.{d.name}.{m}x{k}x{n}.a{'_'.join(map(str, a_strides))}.b{'_'.join(map(str, b_strides))}.p{parts}"
    pf = FunctionBuilder(f"define internal ptr @{name}(ptr noalias nonnull %args) nounwind", fb.decls)
    po_, pa_, pb_, ps_ = (pf.op(f"load ptr, ptr {pf.gep('ptr', '%args', i)}", "arg") for i in range(4))
    counter = pf.gep("ptr", "%args", 4)
    slot = pf.op(f"atomicrmw add ptr {counter}, i64 1 monotonic", "slot")  # this thread's scratch
    mine = pf.gep(mem_type(d), ps_, pf.mad(0, slot, _panel_elems(d.itemsize)))
    head, body, tail, done = pf.fresh("claim"), pf.fresh("part"), pf.fresh("claimed"), pf.fresh("finished")
    part, nxt = pf.fresh("p"), pf.fresh("p.next")
    pf.emit(f"br label {head}")
    pf.label(head)
    pf.emit(f"{part} = phi i64 [ {slot}, %entry ], [ {nxt}, {tail} ]")
    pf.emit(f"br i1 {pf.op(f'icmp ult i64 {part}, {parts}')}, label {body}, label {done}")
    pf.label(body)
    _emit(pf, d, po_, pa_, pb_, m, k, n, tuple(a_strides), b_strides, mine, (part, parts))
    pf.emit(f"br label {tail}")
    pf.label(tail)
    pf.emit(f"{nxt} = atomicrmw add ptr {counter}, i64 1 monotonic")
    pf.emit(f"br label {head}")
    pf.label(done)
    pf.emit("ret ptr null")
    fb.decls.add(pf.text())
    # helpers start, the caller works too; parts no helper claimed in time the caller does itself
    args = fb.local("[5 x i64]")
    for i, p in enumerate((po, pa, pb, scratch)):
        fb.emit(f"store ptr {p}, ptr {fb.gep('ptr', args, i)}")
    fb.emit(f"store i64 0, ptr {fb.gep('ptr', args, 4)}")
    ids = fb.local(f"[{parts - 1} x i64]")
    started = []
    for i in range(parts - 1):
        rc = fb.call("i32", "pthread_create", [("ptr", fb.gep("i64", ids, i)), ("ptr", "null"),
                                               ("ptr", f"@{name}"), ("ptr", args)])
        started.append(fb.op(f"icmp eq i32 {rc}, 0"))
    fb.op(f"call ptr @{name}(ptr {args})")
    for i, ok in enumerate(started):
        with _when(fb, ok):
            tid = fb.op(f"load i64, ptr {fb.gep('i64', ids, i)}")
            fb.call("i32", "pthread_join", [("i64", tid), ("ptr", "null")])


def _emit(fb: FunctionBuilder, d, po: str, pa: str, pb: str, m: int, k: int, n: int, a_strides: tuple,
          b_strides: tuple, scratch: str, part=None) -> None:
    """The GEMM's loops; with `part` = (index as an i64 value, count) only that share of the column panels."""
    t = mem_type(d)
    mr, nr, w, kc = tile_shape(d.itemsize)
    vt = f"<{w} x {t}>"
    sk, sj = b_strides

    def mask(lanes: int) -> str:
        return f"<{w} x i1> <" + ", ".join(f"i1 {'true' if i < lanes else 'false'}" for i in range(w)) + ">"

    def vload(ptr: str, lanes: int, skip: str | None = None) -> str:
        """Load `lanes` elements (zeros after them); none where the i1 `skip` is true."""
        if lanes == w and skip is None:
            return fb.op(f"load {vt}, ptr {ptr}, align {d.itemsize}", "vb")
        m_ = mask(lanes)
        if skip is not None:
            m_ = f"<{w} x i1> " + fb.op(f"select i1 {skip}, <{w} x i1> zeroinitializer, {m_}")
        name = f"llvm.masked.load.v{w}{_sfx(t)}.p0"
        fb.decls.add(f"declare {vt} @{name}(ptr, <{w} x i1>, {vt})")
        return fb.op(f"call {vt} @{name}(ptr align {d.itemsize} {ptr}, {m_}, {vt} zeroinitializer)")

    def vstore(val: str, ptr: str, lanes: int) -> None:
        if lanes == w:
            fb.emit(f"store {vt} {val}, ptr {ptr}, align {d.itemsize}")
            return
        name = f"llvm.masked.store.v{w}{_sfx(t)}.p0"
        fb.decls.add(f"declare void @{name}({vt}, ptr, <{w} x i1>)")
        fb.emit(f"call void @{name}({vt} {val}, ptr align {d.itemsize} {ptr}, {mask(lanes)})")

    def pack(j0, k0, lanes: list, depth) -> None:
        """scratch[q, :] = b[k0 + q, j0:j0 + len(lanes)*W] for q < depth, zeros past column n."""
        width = len(lanes) * w
        b0 = fb.gep(t, pb, fb.mad(fb.mad(0, j0, sj), k0, sk))
        if sj == 1:  # rows of b are contiguous: vector copies
            with fb.loop(depth, "pk") as q:
                src, dst = fb.gep(t, b0, fb.mad(0, q, sk)), fb.gep(t, scratch, fb.mad(0, q, width))
                for c, lanes_c in enumerate(lanes):
                    vstore(vload(fb.gep(t, src, c * w), lanes_c), fb.gep(t, dst, c * w), w)
            return
        start = 0
        if sk == 1:  # columns of b are contiguous: transpose W x W blocks in registers
            full = depth // w if isinstance(depth, int) else fb.op(f"lshr i64 {depth}, {w.bit_length() - 1}")
            if full != 0:
                with fb.loop(full, "pt") as qb:
                    q0 = fb.mad(0, qb, w)
                    src, dst = fb.gep(t, b0, q0), fb.gep(t, scratch, fb.mad(0, q0, width))
                    for c, lanes_c in enumerate(lanes):
                        cols = [vload(fb.gep(t, src, (c * w + i) * sj), w) if i < lanes_c else "zeroinitializer"
                                for i in range(w)]
                        for q, row in enumerate(_transpose(fb, vt, w, cols)):
                            vstore(row, fb.gep(t, dst, q * width + c * w), w)
            start = full * w if isinstance(full, int) else fb.mad(0, full, w)
        left = depth - start if isinstance(start, int) else fb.op(f"sub i64 {depth}, {start}")
        if left == 0:
            return
        cols = sum(lanes)
        with fb.loop(left, "pg") as r:  # any strides, and the rows left over: element by element
            q = fb.mad(start, r, 1)
            src, dst = fb.gep(t, b0, fb.mad(0, q, sk)), fb.gep(t, scratch, fb.mad(0, q, width))
            if cols < width:
                fb.memzero(fb.gep(t, dst, cols), (width - cols) * d.itemsize)
            with fb.loop(cols, "pj") as j:
                v = fb.op(f"load {t}, ptr {fb.gep(t, src, fb.mad(0, j, sj))}", "b")
                fb.emit(f"store {t} {v}, ptr {fb.gep(t, dst, j)}")

    def tile(i0, j0, k0, rows: int, lanes: list, depth) -> None:
        """Accumulate a[i0:i0+rows, k0:k0+depth] @ (packed panel) into out[i0:i0+rows, j0:...]."""
        obase = fb.gep(t, po, fb.mad(j0, i0, n))
        outs = [[fb.gep(t, obase, r * n + c * w) for c in range(len(lanes))] for r in range(rows)]
        # the first k block starts from zero, later ones from the partial sums in out
        first = None if k0 == 0 else fb.op(f"icmp eq i64 {k0}, 0")
        accs = [[fb.local(vt, "zeroinitializer" if k0 == 0 else vload(outs[r][c], lanes[c], first))
                 for c in range(len(lanes))] for r in range(rows)]
        a0 = fb.gep(t, pa, fb.mad(fb.mad(0, i0, a_strides[0]), k0, a_strides[1]))
        with fb.loop(depth, "k") as q:
            brow = fb.gep(t, scratch, fb.mad(0, q, len(lanes) * w))
            bs = [vload(fb.gep(t, brow, c * w), w) for c in range(len(lanes))]
            acol = fb.gep(t, a0, fb.mad(0, q, a_strides[1]))
            for r in range(rows):
                s = fb.op(f"load {t}, ptr {fb.gep(t, acol, r * a_strides[0])}", "a")
                v = fb.op(f"insertelement {vt} poison, {t} {s}, i64 0")
                v = fb.op(f"shufflevector {vt} {v}, {vt} poison, <{w} x i32> zeroinitializer")
                for c, b in enumerate(bs):
                    acc = fb.op(f"load {vt}, ptr {accs[r][c]}")
                    fb.emit(f"store {vt} {_fmuladd(fb, vt, t, v, b, acc)}, ptr {accs[r][c]}")
        for r in range(rows):
            for c in range(len(lanes)):
                vstore(fb.op(f"load {vt}, ptr {accs[r][c]}"), outs[r][c], lanes[c])

    def panel(j0, k0, lanes, depth):
        pack(j0, k0, lanes, depth)
        if m // mr:
            with fb.loop(m // mr, "ib") as ib:
                tile(fb.mad(0, ib, mr), j0, k0, mr, lanes, depth)
        if m % mr:
            tile((m // mr) * mr, j0, k0, m % mr, lanes, depth)

    block = nr * w
    full, rest = n // block, n % block
    rest_lanes = [w] * (rest // w) + ([rest % w] if rest % w else [])
    if part is None:
        lo, count, has_rest = 0, full, "true"
    else:  # units (full panels, then the rest panel) [p * units / parts, (p + 1) * units / parts)
        units = full + (1 if rest else 0)
        p, parts = part
        lo = fb.op(f"udiv i64 {fb.op(f'mul i64 {p}, {units}')}, {parts}")
        p1 = fb.op(f"add i64 {p}, 1")
        hi = fb.op(f"udiv i64 {fb.op(f'mul i64 {p1}, {units}')}, {parts}")
        top = fb.op(f"select i1 {fb.op(f'icmp ult i64 {hi}, {full}')}, i64 {hi}, i64 {full}")
        count = fb.op(f"select i1 {fb.op(f'icmp ult i64 {lo}, {top}')}, i64 {fb.op(f'sub i64 {top}, {lo}')}, i64 0")
        has_rest = fb.op(f"icmp ugt i64 {hi}, {full}")

    def columns(k0, depth):
        if full:
            with fb.loop(count, "jb") as jb:
                panel(fb.mad(0, fb.mad(lo, jb, 1), block), k0, [w] * nr, depth)
        if rest:
            with _when(fb, has_rest):
                panel(full * block, k0, rest_lanes, depth)

    if k <= kc:
        columns(0, k)
        return
    with fb.loop(-(-k // kc), "kb") as kb:  # the last block may be shorter: a runtime depth
        k0 = fb.mad(0, kb, kc)
        columns(k0, block_span(fb, k0, k, kc))


@contextmanager
def _when(fb: FunctionBuilder, cond: str):
    """Code emitted inside runs only if the i1 `cond` holds ("true": always, no branch)."""
    if cond == "true":
        yield
        return
    then, done = fb.fresh("then"), fb.fresh("endif")
    fb.emit(f"br i1 {cond}, label {then}, label {done}")
    fb.label(then)
    yield
    fb.emit(f"br label {done}")
    fb.label(done)


def _transpose(fb: FunctionBuilder, vt: str, w: int, rows: list) -> list:
    """Transpose a W x W block held as W vectors: log2(W) rounds of interleaving
    row i with row i + W/2 (low halves to 2i, high halves to 2i + 1)."""
    lo = ", ".join(f"i32 {j}" for i in range(w // 2) for j in (i, i + w))
    hi = ", ".join(f"i32 {j}" for i in range(w // 2, w) for j in (i, i + w))
    for _ in range(w.bit_length() - 1):
        half, nxt = w // 2, []
        for i in range(half):
            x, y = rows[i], rows[i + half]
            nxt.append(fb.op(f"shufflevector {vt} {x}, {vt} {y}, <{w} x i32> <{lo}>", "tr"))
            nxt.append(fb.op(f"shufflevector {vt} {x}, {vt} {y}, <{w} x i32> <{hi}>", "tr"))
        rows = nxt
    return rows


def _sfx(t: str) -> str:
    return "f32" if t == "float" else "f64"


def _fmuladd(fb, vt, t, a, b, c) -> str:
    name = f"llvm.fmuladd.v{vt[1:vt.index(' ')]}{_sfx(t)}"
    fb.decls.add(f"declare {vt} @{name}({vt}, {vt}, {vt})")
    return fb.op(f"call {vt} @{name}({vt} {a}, {vt} {b}, {vt} {c})")
