"""Random graphs of registry ops, compiled (gradc.codegen) against the reference interpreter.

Hypothesis builds each graph op by op: elementwise unary and binary ops
(partners of random broadcastable shapes, size-1 dims, odd sizes, literals),
reductions over random axes, argmax, matmul with broadcast batch dims,
transpose and reshape. Each graph is compiled once (tens of milliseconds),
so example counts stay small.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import gradc
from gradc import prims as P
from gradc.codegen import compile_graph
from gradc.ir import Graph, interpret
from gradc.ir.builder import GraphBuilder, symbolic_tensor

SIZES = [1, 2, 3, 5, 17]
UNARY = ["neg", "exp", "log", "log1p", "sqrt", "abs", "sign", "sin", "cos", "tanh", "sigmoid", "erf"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"]
# float32 is looser than for single ops: a chain of up to 7 ops magnifies the last-ulp
# differences of FMA contraction (exp(pow(x, a @ b)) near 1e37 differed by 2.3e-5)
TOL = {gradc.float32: (1e-4, 1e-5), gradc.float64: (1e-10, 1e-12)}


class RandomGraph:
    """Grows a graph from hypothesis draws; values are symbolic tensors."""

    def __init__(self, data, dtype):
        self.data, self.dtype = data, dtype
        self.g = Graph("random")
        self.values = []

    def shape(self, min_dims=0, max_dims=3):
        return tuple(self.data.draw(st.lists(st.sampled_from(SIZES), min_size=min_dims, max_size=max_dims)))

    def new_input(self, shape):
        v = self.g.add_input(f"x{len(self.g.inputs)}", self.dtype, shape, "input")
        return symbolic_tensor(v)

    def pick(self, cond=lambda t: True):
        options = [t for t in self.values if cond(t)]
        return self.data.draw(st.sampled_from(options)) if options else None

    def partner(self, x):
        """A value or new input whose shape broadcasts with x's (dims dropped or set to 1), or a literal."""
        kind = self.data.draw(st.sampled_from(["value", "input", "input", "literal"]))
        if kind == "value":
            y = self.pick(lambda t: _broadcastable(t.shape, x.shape))
            if y is not None:
                return y
        if kind == "literal":
            return self.data.draw(st.sampled_from([0.5, 2.0, -1.5, 3]))
        shape = list(x.shape)[self.data.draw(st.integers(0, x.ndim)):]
        shape = [1 if self.data.draw(st.booleans()) else s for s in shape]
        if self.data.draw(st.booleans()):  # let the partner broadcast x too
            shape = [self.data.draw(st.sampled_from(SIZES))] * (x.ndim == 0) + shape
        return self.new_input(tuple(shape))

    def step(self):
        op = self.data.draw(st.sampled_from(["unary", "binary", "binary", "reduce", "argmax", "matmul",
                                             "transpose", "reshape", "where"]))
        x = self.pick()
        if op == "unary":
            return getattr(P, self.data.draw(st.sampled_from(UNARY)))(x)
        if op == "binary":
            y = self.partner(x)
            name = self.data.draw(st.sampled_from(BINARY))
            a, b = (x, y) if self.data.draw(st.booleans()) else (y, x)
            return getattr(P, name)(a, b)
        if op == "where":
            y = self.partner(x)
            return P.where(P.gt(x, 0.0), x, y)
        if op in ("reduce", "argmax"):
            if x.ndim == 0:
                return P.neg(x)
            if op == "argmax":
                i = P.argmax(x, axis=self.data.draw(st.integers(0, x.ndim - 1)))
                return P.convert(i, dtype=self.dtype)
            axes = tuple(sorted(self.data.draw(st.sets(st.integers(0, x.ndim - 1)))))
            name = self.data.draw(st.sampled_from(["reduce_sum", "reduce_max", "reduce_prod"]))
            return getattr(P, name)(P.tanh(x) if name == "reduce_prod" else x, axes=axes)
        if op == "matmul":
            a = self.pick(lambda t: t.ndim >= 2)
            if a is None:
                a = self.new_input(self.shape(2, 3))
            n = self.data.draw(st.sampled_from(SIZES + [33]))
            batch = list(a.shape[:-2])[self.data.draw(st.integers(0, a.ndim - 2)):]
            batch = [1 if self.data.draw(st.booleans()) else s for s in batch]
            b = self.new_input(tuple(batch) + (a.shape[-1], n))
            return P.matmul(a, b) if self.data.draw(st.booleans()) else P.matmul(P.transpose(b, perm=_swap(b.ndim)),
                                                                                 P.transpose(a, perm=_swap(a.ndim)))
        if op == "transpose":
            perm = tuple(self.data.draw(st.permutations(range(x.ndim))))
            return P.transpose(x, perm=perm)
        # reshape: regroup the size into up to three dims, with size-1 dims thrown in
        size = math.prod(x.shape)
        factors = _prime_factors(size)
        dims = [1] * self.data.draw(st.integers(1, 3))
        for f in factors:
            dims[self.data.draw(st.integers(0, len(dims) - 1))] *= f
        return P.reshape(x, shape=tuple(dims))

    def build(self, n_ops):
        with GraphBuilder(self.g):
            for _ in range(self.data.draw(st.integers(1, 2))):
                self.values.append(self.new_input(self.shape(0, 3)))
            for _ in range(n_ops):
                self.values.append(self.step())
        outs = self.values[-self.data.draw(st.integers(1, 3)):]
        self.g.outputs = list(dict.fromkeys(v._data for v in outs if v._data.producer is not None))
        if not self.g.outputs:
            self.g.outputs = [self.values[-1]._data]
        return self.g.verify()


def _broadcastable(a, b):
    return all(x == y or x == 1 or y == 1 for x, y in zip(a[::-1], b[::-1]))


def _swap(n):
    return tuple(range(n - 2)) + (n - 1, n - 2)


def _prime_factors(n):
    out, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def _compare(g, seed):
    rng = np.random.default_rng(seed)
    compare_compiled(g, {v.name: rng.standard_normal(v.shape).astype(v.dtype.np) for v in g.inputs})


def compare_compiled(g, feed, reference=None):
    """`g` compiled gives the interpreter's results on `reference` (default: `g`) to TOL."""
    want = interpret(reference or g, feed)
    got = compile_graph(g).run(feed)
    for k, w in want.items():
        assert got[k].dtype == w.dtype and got[k].shape == w.shape, k
        rtol, atol = TOL[g.inputs[0].dtype]
        finite = np.abs(w[np.isfinite(w)])
        scale = max(1.0, float(np.median(finite)) if finite.size else 0.0)  # for sums that cancel
        np.testing.assert_allclose(got[k], w, rtol=rtol, atol=atol * scale, equal_nan=True,
                                   err_msg=f"%{k} in\n{g}")


@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from([gradc.float32, gradc.float64]), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_random_graphs_match_interpreter(data, dtype, n_ops, seed):
    g = RandomGraph(data, dtype).build(n_ops)
    with np.errstate(all="ignore"):
        _compare(g, seed)
