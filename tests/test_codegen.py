"""Compiled graphs (gradc.codegen) against the reference interpreter.

Every registry primitive is lowered and compared with `interpret` on the same
inputs, in float32 and float64 (and the integer/bool dtypes ops produce),
with NaN/inf among the inputs where the op's semantics define them. Also:
gradient graphs of small MLPs, in-place updates through `bind`/`call`, the
safety checks before the native call, and that freeing compiled graphs
releases their memory.
"""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import gradc
from gradc import prims as P
from gradc.codegen import CompiledGraph, compile_graph
from gradc.codegen.jit import optimize
from gradc.codegen.lower import lower_graph
from gradc.ir import Graph, interpret
from gradc.ir.builder import GraphBuilder, symbolic_tensor
from gradc.passes.autodiff import grad
from gradc.prims import Arg, Slice

F32, F64, I64, I32, BOOL = gradc.float32, gradc.float64, gradc.int64, gradc.int32, gradc.bool
FLOATS = [F32, F64]
TOL = {np.dtype(np.float32): (2e-5, 2e-6), np.dtype(np.float64): (1e-10, 1e-12)}


def make(inputs, fn, name="f"):
    """A graph with inputs `(name, dtype, shape[, kind])` whose outputs are `fn(*symbolic inputs)`."""
    g = Graph(name)
    vals = [g.add_input(i[0], i[1], i[2], i[3] if len(i) > 3 else "input") for i in inputs]
    with GraphBuilder(g):
        out = fn(*[symbolic_tensor(v) for v in vals])
    g.outputs = [o._data for o in (out if isinstance(out, (tuple, list)) else [out])]
    return g


def sample(rng, d, shape, special=False):
    if d is BOOL:
        return rng.random(shape) < 0.5
    if not d.is_floating_point:
        return rng.integers(-5, 6, shape).astype(d.np)
    a = rng.standard_normal(shape).astype(d.np)
    if special and a.size >= 6:
        a.flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 30.0]
    return a


def assert_close(got, want, what):
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} vs {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    if got.dtype.kind == "f":
        rtol, atol = TOL[got.dtype]
        finite = np.abs(want[np.isfinite(want)])
        atol *= max(1.0, float(np.median(finite)) if finite.size else 0.0)  # for sums that cancel
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def check(g, feed) -> None:
    """Compile `g`, run it on `feed`, compare every result with the interpreter's."""
    cg = compile_graph(g)
    want = interpret(g, feed)
    got = cg.run(feed)
    assert list(got) == list(want)
    producers = {v.name: v.producer for v in g.outputs}
    for k in want:
        p = producers.get(k)
        assert_close(got[k], want[k], f"%{k}" + (f" = {p.op}" if p is not None else ""))


def feed_for(g, rng, special=False):
    return {v.name: sample(rng, v.dtype, v.shape, special) for v in g.inputs}


# ---------------------------------------------------------------- elementwise
UNARY = ["neg", "exp", "log", "log1p", "sqrt", "abs", "sign", "sin", "cos", "tanh", "sigmoid", "erf"]


@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
def test_unary_float(d):
    g = make([("x", d, (3, 17))], lambda x: [getattr(P, op)(x) for op in UNARY])
    x = sample(np.random.default_rng(0), d, (3, 17), special=True)
    x[1] = np.linspace(-40, 40, 17)  # sigmoid/tanh/exp saturation, large erf arguments
    check(g, {"x": x})


@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
def test_binary_broadcast_and_literals(d):
    shapes = [((3, 1, 5), (4, 5)), ((1,), (17,)), ((), (2, 3)), ((33,), (33,)), ((2, 1), (1, 3))]

    def fn(*xs):
        outs = []
        for (a, b) in zip(xs[::2], xs[1::2]):
            for op in ("add", "sub", "mul", "div", "maximum", "minimum"):
                outs.append(getattr(P, op)(a, b))
            outs.append(P.pow(P.abs(a), b))
        a = xs[0]
        outs += [P.add(a, 2.5), P.sub(1.0, a), P.mul(a, 3), P.div(1.0, a), P.pow(a, 2.0), P.pow(2.0, a),
                 P.maximum(a, 0.0), P.minimum(-1.5, a)]
        return outs

    inputs = [(f"x{i}{j}", d, s) for i, pair in enumerate(shapes) for j, s in enumerate(pair)]
    g = make(inputs, fn)
    check(g, feed_for(g, np.random.default_rng(1), special=True))


@pytest.mark.parametrize("d", FLOATS + [I64], ids=lambda d: d.name)
def test_compare_logical_where(d):
    def fn(a, b, c):
        outs = [getattr(P, op)(a, b) for op in ("eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or")]
        outs += [P.eq(a, 0), P.lt(1, b), P.logical_not(P.gt(a, b)), P.logical_not(c)]
        outs += [P.where(c, a, b), P.where(P.gt(a, 0), a, 0), P.where(c, 1, b), P.where(P.ne(a, a), 7, b)]
        return outs

    g = make([("a", d, (4, 5)), ("b", d, (5,)), ("c", BOOL, (4, 1))], fn)
    rng = np.random.default_rng(2)
    feed = feed_for(g, rng, special=True)
    feed["b"][:2] = feed["a"][0, :2]  # some equal pairs
    check(g, feed)


@pytest.mark.parametrize("d", [I64, I32], ids=lambda d: d.name)
def test_integer_ops(d):
    def fn(a, b):
        outs = [getattr(P, op)(a, b) for op in ("add", "sub", "mul", "maximum", "minimum")]
        outs += [P.neg(a), P.abs(a), P.sign(a), P.pow(a, P.abs(b)), P.pow(a, 3), P.add(a, 7)]
        outs += [P.reduce_sum(a, axes=(0,)), P.reduce_max(a, axes=(1,)), P.reduce_prod(b, axes=(0, 1)),
                 P.argmax(a, axis=1), P.matmul(a, P.transpose(b, perm=(1, 0)))]
        return outs

    g = make([("a", d, (3, 5)), ("b", d, (1, 5))], fn)
    check(g, feed_for(g, np.random.default_rng(3)))


def test_bool_ops():
    def fn(a, b):
        return [P.logical_and(a, b), P.logical_or(a, b), P.logical_not(a), P.eq(a, b), P.lt(a, b),
                P.reduce_sum(a, axes=(1,)), P.reduce_max(a, axes=(0,)), P.argmax(a, axis=1),
                P.convert(a, dtype=F32), P.convert(a, dtype=I64), P.where(a, b, False),
                P.matmul(a, P.reshape(b, shape=(6, 1)))]

    g = make([("a", BOOL, (4, 6)), ("b", BOOL, (6,))], fn)
    check(g, feed_for(g, np.random.default_rng(4)))


def test_convert():
    def fn(x, y, i):
        return [P.convert(x, dtype=F64), P.convert(y, dtype=F32), P.convert(x, dtype=I64), P.convert(y, dtype=I32),
                P.convert(x, dtype=BOOL), P.convert(i, dtype=F32), P.convert(i, dtype=F64), P.convert(i, dtype=I32),
                P.convert(P.convert(i, dtype=I32), dtype=I64), P.convert(i, dtype=BOOL), P.convert(x, dtype=F32)]

    g = make([("x", F32, (2, 9)), ("y", F64, (9,)), ("i", I64, (9,))], fn)
    rng = np.random.default_rng(5)
    feed = feed_for(g, rng, special=True)
    feed["x"] *= 100
    feed["y"][:3] = [1e300, -1e300, np.nan]  # out of int range: NumPy gives INT_MIN
    with np.errstate(invalid="ignore"):
        check(g, feed)


# ---------------------------------------------------------------- reductions
@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
def test_reductions(d):
    axes_list = [(0,), (1,), (2,), (0, 2), (1, 2), (0, 1, 2), ()]

    def fn(x, y, z):
        outs = []
        for axes in axes_list:
            outs += [P.reduce_sum(x, axes=axes), P.reduce_max(x, axes=axes), P.reduce_prod(P.div(x, 2.0), axes=axes)]
        outs += [P.argmax(x, axis=a) for a in range(3)]
        outs += [P.reduce_sum(y, axes=(0,)), P.reduce_max(y, axes=(0, 2)), P.reduce_sum(z, axes=(0, 1)),
                 P.reduce_max(z, axes=(1,)), P.argmax(z, axis=0), P.argmax(P.reduce_sum(z, axes=(0, 1)), axis=0)]
        return outs

    g = make([("x", d, (3, 4, 5)), ("y", d, (1, 17, 1)), ("z", d, (33, 130))], fn)
    rng = np.random.default_rng(6)
    feed = feed_for(g, rng)
    feed["x"][1, 2, 3] = feed["x"][1, 2, 1]  # a tie: argmax takes the first
    feed["z"][5, 7] = np.nan  # max propagates NaN, argmax finds the first NaN
    feed["z"][9, 7] = np.nan
    check(g, feed)


# ---------------------------------------------------------------- matmul
@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
def test_matmul(d):
    pairs = [((3, 4), (4, 5)), ((1, 1), (1, 1)), ((17, 33), (33, 3)), ((2, 3, 4), (4, 5)), ((1, 3, 4), (2, 4, 5)),
             ((2, 1, 3, 4), (3, 4, 2)), ((3, 0), (0, 2)), ((5, 65), (65, 40)), ((13, 300), (300, 37)),
             ((1, 600), (600, 1)), ((1, 600), (600, 2))]  # tails of every tile dimension, several k blocks
    # ((1, 1), (1, 1)) and ((1, 600), (600, 1)) are loops (a product, a dot product), not GEMMs
    inputs = [(f"m{i}{j}", d, s) for i, p in enumerate(pairs) for j, s in enumerate(p)]
    g = make(inputs, lambda *xs: [P.matmul(a, b) for a, b in zip(xs[::2], xs[1::2])])
    check(g, feed_for(g, np.random.default_rng(7)))


@pytest.mark.parametrize("bits", [128, 512])
def test_matmul_other_tile_shapes(bits, monkeypatch):
    """The GEMM tiles chosen for other vector widths (SSE, AVX-512) are correct here too."""
    from gradc.codegen import gemm

    monkeypatch.setattr(gemm, "vector_bits", lambda: bits)
    pairs = [((13, 300), (300, 37)), ((2, 9, 5), (5, 50)), ((1, 1), (1, 3))]
    inputs = [(f"m{i}{j}", d, s) for d in FLOATS for i, p in enumerate(pairs) for j, s in enumerate(p)]
    inputs = [(f"{n}{d.short}", d, s) for n, d, s in inputs]
    g = make(inputs, lambda *xs: [P.matmul(a, b) for a, b in zip(xs[::2], xs[1::2])])
    check(g, feed_for(g, np.random.default_rng(17)))


# ---------------------------------------------------------------- shape ops
@pytest.mark.parametrize("d", FLOATS + [BOOL], ids=lambda d: d.name)
def test_shape_ops(d):
    def fn(x, y, s, z):
        return [P.transpose(z, perm=p) for p in [(0, 2, 1), (2, 0, 1), (2, 1, 0), (1, 0, 2)]] + [
                P.reshape(x, shape=(4, 15)), P.reshape(x, shape=(60,)), P.reshape(s, shape=(1, 1)),
                P.transpose(x, perm=(2, 0, 1)), P.transpose(x, perm=(1, 0, 2)), P.transpose(y, perm=(1, 0)),
                P.broadcast(y, shape=(2, 3, 4)), P.broadcast(s, shape=(3, 2)),
                P.broadcast(P.reshape(y, shape=(3, 1, 4)), shape=(3, 5, 4)),
                P.concat(x, x, axis=0), P.concat(y, P.reshape(x, shape=(3, 20)), y, axis=1),
                P.concat(P.reshape(s, shape=(1,)), P.reshape(y, shape=(12,)), axis=0)]

    g = make([("x", d, (3, 4, 5)), ("y", d, (3, 4)), ("s", d, ()), ("z", d, (2, 17, 33))], fn)  # z: blocked
    check(g, feed_for(g, np.random.default_rng(8)))


def test_const():
    c = np.arange(12, dtype=np.float32).reshape(3, 4)

    def fn(x):
        return [P.add(x, gradc.tensor(c)), P.mul(x, gradc.tensor(np.float32(2.5))),
                P.gather(x, gradc.tensor(np.array([[3], [0], [-1]])), axis=1)]

    g = make([("x", F32, (3, 4))], fn)
    assert [n.op for n in g.nodes].count("const") == 3
    g.outputs.append(g.nodes[0].out)  # a constant as a result
    check(g, feed_for(g, np.random.default_rng(9)))


# ---------------------------------------------------------------- indexing
SPECS = [  # (x shape, spec, index tensor shapes)
    ((5, 6), (Slice(1, 4, 1), Slice(0, 6, 2)), []),
    ((5, 6), (2, Slice(1, 6, 1)), []),
    ((5, 6), (-1, None, Slice(0, 6, 3)), []),
    ((5, 6), (Arg(0), Slice(0, 6, 1)), [(4,)]),
    ((5, 6), (Slice(0, 5, 2), Arg(0)), [(2, 3)]),
    ((4, 5, 6), (Arg(0), Slice(1, 5, 1), Arg(1)), [(3,), (2, 1)]),  # separated: index dims first
    ((4, 5, 6), (Slice(0, 4, 1), Arg(0), Arg(1)), [(3, 1), (2,)]),  # adjacent: index dims in place
    ((4, 5, 6), (Arg(0), Slice(0, 5, 1), -2), [(7,)]),  # int + tensor separated
    ((4, 5, 6), (None, Slice(0, 4, 1), 1, Arg(0)), [(3,)]),  # int + tensor adjacent
    ((4, 5, 6), (Arg(0), None, Slice(2, 5, 2), 0), [(2, 2)]),
    ((7,), (Arg(0),), [(7,)]),
]


@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
def test_index_and_scatter_index(d):
    rng = np.random.default_rng(10)
    inputs, feeds, outs = [], {}, []
    for i, (shape, spec, ishapes) in enumerate(SPECS):
        inputs.append((f"x{i}", d, shape))
        feeds[f"x{i}"] = sample(rng, d, shape)
        axes = [a for a, e in enumerate(e for e in spec if e is not None)]
        sizes = [shape[a] for a, e in zip(axes, [e for e in spec if e is not None]) if isinstance(e, Arg)]
        for k, (s, n) in enumerate(zip(ishapes, sizes)):
            dt = I64 if k == 0 else I32
            inputs.append((f"i{i}_{k}", dt, s))
            feeds[f"i{i}_{k}"] = rng.integers(-n, n, s).astype(dt.np)  # negatives wrap, repeats accumulate

    def fn(*vals):
        it = iter(vals)
        res = []
        for shape, spec, ishapes in SPECS:
            x = next(it)
            idx = [next(it) for _ in ishapes]
            y = P.index(x, *idx, spec=spec)
            res += [y, P.scatter_index(P.mul(y, 2.0), *idx, spec=spec, shape=shape)]
        return res

    g = make(inputs, fn)
    check(g, feeds)


@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
def test_gather_scatter_add(d):
    def fn(x, i0, i1, s):
        return [P.gather(x, i0, axis=0), P.gather(x, i1, axis=1), P.scatter_add(P.gather(x, i1, axis=1), i1, axis=1,
                shape=(4, 7)), P.scatter_add(P.gather(x, i0, axis=0), i0, axis=0, shape=(4, 7)),
                P.gather(s, P.reshape(P.argmax(s, axis=0), shape=()), axis=0)]

    g = make([("x", d, (4, 7)), ("i0", I64, (5, 3)), ("i1", I32, (3, 9)), ("s", d, ())], fn)
    rng = np.random.default_rng(11)
    feed = feed_for(g, rng)
    feed["i0"] = rng.integers(-4, 4, (5, 3))
    feed["i1"] = rng.integers(-7, 7, (3, 9)).astype(np.int32)
    check(g, feed)


# ---------------------------------------------------------------- gradient graphs
def mlp_loss(d, sizes, batch):
    """Graph of mean cross-entropy (log_softmax + gather) of a tanh/relu MLP."""
    inputs = [("x", d, (batch, sizes[0])), ("y", I64, (batch,))]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inputs += [(f"w{i}", d, (b, a), "param"), (f"b{i}", d, (b,), "param")]

    def fn(x, y, *wb):
        h = x
        for i in range(0, len(wb), 2):
            h = h @ wb[i].t() + wb[i + 1]
            if i + 2 < len(wb):
                h = gradc.relu(h) if i % 4 == 0 else gradc.tanh(h)
        logp = gradc.log_softmax(h, 1)
        return -gradc.gather(logp, 1, y.reshape(batch, 1)).mean()

    return make(inputs, fn, name="mlp")


@pytest.mark.parametrize("d", FLOATS, ids=lambda d: d.name)
@pytest.mark.parametrize("sizes,batch", [((5, 17, 3), 1), ((33, 17, 9, 4), 13)])
def test_mlp_gradient(d, sizes, batch):
    loss = mlp_loss(d, sizes, batch)
    g = grad(loss, [v.name for v in loss.inputs if v.kind == "param"] + ["x"])
    rng = np.random.default_rng(12)
    feed = feed_for(g, rng)
    feed["y"] = rng.integers(0, sizes[-1], batch)
    check(g, feed)


# ---------------------------------------------------------------- bind / call and updates
def sgd_graph(d=F64):
    """One SGD step of a linear least-squares model: w <- w - lr * dw, plus a momentum-like state."""
    loss = make([("x", d, (8, 3)), ("t", d, (8, 2)), ("w", d, (3, 2), "param"), ("lr", d, (), "scalar")],
                lambda x, t, w, lr: ((x @ w - t) ** 2).mean(), name="sgd")
    g = grad(loss, ["w"])
    w, lr = g.input("w"), g.input("lr")
    m = g.add_input("m", d, (3, 2), "state")
    with GraphBuilder(g):
        dw = symbolic_tensor(g.outputs[1])
        m_new = symbolic_tensor(m) * 0.9 + dw
        w_new = symbolic_tensor(w) - symbolic_tensor(lr) * m_new
    g.outputs = g.outputs[:1]
    g.updates = [(w, w_new._data), (m, m_new._data)]
    return g.verify()


def test_bind_call_updates_in_place():
    g = sgd_graph()
    cg = compile_graph(g)
    rng = np.random.default_rng(13)
    x, t = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    w, m = rng.standard_normal((3, 2)), np.zeros((3, 2))
    ref = {"w": w.copy(), "m": m.copy()}
    cg.bind({"x": x, "t": t, "w": w, "m": m, "lr": np.array(0.1)})
    w_addr = w.ctypes.data
    for _ in range(3):
        (loss,) = cg.call()
        want = interpret(g, {"x": x, "t": t, "lr": 0.1, **ref})
        ref = {"w": want["w"], "m": want["m"]}
        assert_close(np.array(loss), want[g.outputs[0].name], "loss")
        assert_close(w, ref["w"], "w updated in place")
        assert_close(m, ref["m"], "m updated in place")
    assert w.ctypes.data == w_addr
    assert not loss.flags.writeable


def test_run_does_not_touch_caller_arrays():
    g = sgd_graph()
    cg = compile_graph(g)
    rng = np.random.default_rng(14)
    feed = {"x": rng.standard_normal((8, 3)), "t": rng.standard_normal((8, 2)), "w": rng.standard_normal((3, 2)),
            "m": np.ones((3, 2)), "lr": 0.5}
    before = {k: np.array(v, copy=True) for k, v in feed.items()}
    got, want = cg.run(feed), interpret(g, feed)
    for k in want:
        assert_close(got[k], want[k], k)
    for k in feed:
        np.testing.assert_array_equal(feed[k], before[k])


def test_updates_read_old_values_and_inputs_as_results():
    """Swapped updates, an update from an input, and returning an updated param all see pre-update values."""
    g = Graph("swap")
    a, b = g.add_input("a", F32, (3,), "param"), g.add_input("b", F32, (3,), "param")
    c = g.add_input("c", F32, (3,), "state")
    x = g.add_input("x", F32, (3,), "input")
    with GraphBuilder(g):
        s = symbolic_tensor(a) + symbolic_tensor(b)
    g.outputs = [a, s._data, x]
    g.updates = [(a, b), (b, a), (c, x)]
    g.verify()
    cg = compile_graph(g)
    arrs = {"a": np.array([1, 2, 3], np.float32), "b": np.array([4, 5, 6], np.float32),
            "c": np.zeros(3, np.float32), "x": np.array([7, 8, 9], np.float32)}
    want = interpret(g, arrs)
    got = cg.run(arrs)
    for k in want:
        assert_close(got[k], want[k], k)
    no_c = {k: v for k, v in arrs.items() if k != "c"}  # state that is only written may be omitted
    np.testing.assert_array_equal(cg.run(no_c)["c"], interpret(g, no_c)["c"])
    cg.bind(arrs)
    out_a, out_s, out_x = cg.call()
    np.testing.assert_array_equal(out_a, [1, 2, 3])
    np.testing.assert_array_equal(arrs["a"], [4, 5, 6])
    np.testing.assert_array_equal(arrs["b"], [1, 2, 3])
    np.testing.assert_array_equal(arrs["c"], [7, 8, 9])


def test_noncontiguous_inputs_are_copied_params_rejected():
    g = make([("x", F32, (4, 3)), ("w", F32, (3, 5), "param")], lambda x, w: x @ w)
    cg = compile_graph(g)
    rng = np.random.default_rng(15)
    xt = rng.standard_normal((3, 4)).astype(np.float32).T  # a transposed view
    w = rng.standard_normal((3, 10)).astype(np.float32)[:, ::2]
    got = cg.run({"x": xt, "w": w})
    assert_close(got[g.outputs[0].name], interpret(g, {"x": xt, "w": w})[g.outputs[0].name], "matmul")
    with pytest.raises(ValueError, match="C-contiguous"):
        cg.bind({"w": w})
    with pytest.raises(TypeError, match="dtype"):
        cg.bind({"w": np.zeros((3, 5))})
    with pytest.raises(ValueError, match=r"expected shape \[4, 3\], got \[3, 4\]"):
        cg.run({"x": xt.T, "w": np.ascontiguousarray(w)})
    with pytest.raises(KeyError, match="missing input %w"):
        cg.run({"x": xt})
    with pytest.raises(KeyError, match="has no input %z"):
        cg.bind({"z": xt})
    cg.bind({"x": xt})
    with pytest.raises(RuntimeError, match="missing %w"):
        cg.call()
    cg.bind({"w": np.ascontiguousarray(w)})
    np.testing.assert_allclose(cg.call()[0], xt @ w, rtol=1e-5)
    shared = np.zeros((3, 5), np.float32)
    g2 = make([("p", F32, (3, 5), "param"), ("q", F32, (3, 5), "param")], lambda p, q: p + q)
    g2.updates = [(g2.input("p"), g2.outputs[0])]
    with pytest.raises(ValueError, match="overlaps"):
        compile_graph(g2).bind({"p": shared, "q": shared})


def test_call_needs_every_read_input_bound():
    g = make([("x", F32, (2,)), ("unused", F32, (2,)), ("w", F32, (2,), "param")], lambda x, u, w: x + w)
    cg = compile_graph(g)
    cg.bind({"x": np.ones(2, np.float32), "unused": np.ones(2, np.float32)})
    with pytest.raises(RuntimeError, match="missing %w"):
        cg.call()
    cg.bind({"w": np.full(2, 2.0, np.float32)})
    np.testing.assert_array_equal(cg.call()[0], [3.0, 3.0])
    assert list(cg.run({"x": np.ones(2), "w": np.ones(2)})) == [g.outputs[0].name]  # unused may be omitted


def test_index_out_of_range_is_caught_before_any_update():
    g = make([("x", F32, (3, 4)), ("i", I64, (3, 1)), ("w", F32, (3, 4), "param")],
             lambda x, i, w: (gradc.gather(x * w, 1, i).sum(), gradc.gather(x, 1, i + 2).sum()))
    g.updates = [(g.input("w"), g.nodes[0].out)]
    cg = compile_graph(g)
    x, w = np.full((3, 4), 3.0, np.float32), np.full((3, 4), 2.0, np.float32)
    cg.bind({"x": x, "w": w, "i": np.array([[0], [1], [-4]])})
    cg.call()  # in range (negative indices wrap)
    np.testing.assert_array_equal(w, 6.0)
    cg.bind({"i": np.array([[0], [4], [1]])})
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 1 with size 4"):
        cg.call()  # an input: checked in Python before the call
    cg.bind({"i": np.array([[0], [2], [-3]])})
    with pytest.raises(IndexError, match="index out of range in %.* = gather"):
        cg.call()  # i + 2 is computed in the graph: checked by the kernel
    np.testing.assert_array_equal(w, 6.0)  # neither failed step wrote the param
    with pytest.raises(IndexError, match="out of bounds"):
        compile_graph(make([("x", F32, (3,))], lambda x: gradc.gather(x, 0, gradc.tensor(np.array([5])))))


def test_closed_graph_refuses_calls():
    g = make([("x", F64, (2,))], lambda x: x * 2.0)
    cg = compile_graph(g)
    np.testing.assert_array_equal(cg.run({"x": np.array([1.0, 2.0])})[g.outputs[0].name], [2.0, 4.0])
    cg.close()
    with pytest.raises(RuntimeError, match="closed"):
        cg.run({"x": np.array([1.0, 2.0])})


# ---------------------------------------------------------------- inspection, vectorization, memory
def test_llvm_ir_and_asm():
    g = make([("x", F32, (64, 33))], lambda x: gradc.relu(x) + 1.0, name="relu step")
    cg = compile_graph(g)
    ir = cg.llvm_ir()
    assert "define void @gradc_relu_step(ptr noalias nonnull %table)" in ir
    assert "align 64" in ir and "noalias" in ir
    opt = cg.llvm_ir(optimized=True)
    assert "x float>" in opt  # the elementwise loops were vectorized
    assert "gradc_relu_step:" in cg.asm()
    assert cg.compile_seconds > 0


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_growth(step, n=50, warmup=10):
    for i in range(warmup):  # allocator pools, caches, the target machine
        step(i)
    gc.collect()
    before = _rss_bytes()
    for i in range(n):
        step(i)
    gc.collect()
    return _rss_bytes() - before


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_compiling_and_freeing_does_not_leak():
    # measured in a fresh interpreter: RSS in a process that already ran the suite is noise
    import subprocess
    import sys

    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_codegen; test_codegen.leak_check()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def leak_check():
    x, w = np.ones((4, 8), np.float32), np.ones((8, 3), np.float32)

    def graph(i):
        return make([("x", F32, (4, 8)), ("w", F32, (8, 3), "param")], lambda x, w: gradc.tanh(x @ w + float(i)).sum())

    # what gradc owns (a JIT per graph, its code, the arena) is freed with the graph:
    # loading cached object code into 50 compiled graphs leaks nothing measurable
    g = graph(0)
    lowered = lower_graph(g)
    optimized, obj = optimize(lowered.text)

    def load(i):
        cg = CompiledGraph(g, lowered, optimized, obj)
        cg.run({"x": x, "w": w})
        del cg

    grown = _rss_growth(load)
    assert grown < 2**20, f"RSS grew by {grown / 2**20:.2f} MB over 50 loaded graphs"

    # the whole path (trace, lower, O3, link, run, free) adds nothing to what llvmlite 0.50's
    # pass pipeline itself keeps per run (~100 KB: its PassBuilder instrumentation is never freed)
    texts = [lower_graph(graph(i)).text for i in range(60)]
    baseline = _rss_growth(lambda i: optimize(texts[i]))

    def full(i):
        cg = compile_graph(graph(i))
        cg.run({"x": x, "w": w})
        cg.asm()
        del cg

    grown = _rss_growth(full)
    assert grown - baseline < 2 * 2**20, (
        f"RSS grew by {grown / 2**20:.1f} MB over 50 compiled graphs, {baseline / 2**20:.1f} MB of it llvmlite's")


# ---------------------------------------------------------------- the disk cache by graph text
def _cached_graph():
    """A matmul big enough for the thread pool (whose address the constants blob holds), a constant, a tail."""
    return make([("x", F32, (96, 300)), ("w", F32, (300, 131), "param")],
                lambda x, w: gradc.tanh(x @ w + 0.25).sum(dim=0), name="cached")


def test_graph_cache_skips_verification_and_lowering(tmp_path, monkeypatch):
    from gradc.codegen import lower

    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_CHECK_IR")
    g = _cached_graph()
    feeds = feed_for(g, np.random.default_rng(3))
    want = interpret(g, feeds)
    first = compile_graph(g)
    (entry,) = tmp_path.glob("*.graph")

    def fail(*args):
        raise AssertionError("lowered although the graph's lowering is cached")

    monkeypatch.setattr(gradc.codegen, "lower_graph", fail)
    monkeypatch.setattr(Graph, "verify", fail)
    again = compile_graph(_cached_graph())  # another graph object of the same text
    assert again.from_cache and again.llvm_ir() == first.llvm_ir()
    for name, a in again.run(feeds).items():
        np.testing.assert_allclose(a, want[name], rtol=2e-5, atol=2e-5)

    changed = make([("x", F32, (96, 300)), ("w", F32, (300, 131), "param")],
                   lambda x, w: gradc.tanh(x @ w + 0.5).sum(dim=0), name="cached")
    with pytest.raises(AssertionError, match="lowered although"):
        compile_graph(changed)  # another constant: another key
    monkeypatch.setenv("GRADC_NUM_THREADS", "1")
    with pytest.raises(AssertionError, match="lowered although"):
        compile_graph(_cached_graph())  # the lowering's settings are part of the key
    monkeypatch.delenv("GRADC_NUM_THREADS")

    monkeypatch.setattr(gradc.codegen, "lower_graph", lower.lower_graph)
    monkeypatch.setattr(Graph, "verify", lambda self: self)
    blob = entry.read_bytes()
    for damaged in (blob[: len(blob) // 2], blob[:-1] + bytes([blob[-1] ^ 1]), b""):
        entry.write_bytes(damaged)
        c = compile_graph(_cached_graph())  # lowered again (its object code is still cached)
        np.testing.assert_allclose(c.run(feeds)[g.outputs[0].name], want[g.outputs[0].name], rtol=2e-5, atol=2e-5)
        assert entry.read_bytes() == blob


def test_graph_cache_is_off_while_checking_ir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRADC_CHECK_IR", "1")  # the suite patches lowering settings (tile shapes, threads)
    compile_graph(_cached_graph())
    assert list(tmp_path.glob("*.obj")) and not list(tmp_path.glob("*.graph"))


CACHED_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
import gradc.codegen, test_codegen
g = test_codegen._cached_graph()
c = gradc.codegen.compile_graph(g)
x = np.linspace(-1, 1, 96 * 300, dtype=np.float32).reshape(96, 300)
w = np.cos(np.arange(300 * 131, dtype=np.float32)).reshape(300, 131) / 10
out = c.run({{"x": x, "w": w}})[g.outputs[0].name]
print(c.from_cache, repr(float(np.abs(out - np.tanh(x @ w + 0.25).sum(0)).max())))
"""


def test_graph_cache_in_another_process(tmp_path):
    """A lowering made by another process runs with this process's constants (the thread pool's address)."""
    import subprocess
    import sys

    script = tmp_path / "cached.py"
    script.write_text(CACHED_SCRIPT.format(tests=os.path.dirname(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "GRADC_CHECK_IR"}
    env.update(GRADC_CACHE_DIR=str(tmp_path / "cache"), GRADC_NUM_THREADS="2")
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    (cached1, err1), (cached2, err2) = (r.stdout.split() for r in runs)
    assert (cached1, cached2) == ("False", "True") and float(err1) < 1e-3 and float(err2) < 1e-3
    assert list((tmp_path / "cache").glob("*.graph"))


STEP_SCRIPT = """
import numpy as np, gradc, gradc.nn as nn, gradc.optim as optim
gradc.manual_seed(0)
model = nn.Sequential(nn.Linear(7, 33), nn.ReLU(), nn.Linear(33, 3))
criterion, optimizer = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.01)

@gradc.compile
def step(x, y):
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss

x, y = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32), np.array([0, 2, 1, 1, 0])
print(*[step(x, y).item() for _ in range(3)], step.versions, step._current.executable.from_cache)
"""


def test_a_training_step_from_the_caches_of_another_process(tmp_path):
    """Second run of a script: passes, lowering and LLVM all skipped, the same losses."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(STEP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "GRADC_CHECK_IR"}
    env.update(GRADC_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.path.dirname(os.path.dirname(gradc.__file__)))
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (r.stdout.split() for r in runs)
    assert first[:4] == second[:4] and first[3] == "2" and (first[4], second[4]) == ("False", "True")
    cache = tmp_path / "cache"
    # both versions' pipelines; native code only for the steady state (the first step is interpreted)
    assert len(list(cache.glob("*.passes"))) == 2 and len(list(cache.glob("*.graph"))) == 1


# ================================================================ short innermost dims
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 10, 15, 16, 17])
def test_short_rows_split_into_a_vector_loop_and_a_written_out_rest(dtype, n):
    """Rows shorter than loops.SHORT: a loop over the first multiple of CHUNK elements plus the
    rest written out, for elementwise ops with a broadcast column, reductions over the row and over
    the rows (a bias gradient), exp in a fused loop, and a transposed (strided) operand."""
    rng = np.random.default_rng(n)
    g = make([("x", dtype, (5, 1, n)), ("c", dtype, (5, 1, 1)), ("t", dtype, (n, 5))],
             lambda x, c, t: (x - c, (x * 2.0).exp().sum(2), (x + t.T.reshape(5, 1, n)).amax(2), (x * c).sum(0),
                              x.sum()))
    check(g, feed_for(g, rng, special=True))
    check(g, feed_for(g, rng))


def test_short_rows_vectorize_without_masked_tails():
    """A [128, 10] kernel (logits minus their row max) has no masked vector loads or stores,
    which LLVM gives a loop of 10 (they are slow on AVX2)."""
    g = make([("x", F32, (128, 10)), ("m", F32, (128, 1))], lambda x, m: x - m)
    cg = compile_graph(g)
    assert "llvm.masked" not in cg.llvm_ir(optimized=True)
    check(g, feed_for(g, np.random.default_rng(0)))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9, 130])
def test_column_sums_fold_rows_four_at_a_time_with_the_same_result(dtype, rows, monkeypatch):
    """Reductions over the rows (a bias gradient: alone, and fused with its producer and consumer;
    sum, max and prod) fold JAM rows per pass over the accumulator row, rows left over one by one:
    each accumulator takes its terms in the same order, so the result is bit for bit the one
    without jamming, and matches the interpreter."""
    from gradc.codegen import loops
    from gradc.passes import run_pipeline

    rng = np.random.default_rng(rows)
    g = make([("x", dtype, (rows, 13)), ("y", dtype, (rows, 1, 40))],
             lambda x, y: (x.sum(0), x.amax(0), (x * 0.5).prod(0), ((y * 2.0).exp().sum(0) + 1.0).log(),
                           y.sum((0, 1))))
    feed = feed_for(g, rng)
    for graph in (g, run_pipeline(g, "fuse").graph):
        jammed = compile_graph(graph).run(feed)
        monkeypatch.setattr(loops, "JAM", 10 ** 6)
        plain = compile_graph(graph).run(feed)
        monkeypatch.undo()
        for k in plain:
            np.testing.assert_array_equal(jammed[k], plain[k])
    check(g, feed)
