"""The GEMM generator (gradc.codegen.gemm) against NumPy, on operands read through strides.

Each case is a NumPy view (a transpose of a contiguous array, or the array
itself) for a, b and the output; the generated code is given the views'
element strides, so every combination of transposed operands and a
transposed output is covered without copies. Sizes are odd (1, 3, 17, 33,
65, 129) so every tile, vector and k-block tail is met, and depths beyond
one k block (runtime block lengths, leftover rows of the transposed pack).
Batched cases broadcast batch dims of either operand. The tile shapes of
other vector widths (SSE, AVX-512) are generated and run here too.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import gradc
from gradc import prims as P
from gradc.codegen import gemm, jit, pool
from gradc.codegen.emitter import FunctionBuilder
from gradc.ir import Graph
from gradc.ir.builder import GraphBuilder, symbolic_tensor

DTYPES = [gradc.float32, gradc.float64]
SIZES = [(1, 1, 1), (3, 17, 33), (17, 33, 65), (33, 65, 129), (65, 129, 1), (129, 1, 3), (1, 3, 17),
         (17, 1, 129), (129, 300, 3), (7, 601, 33), (33, 3, 1)]
LAYOUTS = [(ta, tb, to) for ta in (False, True) for tb in (False, True) for to in (False, True)]


def _view(rng, d, shape, transposed):
    """A random array of logical `shape`, stored transposed in its last two dims if asked."""
    if not transposed:
        return rng.standard_normal(shape).astype(d.np)
    stored = rng.standard_normal(shape[:-2] + (shape[-1], shape[-2])).astype(d.np)
    return np.swapaxes(stored, -1, -2)


def _out(d, shape, transposed):
    if not transposed:
        return np.full(shape, np.nan, d.np)
    return np.swapaxes(np.full(shape[:-2] + (shape[-1], shape[-2]), np.nan, d.np), -1, -2)


def _operand(ptr, arr):
    return gemm.Operand(ptr, arr.shape, tuple(s // arr.itemsize for s in arr.strides))


def run_matmuls(d, cases, after=lambda: None, runs=1):
    """Compile one module computing out = a @ b for every (out, a, b) view triple, then run it
    `runs` times, calling `after()` after each run."""
    decls, functions = set(), []
    for i, (out, a, b) in enumerate(cases):
        fb = FunctionBuilder(f"define internal void @mm{i}(ptr noalias %o, ptr noalias %a, ptr noalias %b, "
                             "ptr noalias %s) noinline nounwind", decls)
        gemm.matmul(fb, d, _operand("%o", out), _operand("%a", a), _operand("%b", b), "%s")
        fb.emit("ret void")
        functions.append(fb.text())
    entry = FunctionBuilder("define void @entry(ptr %t) nounwind", decls)
    if pool.uses_pool(decls):  # what a lowered module's entry does with its constants blob
        entry.emit(f"store ptr inttoptr (i64 {pool.address()} to ptr), ptr {pool.GLOBAL}")
    slots = [entry.op(f"load ptr, ptr {entry.gep('ptr', '%t', j)}") for j in range(3 * len(cases) + 1)]
    for i in range(len(cases)):
        entry.emit(f"call void @mm{i}(ptr {slots[3 * i]}, ptr {slots[3 * i + 1]}, ptr {slots[3 * i + 2]}, "
                   f"ptr {slots[-1]})")
    entry.emit("ret void")
    _, obj = jit.optimize("\n\n".join(sorted(decls) + functions + [entry.text()]))
    lib = jit.NativeLibrary(obj, "entry")
    try:
        scratch = np.full(gemm.scratch_bytes(d.itemsize) // d.itemsize, np.nan, d.np)
        table = np.array([arr.ctypes.data for case in cases for arr in case] + [scratch.ctypes.data], np.uint64)
        for _ in range(runs):
            for out, _, _ in cases:
                out[...] = np.nan
            ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lib.address)(table.ctypes.data)
            after()
    finally:
        lib.close()


def check(d, cases, runs=1):
    rtol = 1e-5 if d is gradc.float32 else 1e-12

    def verify():
        for out, a, b in cases:
            want = np.matmul(a.astype(np.float64), b.astype(np.float64))
            scale = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))  # error bound per element
            what = f"{a.shape}{'T' if a.strides[-1] != a.itemsize else ''} @ {b.shape}" \
                   f"{'T' if b.strides[-1] != b.itemsize else ''} -> {'T' if out.strides[-1] != out.itemsize else ''}"
            assert np.all(np.abs(out - want) <= rtol * (scale + 1e-30) + 1e-30), what

    run_matmuls(d, cases, verify, runs)


@pytest.mark.parametrize("d", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("ta,tb,to", LAYOUTS, ids=lambda v: "T" if v else "N")
def test_transposed_operands_and_result(d, ta, tb, to):
    rng = np.random.default_rng(int(ta) * 4 + int(tb) * 2 + int(to))
    cases = [(_out(d, (m, n), to), _view(rng, d, (m, k), ta), _view(rng, d, (k, n), tb)) for m, k, n in SIZES]
    check(d, cases)


@pytest.mark.parametrize("d", DTYPES, ids=lambda d: d.name)
def test_batched_with_broadcast_batch_dims(d):
    rng = np.random.default_rng(5)
    shapes = [((3, 17, 33), (2, 1, 33, 5), (2, 3, 17, 5)), ((1, 9, 300), (4, 300, 18), (4, 9, 18)),
              ((2, 1, 3, 4), (3, 4, 2), (2, 3, 3, 2)), ((5, 1, 7), (7, 65), (5, 1, 65)),
              ((2, 3, 0, 4), (4, 6), (2, 3, 0, 6)), ((2, 3, 4), (2, 4, 0), (2, 3, 0)), ((2, 5, 0), (0, 3), (2, 5, 3))]
    cases = []
    for i, (sa, sb, so) in enumerate(shapes):
        ta, tb, to = i % 2 == 1, i % 3 == 1, i % 4 >= 2
        cases.append((_out(d, so, to), _view(rng, d, sa, ta), _view(rng, d, sb, tb)))
    check(d, cases)


@pytest.mark.parametrize("bits", [128, 512])
def test_tile_shapes_of_other_vector_widths(bits, monkeypatch):
    """SSE and AVX-512 tiles (and the 4x4 / 16x16 in-register transposes) compute the same."""
    monkeypatch.setattr(gemm, "vector_bits", lambda: bits)
    for d in DTYPES:
        rng = np.random.default_rng(bits)
        cases = [(_out(d, (m, n), to), _view(rng, d, (m, k), ta), _view(rng, d, (k, n), tb))
                 for (m, k, n), (ta, tb, to) in zip([(17, 300, 37), (9, 33, 50), (1, 130, 3), (20, 17, 16)] * 2,
                                                    LAYOUTS)]
        check(d, cases)


def test_through_transposes_finds_buffer_and_strides():
    g = Graph("t")
    x = g.add_input("x", gradc.float32, (2, 3, 4), "input")
    with GraphBuilder(g):
        t1 = P.transpose(symbolic_tensor(x), perm=(2, 0, 1))  # (4, 2, 3)
        t2 = P.transpose(t1, perm=(0, 2, 1))  # (4, 3, 2)
    base, strides = gemm.through_transposes(t2._data, {"x"})
    assert base is x
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    view = arr.transpose(2, 0, 1).transpose(0, 2, 1)
    assert strides == tuple(s // 4 for s in view.strides)
    assert gemm.through_transposes(x, {"x"}) == (x, (12, 4, 1))
    # a transpose stored by another kernel is read where it was stored
    t1v = t1._data
    assert gemm.through_transposes(t2._data, {"x", t1v.name}) == (t1v, (6, 1, 3))


def test_unsupported_output_strides_are_refused():
    fb = FunctionBuilder("define void @f(ptr %o, ptr %a, ptr %b, ptr %s)", set())
    a, b = gemm.Operand("%a", (3, 4), (4, 1)), gemm.Operand("%b", (4, 5), (5, 1))
    with pytest.raises(NotImplementedError, match="output strides"):
        gemm.matmul(fb, gradc.float32, gemm.Operand("%o", (3, 5), (10, 2)), a, b, "%s")


# (m, k, n): m <= n splits by column panels, m > n by row tiles (tails of both, several k blocks)
SPLIT_SIZES = [(17, 33, 65), (33, 300, 129), (3, 17, 40), (65, 129, 33), (129, 5, 200), (1, 65, 129), (2, 600, 70),
               (40, 9, 17), (66, 20, 17), (129, 300, 3), (12, 7, 11), (64, 64, 10)]


@pytest.mark.parametrize("nthreads", [2, 3])
def test_split_over_threads(nthreads, monkeypatch):
    """Column panels or row tiles shared by 2 or 3 threads (more parts than this machine may have
    cores), every layout; run several times, so that the pool's helper, awake after the first
    run, takes parts from the back while the caller takes them from the front."""
    monkeypatch.setattr(gemm, "threads", lambda: nthreads)
    monkeypatch.setattr(gemm, "PARALLEL_FLOPS", 0)
    for d in DTYPES:
        rng = np.random.default_rng(nthreads)
        cases = [(_out(d, (m, n), to), _view(rng, d, (m, k), ta), _view(rng, d, (k, n), tb))
                 for (m, k, n), (ta, tb, to) in zip(SPLIT_SIZES, LAYOUTS * 2)]
        check(d, cases, runs=5)


def test_split_direction(monkeypatch):
    """The larger operand is the one shared out: b's column panels when m <= n, a's row tiles when m > n."""
    monkeypatch.setattr(gemm, "threads", lambda: 2)
    f32 = gradc.float32
    assert gemm._split(f32, 64, 64, 128) == (8, False)
    assert gemm._split(f32, 128, 64, 64) == (4, True)
    assert gemm._split(f32, 10, 64, 64) == (1, False)  # under PARALLEL_FLOPS
    monkeypatch.setattr(gemm, "threads", lambda: 1)
    assert gemm._split(f32, 512, 512, 512) == (1, False)
