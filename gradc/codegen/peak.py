"""A kernel that runs the CPU's vector FMA units flat out: what "% of peak" is measured against.

Each part of the work keeps ACCUMULATORS vectors of W float lanes in registers
and updates every one with `acc = fma(acc, a, b)` per iteration. The chains
are independent, and there are more of them than FMA latency times
throughput (4 cycles x 2 units on Zen 3, 4 x 2 on Intel), so the units never
wait for a result; nothing but the FMAs touches memory inside the loop. It is
compiled by the same O3 JIT as gradc's kernels (jit.py), and run on several
threads through the process's pool (pool.py), as a GEMM split over cores is.

One call runs `parts` parts of `iters` iterations, each part starting from
and writing back its own ACCUMULATORS x W floats, so `flops(iters, parts)`
is exactly what executed and the result can be checked (with a = b = 1 every
lane ends at its start plus `iters`).
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from . import jit, pool

SYMBOL = "gradc_peak_fma"
# args, an i64 array: accumulators, coefficients (a, b), iterations, parts, next part, next thread slot, threads
_ARGS = 7


def lanes() -> int:
    """Float lanes of one vector register."""
    return max(jit.vector_bits() // 32, 4)


def accumulators() -> int:
    """Independent chains per thread: more than latency x throughput, fewer than the registers
    (16 without AVX-512, leaving room for a and b; 32 with it)."""
    return 24 if jit.vector_bits() >= 512 else 12


def flops(iters: int, parts: int) -> int:
    """Float operations of one call: a multiply and an add per lane, chain, iteration and part."""
    return 2 * lanes() * accumulators() * iters * parts


def _text() -> str:
    w, n = lanes(), accumulators()
    vt = f"<{w} x float>"
    fma = f"llvm.fma.v{w}f32"
    splat = f"<{w} x i32> zeroinitializer"
    arg = "\n".join(f"  %g{i} = getelementptr i64, ptr %args, i64 {i}" for i in range(_ARGS))
    load = "\n".join(f"  %p{j} = getelementptr {vt}, ptr %base, i64 {j}\n  %i{j} = load {vt}, ptr %p{j}, align 4"
                     for j in range(n))
    phis = "\n".join(f"  %a{j} = phi {vt} [ %i{j}, %part ], [ %n{j}, %loop ]" for j in range(n))
    body = "\n".join(f"  %n{j} = call {vt} @{fma}({vt} %a{j}, {vt} %va, {vt} %vb)" for j in range(n))
    store = "\n".join(f"  store {vt} %n{j}, ptr %p{j}, align 4" for j in range(n))
    return f"""
declare {vt} @{fma}({vt}, {vt}, {vt})

define void @{SYMBOL}(ptr noalias nonnull %args) nounwind {{
entry:
{arg}
  %acc = load ptr, ptr %g0
  %coef = load ptr, ptr %g1
  %iters = load i64, ptr %g2
  %parts = load i64, ptr %g3
  %threads = load i64, ptr %g6
  %ca = load float, ptr %coef
  %pb = getelementptr float, ptr %coef, i64 1
  %cb = load float, ptr %pb
  %sa = insertelement {vt} poison, float %ca, i64 0
  %va = shufflevector {vt} %sa, {vt} poison, {splat}
  %sb = insertelement {vt} poison, float %cb, i64 0
  %vb = shufflevector {vt} %sb, {vt} poison, {splat}
  %slot = atomicrmw add ptr %g5, i64 1 monotonic
  %spare = icmp uge i64 %slot, %threads       ; a pool with more threads than asked for: this one rests
  br i1 %spare, label %done, label %first
first:
  %p.first = atomicrmw add ptr %g4, i64 1 monotonic
  br label %claim
claim:
  %p = phi i64 [ %p.first, %first ], [ %p.next, %exit ]
  %more = icmp ult i64 %p, %parts
  br i1 %more, label %part, label %done
part:
  %off = mul i64 %p, {n}
  %base = getelementptr {vt}, ptr %acc, i64 %off
{load}
  br label %loop
loop:
  %k = phi i64 [ 0, %part ], [ %k.next, %loop ]
{phis}
{body}
  %k.next = add i64 %k, 1
  %again = icmp ult i64 %k.next, %iters
  br i1 %again, label %loop, label %exit
exit:
{store}
  %p.next = atomicrmw add ptr %g4, i64 1 monotonic
  br label %claim
done:
  ret void
}}
"""


class PeakKernel:
    """The compiled kernel (from the on-disk cache when it was compiled before)."""

    def __init__(self):
        self.optimized_ir, obj = jit.cached_optimize(_text())
        self._lib = jit.NativeLibrary(obj, SYMBOL)
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._lib.address)

    def run(self, acc: np.ndarray, iters: int, threads: int = 1, a: float = 1.0, b: float = 1.0) -> None:
        """Run len(acc) parts of `iters` iterations on `threads` threads (the pool's, beyond one),
        updating `acc` (float32, parts x accumulators() x lanes()) in place."""
        self.bind(acc, iters, threads, a, b)()

    def bind(self, acc: np.ndarray, iters: int, threads: int = 1, a: float = 1.0, b: float = 1.0):
        """`run`'s arguments checked and laid out once: a callable that runs it again with a
        few hundred nanoseconds of Python around the native call."""
        if acc.dtype != np.float32 or acc.shape[1:] != (accumulators(), lanes()) or not acc.flags.c_contiguous:
            raise ValueError(f"acc must be C-contiguous float32 of shape (parts, {accumulators()}, {lanes()})")
        if iters < 1 or threads < 1:
            raise ValueError("iters and threads must be at least 1")
        if threads > pool.threads():
            raise ValueError(f"the pool has {pool.threads()} threads, not {threads}")
        coef = np.array([a, b], np.float32)
        args = np.array([acc.ctypes.data, coef.ctypes.data, iters, acc.shape[0], 0, 0, threads], np.int64)
        assert len(args) == _ARGS
        address, fn = args.ctypes.data, self._fn
        if threads > 1:  # the pool calls the kernel on the caller and on its helpers
            fn = functools.partial(_pool_run(), self._lib.address)

        def call(keep=(acc, coef)):  # the buffers the kernel reads live as long as `call`
            args[4] = args[5] = 0  # the counters of parts and thread slots
            fn(address)

        return call


@functools.lru_cache(maxsize=None)
def _pool_run():
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(pool.address())


@functools.lru_cache(maxsize=None)
def kernel() -> PeakKernel:
    """The process's peak kernel, compiled once."""
    return PeakKernel()
