"""Float matmul: a register-blocked GEMM written with explicit vectors.

out[M, N] = a[M, K] @ b[K, N], b and out row-major. The output is cut into
tiles of MR rows by NR vectors of W lanes; a tile's MR*NR accumulators stay
in registers while k runs over a block of KC (so the b panel it streams
stays in L1), each step broadcasting one element of a per row and fusing a
multiply-add per accumulator. Shapes are static, so tails are their own
instances of the same tile code: fewer rows, fewer vectors, a constant mask
on the last vector. The tile is unrolled in the IR; its k loop stays a loop,
which keeps compile time at tens of milliseconds.

`a` is read one element at a time through its strides, so it may be a
transposed view at no cost.
"""
from __future__ import annotations

from .emitter import FunctionBuilder, mem_type
from .jit import vector_bits
from .loops import block_span


def tile_shape(itemsize: int) -> tuple:
    """(MR rows, NR vectors, W lanes, KC) for the host's vector registers."""
    bits = vector_bits()
    w = max(bits // (8 * itemsize), 2)
    if bits >= 512:  # 32 registers: 8x3 accumulators + 3 of b + 1 of a
        return 8, 3, w, 128
    return 6, 2, w, 256  # 16 registers: 6x2 + 2 + 1


def scratch_bytes(itemsize: int) -> int:
    """Size of the packed b panel (KC rows of NR*W lanes)."""
    _, nr, w, kc = tile_shape(itemsize)
    return kc * nr * w * itemsize


def gemm(fb: FunctionBuilder, d, po: str, pa: str, pb: str, m: int, k: int, n: int, a_strides: tuple,
         scratch: str) -> None:
    """Emit out = a @ b for one matrix; `a_strides` = (row, column) element strides of a.

    Each KC x NR*W panel of b is first copied into `scratch` (zero-padded past
    column n): rows of b lie n elements apart, which for n a multiple of 512
    bytes maps a panel onto a couple of cache sets; packed it is contiguous.
    """
    t = mem_type(d)
    mr, nr, w, kc = tile_shape(d.itemsize)
    vt = f"<{w} x {t}>"
    fb.memzero(po, m * n * d.itemsize)
    if not (m and n and k):
        return

    def mask(lanes: int) -> str:
        return f"<{w} x i1> <" + ", ".join(f"i1 {'true' if i < lanes else 'false'}" for i in range(w)) + ">"

    def vload(ptr: str, lanes: int) -> str:
        if lanes == w:
            return fb.op(f"load {vt}, ptr {ptr}, align {d.itemsize}", "vb")
        name = f"llvm.masked.load.v{w}{_sfx(t)}.p0"
        fb.decls.add(f"declare {vt} @{name}(ptr, <{w} x i1>, {vt})")
        return fb.op(f"call {vt} @{name}(ptr align {d.itemsize} {ptr}, {mask(lanes)}, {vt} zeroinitializer)")

    def vstore(val: str, ptr: str, lanes: int) -> None:
        if lanes == w:
            fb.emit(f"store {vt} {val}, ptr {ptr}, align {d.itemsize}")
            return
        name = f"llvm.masked.store.v{w}{_sfx(t)}.p0"
        fb.decls.add(f"declare void @{name}({vt}, ptr, <{w} x i1>)")
        fb.emit(f"call void @{name}({vt} {val}, ptr align {d.itemsize} {ptr}, {mask(lanes)})")

    def pack(j0, k0, lanes: list, depth: int) -> None:
        b0 = fb.gep(t, pb, fb.mad(j0, k0, n))
        with fb.loop(depth, "pk") as q:
            src, dst = fb.gep(t, b0, fb.mad(0, q, n)), fb.gep(t, scratch, fb.mad(0, q, len(lanes) * w))
            for c, lanes_c in enumerate(lanes):
                vstore(vload(fb.gep(t, src, c * w), lanes_c), fb.gep(t, dst, c * w), w)

    def tile(i0, j0, k0, rows: int, lanes: list, depth: int) -> None:
        """Accumulate a[i0:i0+rows, k0:k0+depth] @ (packed panel) into out[i0:i0+rows, j0:...]."""
        obase = fb.gep(t, po, fb.mad(j0, i0, n))
        outs = [[fb.gep(t, obase, r * n + c * w) for c in range(len(lanes))] for r in range(rows)]
        accs = [[fb.local(vt, vload(outs[r][c], lanes[c])) for c in range(len(lanes))] for r in range(rows)]
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

    def columns(k0, depth):
        block = nr * w
        if n // block:
            with fb.loop(n // block, "jb") as jb:
                panel(fb.mad(0, jb, block), k0, [w] * nr, depth)
        rest = n % block
        if rest:
            panel((n // block) * block, k0, [w] * (rest // w) + ([rest % w] if rest % w else []), depth)

    if k <= kc:
        columns(0, k)
        return
    with fb.loop(-(-k // kc), "kb") as kb:  # the last block may be shorter: a runtime depth
        k0 = fb.mad(0, kb, kc)
        columns(k0, block_span(fb, k0, k, kc))


def _sfx(t: str) -> str:
    return "f32" if t == "float" else "f64"


def _fmuladd(fb, vt, t, a, b, c) -> str:
    name = f"llvm.fmuladd.v{vt[1:vt.index(' ')]}{_sfx(t)}"
    fb.decls.add(f"declare {vt} @{name}({vt}, {vt}, {vt})")
    return fb.op(f"call {vt} @{name}({vt} {a}, {vt} {b}, {vt} {c})")
