"""Compiled exp, log, log1p, tanh, sigmoid and erf (gradc.codegen.vmath) against NumPy and math.erf.

Each op is compiled through `compile_graph` on a graph holding that one
unary op, and fed values from every binade of both signs (random bit
patterns, so denormals, huge and tiny values), a dense sample of the range
where the function is not constant, values around the overflow and
underflow thresholds, and the special values. Errors are counted in ulps of
the result's dtype against a more precise reference: float64 for float32
results, long double (math.erf for erf) for float64 results. Special cases
must come out exactly, signed zeros included. The optimized LLVM IR must be
vector code with no calls left but LLVM intrinsics.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import gradc
from gradc import prims as P
from gradc.codegen import compile_graph
from gradc.ir import Graph
from gradc.ir.builder import GraphBuilder, symbolic_tensor

DTYPES = {np.float32: gradc.float32, np.float64: gradc.float64}
OPS = ["exp", "log", "log1p", "tanh", "sigmoid", "erf"]
# max error in ulps; for float64 it includes the error of the reference (math.erf: up to 1 ulp)
MAX_ULP = {
    np.float32: {"exp": 1.5, "log": 1.5, "log1p": 2, "tanh": 3, "sigmoid": 3, "erf": 3},
    np.float64: {"exp": 1.5, "log": 1.5, "log1p": 1.5, "tanh": 3, "sigmoid": 2.5, "erf": 3},
}
# where each function is not constant (beyond: inf, 0, +-1)
RANGE = {"exp": 750, "log": 4, "log1p": 4, "tanh": 25, "sigmoid": 750, "erf": 7}
_erf = np.vectorize(math.erf, otypes=[np.float64])


def reference(op, x):
    """op(x) in the next wider precision, as an array of that precision."""
    w = x.astype(np.float64 if x.dtype == np.float32 else np.longdouble)
    if op == "erf":
        return _erf(x.astype(np.float64))
    if op == "sigmoid":  # 1/(1+exp(-x)) without overflow
        e = np.exp(-np.abs(w))
        return np.where(w >= 0, 1 / (1 + e), e / (1 + e))
    return getattr(np, op)(w)


_cache = {}
CHUNK = 4096


def compiled_graph(op, dt):
    """(CompiledGraph of `op` on a float vector of CHUNK elements, its output's name), compiled once."""
    if (op, dt) not in _cache:
        g = Graph(op)
        v = g.add_input("x", DTYPES[dt], (CHUNK,), "input")
        with GraphBuilder(g):
            g.outputs = [getattr(P, op)(symbolic_tensor(v))._data]
        _cache[op, dt] = compile_graph(g), g.outputs[0].name
    return _cache[op, dt]


def compiled(op, dt):
    """op as a function of any 1-d array (run in zero-padded chunks: compiled shapes are static)."""
    cg, name = compiled_graph(op, dt)

    def run(x):
        out = []
        for i in range(0, x.size, CHUNK):
            chunk = np.zeros(CHUNK, dt)
            chunk[:x.size - i] = x[i:i + CHUNK]
            out.append(cg.run({"x": chunk})[name][:x.size - i])
        return np.concatenate(out)

    return run


def every_binade(dt, n, rng):
    """n values spread over all binades, both signs, denormals included."""
    if dt == np.float32:
        return rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = rng.integers(0, 2 ** 64, n, dtype=np.uint64)
    x = bits.view(np.float64)
    return x[np.isfinite(x)]


def thresholds(op, dt):
    """Values around where `op` overflows, underflows or saturates, a few ulps either side."""
    fi = np.finfo(dt)
    tiny, big = float(fi.smallest_subnormal), float(fi.max)
    if op in ("exp", "sigmoid"):
        points = [math.log(big), math.log(tiny), math.log(float(fi.smallest_normal)), math.log(tiny) - math.log(2)]
        points += [-p for p in points]
    elif op in ("log", "log1p"):
        points = [tiny, float(fi.smallest_normal), big, 1.0, -1.0 + float(fi.eps), 1e-30]
    elif op == "tanh":
        points = [9.0, 9.01, 10.0, 18.7, 19.06, 20.0, 1e-4, 1e-10]
    else:
        points = [1.25, 1.5, 3.9, 4.0, 5.9, 6.0, 1e-10]
    with np.errstate(over="ignore"):  # stepping past the largest float gives inf: a useful input too
        return np.array(_around(points, dt), dt)


def _around(points, dt):
    """Each point and its 4 neighbours either side, with both signs."""
    out = []
    for p in points:
        v = np.array(p, dt)
        for _ in range(4):
            out += [v, -v]
            v = np.nextafter(v, dt(np.inf))
        v = np.array(p, dt)
        for _ in range(4):
            v = np.nextafter(v, dt(-np.inf))
            out += [v, -v]
    return out


def ulp_errors(got, ref, dt):
    """|got - ref| in ulps of dt at the reference (denormal spacing below the normal range)."""
    near = ref.astype(dt)
    spacing = np.spacing(np.abs(near)).astype(ref.dtype)
    return np.abs(got.astype(ref.dtype) - ref) / spacing


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", OPS)
def test_accuracy_over_the_whole_range(op, dt):
    rng = np.random.default_rng(OPS.index(op))
    x = np.concatenate([
        every_binade(dt, 30000, rng),
        (rng.random(30000) * 2 - 1).astype(dt) * dt(RANGE[op]),
        (rng.random(4000) * 2 - 1).astype(dt),  # log1p near -1..1, log near 0..1 (negatives: NaN)
        thresholds(op, dt),
    ])
    with np.errstate(all="ignore"):
        got, ref = compiled(op, dt)(x), reference(op, x)
        want = ref.astype(dt)
    # the result is finite exactly where the reference rounds to a finite value, NaN where it is NaN
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{op}: NaN where NumPy has none")
    np.testing.assert_array_equal(got[~np.isfinite(want)], want[~np.isfinite(want)], err_msg=f"{op}: inf")
    fin = np.isfinite(want)
    assert np.isfinite(got[fin]).all(), f"{op}: inf or NaN for finite results at {x[fin][~np.isfinite(got[fin])][:5]}"
    err = ulp_errors(got[fin], ref[fin], dt)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[dt][op], (
        f"{op}({x[fin][worst]!r}) = {got[fin][worst]!r}, reference {ref[fin][worst]!r}: {err[worst]:.2f} ulp")


def specials(dt):
    fi = np.finfo(dt)
    inf, nan, tiny = np.inf, np.nan, fi.smallest_subnormal
    big = {np.float32: (88.8, -104.0, 9.1), np.float64: (709.8, -745.2, 19.1)}[dt]
    return {  # exact results, as the C library and NumPy define them
        "exp": [(-inf, 0.0), (inf, inf), (nan, nan), (0.0, 1.0), (-0.0, 1.0), (big[0], inf), (big[1], 0.0),
                (1e-30, 1.0)],
        "log": [(0.0, -inf), (-0.0, -inf), (-tiny, nan), (-1.0, nan), (-inf, nan), (inf, inf), (nan, nan),
                (1.0, 0.0)],
        "log1p": [(-1.0, -inf), (-1.5, nan), (-inf, nan), (inf, inf), (nan, nan), (0.0, 0.0), (-0.0, -0.0),
                  (tiny, tiny), (-tiny, -tiny), (1e-30, 1e-30)],
        "tanh": [(inf, 1.0), (-inf, -1.0), (nan, nan), (0.0, 0.0), (-0.0, -0.0), (tiny, tiny), (-tiny, -tiny),
                 (1e-30, 1e-30), (-1e-30, -1e-30), (big[2], 1.0), (-big[2], -1.0), (1e30, 1.0)],
        "sigmoid": [(inf, 1.0), (-inf, 0.0), (nan, nan), (0.0, 0.5), (-0.0, 0.5), (big[1] * 1.01, 0.0)],
        "erf": [(inf, 1.0), (-inf, -1.0), (nan, nan), (0.0, 0.0), (-0.0, -0.0), (7.0, 1.0), (-7.0, -1.0),
                (1e30, 1.0)],
    }


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", OPS)
def test_special_values_exact(op, dt):
    x, want = (np.array(c, dt) for c in zip(*specials(dt)[op]))
    got = compiled(op, dt)(x)
    for xi, g, w in zip(x, got, want):
        same = (np.isnan(g) and np.isnan(w)) or (g == w and np.signbit(g) == np.signbit(w))
        assert same, f"{op}({xi!r}) = {g!r}, expected {w!r}"


def test_denormal_results_and_arguments():
    """exp rounds once into the denormal range; log reads denormal arguments."""
    for dt in (np.float32, np.float64):
        fi = np.finfo(dt)
        x = np.array([math.log(float(fi.smallest_subnormal)) + 0.1, math.log(float(fi.smallest_normal)) - 1], dt)
        got = compiled("exp", dt)(x)
        assert (got > 0).all() and (got < fi.smallest_normal).all()
        assert (ulp_errors(got, reference("exp", x), dt) <= 1).all()
        d = np.array([fi.smallest_subnormal, fi.smallest_subnormal * 3, fi.smallest_normal / 2], dt)
        assert (ulp_errors(compiled("log", dt)(d), reference("log", d), dt) <= 1).all()


@pytest.mark.parametrize("op", OPS)
def test_vectorized_without_calls(op):
    """The optimized kernel works on vectors and calls nothing but LLVM intrinsics."""
    for dt in (np.float32, np.float64):
        text = compiled_graph(op, dt)[0].llvm_ir(optimized=True)
        kernel = text[text.index(f"@{op}."):]
        kernel = kernel[:kernel.index("\n}\n")]
        elem = "float" if dt == np.float32 else "double"
        assert re.search(rf"<\d+ x {elem}>", kernel), f"{op} ({elem}) did not vectorize"
        calls = re.findall(r"call [^@]*@([\w.\"]+)", kernel)
        assert all(c.startswith("llvm.") for c in calls), f"{op} ({elem}) calls {calls}"
