"""Loop nests over strided views: the shape of nearly every kernel.

A kernel iterates over an index space (usually its output's shape, in
memory order) and touches several buffers, each through an `Access`: a base
pointer, an element offset and one stride per loop dimension (0 where a
buffer is broadcast). Before emitting loops, size-1 dimensions are dropped
and neighbours that every access walks contiguously are merged, so an
elementwise op on contiguous buffers is one loop the vectorizer sees whole.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .emitter import FunctionBuilder


class Access(NamedTuple):
    ptr: str  # LLVM value of the buffer's base pointer
    ty: str  # LLVM element type in memory
    offset: int  # elements
    strides: tuple  # elements, one per loop dimension


def contiguous_strides(shape) -> tuple:
    out, s = [], 1
    for n in reversed(shape):
        out.append(s)
        s *= n
    return tuple(reversed(out))


def broadcast_strides(shape, out_shape, strides=None) -> tuple:
    """Strides that read a buffer of `shape` at every index of `out_shape` (NumPy broadcasting)."""
    strides = contiguous_strides(shape) if strides is None else strides
    lead = len(out_shape) - len(shape)
    return (0,) * lead + tuple(0 if n == 1 else s for n, s in zip(shape, strides))


def collapse(shape, strides: list) -> tuple:
    """Drop size-1 dims and merge neighbours contiguous for every access."""
    dims = [(n, [s[d] for s in strides]) for d, n in enumerate(shape) if n != 1]
    merged: list = []
    for n, ss in dims:
        if merged and all(p == s * n for p, s in zip(merged[-1][1], ss)):
            merged[-1] = (merged[-1][0] * n, ss)
        else:
            merged.append((n, ss))
    return [n for n, _ in merged], [[ss[k] for _, ss in merged] for k in range(len(strides))]


SHORT = 16  # LLVM vectorizes a loop this short only with masked tails (slow masked stores on AVX2)
CHUNK = 8  # ... so a short innermost dim is a loop over a multiple of this, then the rest written out
JAM = 4  # rows of terms folded into a row of accumulators per pass over it


def strided_loops(fb: FunctionBuilder, shape, accesses, body, accumulators=()) -> None:
    """Call `body(element pointers)` once per index of `shape`, innermost dim last.

    A short innermost dim (a row of 10 logits) is split into a loop over
    its first multiple of CHUNK elements, which vectorizes without masks,
    and the few elements left, written out: straight-line code, cheaper
    than the masked vector tail LLVM gives such a loop, and cheap to
    compile, unlike unrolling the whole row.

    `accumulators` are the indices of the accesses a reduction folds into.
    Where each is a row that stays put along the dim outside the innermost
    (a column sum: a bias's gradient), JAM rows of terms are folded per
    pass over it, which then costs one load and store per JAM terms, not
    per term, and a chain of dependent adds a quarter as long (each
    accumulator still takes its terms in order: the result is the same)."""
    if math.prod(shape) == 0:
        return
    dims, strides = collapse(shape, [a.strides for a in accesses])
    jam = len(dims) - 2 if _jams(dims, strides, accumulators) else None

    def at(rows, i, d, step=1):
        return [[fb.mad(o, i, s[d] * step) for o, s in zip(offs, strides)] for offs in rows]

    def level(d, rows):
        if d == len(dims):
            for offs in rows:
                body([fb.gep(a.ty, a.ptr, o) for a, o in zip(accesses, offs)])
            return
        n = dims[d]
        if d == jam:
            with fb.loop(n // JAM, "jam") as i:
                base = at(rows, i, d, JAM)
                level(d + 1, [offs for r in range(JAM) for offs in at(base, r, d)])
            for i in range(n - n % JAM, n):
                level(d + 1, at(rows, i, d))
            return
        rest = n % CHUNK if d == len(dims) - 1 and n < SHORT else 0
        if n > rest:
            with fb.loop(n - rest) as i:
                level(d + 1, at(rows, i, d))
        for i in range(n - rest, n):
            level(d + 1, at(rows, i, d))

    level(0, [[a.offset for a in accesses]])


def _jams(dims, strides, accumulators) -> bool:
    """Whether every accumulator walks the innermost dim and stays put along the one outside it."""
    return (len(dims) >= 2 and dims[-2] >= JAM and len(accumulators) > 0
            and all(strides[k][-2] == 0 and strides[k][-1] != 0 for k in accumulators))


def tiled_loops(fb: FunctionBuilder, shape, dst: Access, src: Access, body, block: int = 16) -> None:
    """Like `strided_loops` for a copy whose source is contiguous along another dim
    than the destination (a transpose): walk both in square blocks, so each
    block's cache lines are read and written whole."""
    if math.prod(shape) == 0:
        return
    dims, (ds, ss) = collapse(shape, [dst.strides, src.strides])
    inner = [d for d in range(len(dims) - 1) if ss[d] == 1]
    if not inner or ss[-1] == 1 or dims[-1] < block or dims[inner[0]] < block:
        return strided_loops(fb, shape, [dst, src], body)
    p, q = inner[0], len(dims) - 1
    outer = [d for d in range(len(dims)) if d not in (p, q)]

    def blocks(offs, todo):
        if todo:
            d = todo[0]
            with fb.loop(dims[d]) as i:
                blocks([fb.mad(offs[0], i, ds[d]), fb.mad(offs[1], i, ss[d])], todo[1:])
            return
        with fb.loop(-(-dims[p] // block), "pb") as pb:
            with fb.loop(-(-dims[q] // block), "qb") as qb:
                p0, q0 = fb.mad(0, pb, block), fb.mad(0, qb, block)
                o = [fb.mad(fb.mad(offs[k], p0, st[p]), q0, st[q]) for k, st in enumerate((ds, ss))]
                with fb.loop(block_span(fb, p0, dims[p], block), "pi") as i:
                    o2 = [fb.mad(o[k], i, st[p]) for k, st in enumerate((ds, ss))]
                    with fb.loop(block_span(fb, q0, dims[q], block), "qi") as j:
                        o3 = [fb.mad(o2[k], j, st[q]) for k, st in enumerate((ds, ss))]
                        body([fb.gep(dst.ty, dst.ptr, o3[0]), fb.gep(src.ty, src.ptr, o3[1])])

    blocks([dst.offset, src.offset], outer)


def block_span(fb: FunctionBuilder, start: str, n: int, block: int):
    """min(block, n - start): the length of a block that may be the last, partial one."""
    if n % block == 0:
        return block
    left = fb.op(f"sub nsw i64 {n}, {start}")
    return fb.op(f"select i1 {fb.op(f'icmp slt i64 {left}, {block}')}, i64 {left}, i64 {block}")
