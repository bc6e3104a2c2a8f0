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

A product of at least PARALLEL_FLOPS is split between the threads of the
process's pool (pool.py), by column panels or, where a is the larger operand,
by row tiles (`_split`); the first thread claims parts from the front, the
next from the back, so their outputs meet at one place. A fused kernel's
elementwise epilogue (bias, ReLU and its mask, an optimizer update) runs on
each panel (of the thread's rows) as soon as its last k block is in, by the
thread that computed it, while the panel is in cache, unless the output is so
tall that walking it panel by panel would cost more than a loop of its own
(`fuses_epilogue`).

`matmul` adds the broadcast batch dims and a transposed output (computed as
out.T = b.T @ a.T, which is only a swap of operands and strides), and
`through_transposes` finds the buffer and strides a `transpose` node's
result can be read at, so a graph's transposes of matmul operands and
results need no kernel of their own.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, NamedTuple

from . import pool
from .emitter import FunctionBuilder, mem_type, quote
from .jit import vector_bits
from .loops import Access, block_span, broadcast_strides, contiguous_strides, strided_loops
from .pool import threads


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
    """Size of the packed b panels (KC rows of NR*W lanes), one per thread the pool may have."""
    return _panel_elems(itemsize) * itemsize * pool.MAX_THREADS


# ---------------------------------------------------------------- threads
PARALLEL_FLOPS = 1_000_000  # below this a product stays on one thread (see _split)
PARALLEL_ELEMENTS = 65_536  # below this an epilogue's rows stay on one thread
PARTS_PER_THREAD = 4  # parts claimed one at a time balance a thread that joins late or is slowed
ROW_PARTS_PER_THREAD = 2  # a row split packs all of b per part: fewer parts


def _split(d, m: int, k: int, n: int, columns: bool = False) -> tuple:
    """(parts, by rows?): how to share out = a @ b between threads ((1, False): not at all).

    By column panels where a is the smaller operand (m <= n): each thread streams its
    share of b and reads all of a. Else by row tiles, so that each thread reads only its
    share of the larger a (in a training step, the rows of a weight gradient's dY.T that
    the same thread wrote, as the parts are claimed in the same order), at the cost of
    packing every panel of b once per part: so fewer, larger parts (ROW_PARTS_PER_THREAD).
    `columns`: never by rows (an epilogue's column sums must each be folded by one thread).
    """
    mr, nr, w, _ = tile_shape(d.itemsize)
    rows = m > n and not columns
    units = -(-m // mr) if rows else -(-n // (nr * w))
    if threads() == 1 or units < 2 or 2 * m * k * n < PARALLEL_FLOPS:
        return 1, False
    return min((ROW_PARTS_PER_THREAD if rows else PARTS_PER_THREAD) * threads(), units), rows


class Epilogue(NamedTuple):
    """Elementwise code the GEMM runs on its output: on every finished column panel, while the
    panel is in cache and by the thread that computed it, or after the product on rows shared
    by the threads. `body(fb, pointers)` emits it for one element, given a pointer into each
    of `accesses` (loops.Access whose strides are per (row, column) of the output)."""

    accesses: list
    body: Callable
    mode: str = "panels"  # or "rows": after the whole product, rows shared by the threads
    sums: tuple = ()  # indices of the accesses that are a column sum's accumulators (loops.strided_loops)


EPILOGUE_PANEL_BYTES = 64 * 1024  # what one panel's epilogue may touch to run on it (from cache)
EPILOGUE_MIN_ROWS = 32  # over fewer rows a panel's epilogue loops cost more than one loop over all


def fuses_epilogue(mm, epi) -> str | None:
    """How loop stage `epi` runs with matmul stage `mm` (see passes.fuse.Stage), if the GEMM
    runs it: a float 2-D product with no size-1 dim or empty sum, and an elementwise loop
    over its result. "panels" where a panel has EPILOGUE_MIN_ROWS rows or more and what
    its epilogue touches stays in cache; over taller buffers (a large weight's optimizer
    update) walking them column block by column block defeats prefetching and the TLB, so
    there the threads share its rows ("rows"); else (one thread, few elements) the
    epilogue keeps its own loop (None)."""
    n = mm.node
    shape = mm.result.shape if mm.result is not None else ()
    sums = [epi.accesses[step[2]][1] for step in epi.steps if step[0] == "acc"]  # a panel owns its columns' sums
    if not (n.out.dtype.is_floating_point and epi.kind == "epilogue" and len(shape) == 2 and min(shape) > 1
            and n.operands[0].shape[-1] > 0 and tuple(epi.dims) == tuple(shape) and all(s[0] == 0 for s in sums)):
        return None
    _, nr, w, _ = tile_shape(n.out.dtype.itemsize)
    short = shape[0] * nr * w * sum(v.dtype.itemsize for v, _, _ in epi.accesses) <= EPILOGUE_PANEL_BYTES
    if short and shape[0] >= EPILOGUE_MIN_ROWS:
        return "panels"
    return "rows" if threads() > 1 and math.prod(shape) >= PARALLEL_ELEMENTS and not sums else None


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


def matmul(fb: FunctionBuilder, d, out: Operand, a: Operand, b: Operand, scratch: str,
           epilogue: Epilogue | None = None) -> None:
    """out = a @ b over the broadcast batch dims, every operand read or written through its strides.

    out's matrix dims must be row-major (strides (N, 1)) or transposed
    ((1, M)); a and b may have any strides. An `epilogue` (only without batch
    dims) runs on the output as stored, whose rows and columns its strides walk.
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
    on_panels = epilogue if epilogue is not None and epilogue.mode == "panels" else None
    if (m == 1 or s0 == n) and (n == 1 or s1 == 1):
        rows, cols = m, n

        def body(p):
            gemm(fb, d, p[0], p[1], p[2], m, kk, n, sa, scratch, sb, on_panels)
    elif (m == 1 or s0 == 1) and (n == 1 or s1 == m):
        rows, cols = n, m

        def body(p):  # out.T = b.T @ a.T
            gemm(fb, d, p[0], p[2], p[1], n, kk, m, sb[::-1], scratch, sa[::-1], on_panels)
    else:
        raise NotImplementedError(f"matmul output strides {(s0, s1)} for a [{m}, {n}] result")
    assert epilogue is None or not batch, "a GEMM epilogue runs on one matrix"
    strided_loops(fb, batch, accesses, body)
    if epilogue is not None and epilogue.mode == "rows":
        _rows_epilogue(fb, epilogue, rows, cols)


def _rows_epilogue(fb: FunctionBuilder, epilogue: Epilogue, rows: int, cols: int) -> None:
    """Run `epilogue` over the whole [rows, cols] output, its rows shared by the pool's threads."""
    parts = min(PARTS_PER_THREAD * threads(), rows)

    def part_code(pf, ptr, part, slot):
        r0 = pf.op(f"udiv i64 {pf.op(f'mul i64 {part}, {rows}')}, {parts}")
        p1 = pf.op(f"add i64 {part}, 1")
        r1 = pf.op(f"udiv i64 {pf.op(f'mul i64 {p1}, {rows}')}, {parts}")
        with pf.loop(pf.op(f"sub i64 {r1}, {r0}"), "er") as r:
            i = pf.op(f"add i64 {r0}, {r}")
            with pf.loop(cols, "ec") as j:
                epilogue.body(pf, [pf.gep(acc.ty, ptr[acc.ptr], pf.mad(pf.mad(acc.offset, i, acc.strides[0]), j,
                                                                       acc.strides[1])) for acc in epilogue.accesses])

    _on_pool(fb, "epilogue", [acc.ptr for acc in epilogue.accesses], parts, part_code)


def gemm(fb: FunctionBuilder, d, po: str, pa: str, pb: str, m: int, k: int, n: int, a_strides: tuple,
         scratch: str, b_strides: tuple | None = None, epilogue: Epilogue | None = None) -> None:
    """Emit out = a @ b for one matrix; `a_strides`, `b_strides` = (row, column) element strides
    (b row-major when None); out is row-major, `scratch` holds `scratch_bytes`.

    A large product is split by column panels over `threads()` threads: the
    caller and the helpers of the process's pool (pool.py) all claim parts
    with an atomic counter, so a helper that joins late or not at all only
    leaves more parts to the others. An `epilogue` runs on each finished panel.
    """
    b_strides = (n, 1) if b_strides is None else tuple(b_strides)
    if not (m and n and k):
        fb.memzero(po, m * n * d.itemsize)
        return
    assert epilogue is None or k, "an epilogue runs on panels of a non-empty sum"
    parts, rows = _split(d, m, k, n, epilogue is not None and bool(epilogue.sums))
    if parts == 1:
        _emit(fb, d, po, pa, pb, m, k, n, tuple(a_strides), b_strides, scratch, None, epilogue)
        return
    extra = [] if epilogue is None else [acc.ptr for acc in epilogue.accesses]

    def part_code(pf, ptr, part, slot):
        mine = pf.gep(mem_type(d), ptr[scratch], pf.mad(0, slot, _panel_elems(d.itemsize)))
        epi = None if epilogue is None else epilogue._replace(
            accesses=[acc._replace(ptr=ptr[acc.ptr]) for acc in epilogue.accesses])
        _emit(pf, d, ptr[po], ptr[pa], ptr[pb], m, k, n, tuple(a_strides), b_strides, mine, (part, parts, rows), epi)

    _on_pool(fb, "gemm", [po, pa, pb, scratch, *extra], parts, part_code)


def _on_pool(fb: FunctionBuilder, what: str, pointers: list, parts: int, part_code) -> None:
    """Emit a call that runs `parts` parts on the pool's threads (the caller's too), each
    claimed from a counter: `part_code(pf, ptr, part, slot)` emits part `part` (an i64 value)
    into function `pf`, reading the buffers at `ptr[p]` for each p in `pointers`; `slot`
    numbers the threads (0, 1, ...) for per-thread scratch. The part's code gets a function
    of its own whose parameters are `noalias`, one per distinct buffer, so that it is
    optimized as the kernel's own code is (a worker's pointers loaded from memory could
    alias, which stops vectorization)."""
    named = fb.header[fb.header.index("@") + 1:]  # the kernel's name, to name its helpers after
    kernel = named[1:named.index('"', 1)] if named.startswith('"') else named[:named.index("(")]
    uniq = list(dict.fromkeys(pointers))
    body_name, name = quote(f"{kernel}.{what}.part"), quote(f"{kernel}.{what}")
    params = ", ".join(f"ptr noalias %q{i}" for i in range(len(uniq)))
    pb = FunctionBuilder(f"define internal void {body_name}({params}, i64 %part, i64 %slot) nounwind", fb.decls)
    part_code(pb, {p: f"%q{i}" for i, p in enumerate(uniq)}, "%part", "%slot")
    pb.emit("ret void")
    fb.decls.add(pb.text())

    pf = FunctionBuilder(f"define internal void {name}(ptr noalias nonnull %args) nounwind", fb.decls)
    loaded = [pf.op(f"load ptr, ptr {pf.gep('ptr', '%args', i)}", "arg") for i in range(len(uniq))]
    counter = pf.gep("ptr", "%args", len(uniq))
    slot = pf.op(f"atomicrmw add ptr {pf.gep('ptr', '%args', len(uniq) + 1)}, i64 1 monotonic", "slot")
    # parts are claimed from both ends (the counter's high half counts those taken from the
    # front, its low half those from the back): the first thread in walks forward, the next
    # backward, so two threads' parts meet once, and output rows that are not cache-line
    # aligned (a user's array, a bool mask) share a line between threads at one place only
    odd = pf.op(f"trunc i64 {slot} to i1")
    step = pf.op(f"select i1 {odd}, i64 1, i64 {1 << 32}")
    head, body, done = pf.fresh("claim"), pf.fresh("part"), pf.fresh("finished")
    slotted = pf.op(f"icmp ult i64 {slot}, {pool.MAX_THREADS}")  # past the scratch slots (never, in the pool)
    pf.emit(f"br i1 {slotted}, label {head}, label {done}")
    pf.label(head)
    old = pf.op(f"atomicrmw add ptr {counter}, i64 {step} monotonic", "taken")
    front, back = pf.op(f"lshr i64 {old}, 32"), pf.op(f"and i64 {old}, 4294967295")
    more = pf.op(f"icmp ult i64 {pf.op(f'add i64 {front}, {back}')}, {parts}")
    part = pf.op(f"select i1 {odd}, i64 {pf.op(f'sub i64 {parts - 1}, {back}')}, i64 {front}", "p")
    pf.emit(f"br i1 {more}, label {body}, label {done}")
    pf.label(body)
    args = ", ".join(f"ptr {q}" for q in loaded)
    pf.emit(f"call void {body_name}({args}, i64 {part}, i64 {slot})")
    pf.emit(f"br label {head}")
    pf.label(done)
    pf.emit("ret void")
    fb.decls.add(pf.text())

    table = fb.local(f"[{len(uniq) + 2} x i64]")  # the buffers, the parts taken, the next thread slot
    for i, p in enumerate(uniq):
        fb.emit(f"store ptr {p}, ptr {fb.gep('ptr', table, i)}")
    for i in (len(uniq), len(uniq) + 1):
        fb.emit(f"store i64 0, ptr {fb.gep('ptr', table, i)}")
    pool.call(fb, name, table)


def _emit(fb: FunctionBuilder, d, po: str, pa: str, pb: str, m: int, k: int, n: int, a_strides: tuple,
          b_strides: tuple, scratch: str, part=None, epilogue: Epilogue | None = None) -> None:
    """The GEMM's loops; with `part` = (index as an i64 value, count, by rows?) only that share
    of the row tiles (every column panel of them) or of the column panels (all their rows)."""
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

    def panel(j0, k0, lanes, depth, last):
        pack(j0, k0, lanes, depth)
        if m // mr:
            with fb.loop(row_count, "ib") as ib:
                tile(fb.mad(0, fb.mad(row_lo, ib, 1), mr), j0, k0, mr, lanes, depth)
        if m % mr:
            with _when(fb, has_row_tail):
                tile((m // mr) * mr, j0, k0, m % mr, lanes, depth)
        if epilogue is not None:
            with _when(fb, last):
                finish(j0, sum(lanes))

    def finish(j0, cols: int) -> None:
        """The epilogue on out[rows, j0:j0 + cols] (this part's rows), once its last k block is in."""
        if part is None or not part[2]:
            return _epilogue_block(fb, epilogue, j0, cols, None, m)
        with fb.loop(row_count, "eb") as ib:  # a row split's rows, tile by tile
            _epilogue_block(fb, epilogue, j0, cols, fb.mad(0, fb.mad(row_lo, ib, 1), mr), mr)
        if m % mr:
            with _when(fb, has_row_tail):
                _epilogue_block(fb, epilogue, j0, cols, (m // mr) * mr, m % mr)

    block = nr * w
    full, rest = n // block, n % block
    rest_lanes = [w] * (rest // w) + ([rest % w] if rest % w else [])
    lo, count, has_rest = 0, full, "true"  # column panels: all (or this part's)
    row_lo, row_count, has_row_tail = 0, m // mr, "true"  # row tiles: all (or this part's)
    if part is not None:
        p, parts, by_rows = part
        tiles, whole = (-(-m // mr), m // mr) if by_rows else (full + (1 if rest else 0), full)
        shared = _share(fb, p, parts, tiles, whole)
        if by_rows:  # units: row tiles, the last one short
            row_lo, row_count, has_row_tail = shared
        else:  # units: full panels, then the rest panel
            lo, count, has_rest = shared

    def columns(k0, depth, last):
        if full:
            with fb.loop(count, "jb") as jb:
                panel(fb.mad(0, fb.mad(lo, jb, 1), block), k0, [w] * nr, depth, last)
        if rest:
            with _when(fb, has_rest):
                panel(full * block, k0, rest_lanes, depth, last)

    if k <= kc:
        columns(0, k, "true")
        return
    blocks = -(-k // kc)
    with fb.loop(blocks, "kb") as kb:  # the last block may be shorter: a runtime depth
        k0 = fb.mad(0, kb, kc)
        columns(k0, block_span(fb, k0, k, kc), fb.op(f"icmp eq i64 {kb}, {blocks - 1}"))


def _epilogue_block(fb: FunctionBuilder, epilogue: Epilogue, j0, cols: int, i0, rows: int) -> None:
    """The epilogue on out[i0:i0 + rows, j0:j0 + cols] (i0 None: from row 0)."""
    def start(acc):
        off = fb.mad(acc.offset, j0, acc.strides[1])
        return fb.gep(acc.ty, acc.ptr, off if i0 is None else fb.mad(off, i0, acc.strides[0]))

    at = [acc._replace(ptr=start(acc), offset=0) for acc in epilogue.accesses]
    strided_loops(fb, (rows, cols), at, lambda p: epilogue.body(fb, p), epilogue.sums)


def _share(fb: FunctionBuilder, p: str, parts: int, units: int, whole: int) -> tuple:
    """Part `p` of `parts` of `units` units, the first `whole` of which are whole: (its first
    unit, how many whole units it has, i1: whether it has the short last unit)."""
    lo = fb.op(f"udiv i64 {fb.op(f'mul i64 {p}, {units}')}, {parts}")
    p1 = fb.op(f"add i64 {p}, 1")
    hi = fb.op(f"udiv i64 {fb.op(f'mul i64 {p1}, {units}')}, {parts}")
    top = fb.op(f"select i1 {fb.op(f'icmp ult i64 {hi}, {whole}')}, i64 {hi}, i64 {whole}")
    count = fb.op(f"select i1 {fb.op(f'icmp ult i64 {lo}, {top}')}, i64 {fb.op(f'sub i64 {top}, {lo}')}, i64 0")
    return lo, count, fb.op(f"icmp ugt i64 {hi}, {whole}")


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
