"""The reverse-mode pass against eager autograd (and PyTorch where installed).

Every differentiable primitive of the registry appears in at least one
program below (checked by `test_every_differentiable_primitive_is_covered`);
each program is recorded into IR, differentiated by the pass, run on the
reference interpreter and compared with eager gradc's `backward()` in float64
to 1e-10.
"""
import numpy as np
import pytest

import gradc
import gradc.prims as P
from gradc.ir import Graph, interpret, parse
from gradc.ir.builder import GraphBuilder, symbolic_tensor
from gradc.passes.autodiff import grad

rng = np.random.default_rng(0)


def pos(*shape):
    return rng.uniform(0.5, 2.0, shape)


def nrm(*shape):
    return rng.standard_normal(shape)


def ties(*shape):
    return rng.integers(-2, 3, shape).astype(np.float64)


IDX = np.array([2, 0, 2, 1])
# name -> (function of gradc tensors, input arrays)
PROGRAMS = {
    "neg": (lambda x: -x, [nrm(3, 4)]),
    "exp": (gradc.exp, [nrm(3, 4)]),
    "log": (gradc.log, [pos(3, 4)]),
    "log1p": (gradc.log1p, [pos(3, 4)]),
    "sqrt": (gradc.sqrt, [pos(3, 4)]),
    "rsqrt": (gradc.rsqrt, [pos(3, 4)]),
    "abs": (gradc.abs, [nrm(3, 4)]),
    "sign": (lambda x: gradc.sign(x) * x, [nrm(5)]),
    "sin_cos": (lambda x: gradc.sin(x) * gradc.cos(x), [nrm(3, 4)]),
    "tanh": (gradc.tanh, [nrm(3, 4)]),
    "sigmoid": (gradc.sigmoid, [nrm(3, 4)]),
    "erf": (gradc.erf, [nrm(3, 4)]),
    "add_broadcast": (lambda x, y: x + y, [nrm(3, 4), nrm(4)]),
    "sub_broadcast": (lambda x, y: x - y, [nrm(3, 1), nrm(1, 4)]),
    "mul_broadcast": (lambda x, y: x * y, [nrm(2, 3, 4), nrm(3, 1)]),
    "div_broadcast": (lambda x, y: x / y, [nrm(3, 4), pos(4)]),
    "pow": (lambda x, y: x ** y, [pos(3, 4), nrm(4)]),
    "pow_literal": (lambda x: x ** 3 + 2.0 ** x, [nrm(3, 4)]),
    "maximum_ties": (gradc.maximum, [ties(4, 5), ties(5)]),
    "minimum_ties": (gradc.minimum, [ties(4, 5), ties(4, 1)]),
    "relu_ties": (gradc.relu, [ties(6, 3)]),
    "clamp": (lambda x: gradc.clamp(x, -1.0, 1.0), [ties(6, 3)]),
    "where": (lambda x, y: gradc.where(x > y, x * 2, y), [nrm(3, 4), nrm(4)]),
    "convert": (lambda x: x.float().double() * x, [nrm(3, 4)]),
    "sum_axes": (lambda x: x.sum((0, 2)), [nrm(2, 3, 4)]),
    "mean_keepdim": (lambda x: x.mean(1, keepdim=True) * x, [nrm(2, 3, 4)]),
    "amax_ties": (lambda x: gradc.amax(x, 1), [ties(4, 5)]),
    "max_dim": (lambda x: x.max(1).values + x.min(0).values.sum(), [nrm(4, 5)]),
    "prod": (lambda x: x.prod(1), [pos(3, 4)]),
    "var_std": (lambda x: x.var(0) + x.std(1).sum(), [nrm(5, 4)]),
    "logsumexp": (lambda x: gradc.logsumexp(x, 1), [nrm(3, 5)]),
    "softmax": (lambda x: gradc.softmax(x, -1), [nrm(3, 5)]),
    "log_softmax": (lambda x: gradc.log_softmax(x, 0), [nrm(3, 5)]),
    "reshape_transpose": (lambda x: x.reshape(4, 6).T.permute(1, 0).reshape(2, 12), [nrm(2, 3, 4)]),
    "expand": (lambda x: x.expand(3, 4, 5) * 1.5, [nrm(4, 1)]),
    "cat_stack": (lambda x, y: gradc.cat([x, y, x], 1) + gradc.stack([y, y * 2], 1).sum(1).repeat(1, 2)[:, :9], [nrm(3, 2), nrm(3, 5)]),
    "split_chunk": (lambda x: x.split([1, 3], 1)[1] * x.chunk(2, 0)[0].sum(), [nrm(4, 4)]),
    "index_basic": (lambda x: x[1:, ::2, None, 1] * 2, [nrm(3, 4, 2)]),
    "index_array": (lambda x: x[gradc.tensor(IDX)] * x[:, [0, 0, 1]].sum(), [nrm(3, 3)]),
    "gather": (lambda x: gradc.gather(x, 1, gradc.tensor([[0, 2, 2], [1, 1, 0]])), [nrm(2, 3)]),
    "scatter_add": (lambda u: P.scatter_add(u, gradc.tensor([[0, 2, 2], [1, 1, 0]]), axis=1, shape=(2, 4)), [nrm(2, 3)]),
    "scatter_index": (lambda u: P.scatter_index(u, gradc.tensor(IDX), spec=(P.Arg(0), P.Slice(0, 2, 1)), shape=(3, 2)), [nrm(4, 2)]),
    "matmul_batched": (lambda a, b: a @ b, [nrm(2, 3, 4), nrm(4, 5)]),
    "matmul_vec": (lambda a, b: (a @ b) * (b @ b), [nrm(3, 4), nrm(4)]),
    "mlp_ce": (lambda x, w1, w2: -gradc.log_softmax(gradc.tanh(x @ w1) @ w2, 1).gather(1, gradc.tensor([[0], [2], [1]])).mean(),
               [nrm(3, 4), nrm(4, 5), nrm(5, 3)]),
}


def record(fn, arrays):
    g = Graph("prog")
    xs = [g.add_input(f"x{i}", gradc.float64, a.shape, "input") for i, a in enumerate(arrays)]
    with GraphBuilder(g):
        out = fn(*[symbolic_tensor(x) for x in xs])
        w = gradc.tensor(rng.standard_normal(tuple(out.shape)))
        loss = (out * w).sum()
    g.outputs = [loss._data]
    return g.verify(), w


def eager(fn, arrays, w):
    ts = [gradc.tensor(a, requires_grad=True) for a in arrays]
    loss = (fn(*ts) * w).sum()
    loss.backward()
    return loss, [t.grad for t in ts]


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_autodiff_matches_eager(name):
    fn, arrays = PROGRAMS[name]
    g, w = record(fn, arrays)
    gg = grad(g, [f"x{i}" for i in range(len(arrays))])
    assert str(parse(str(gg))) == str(gg)
    res = interpret(gg, {f"x{i}": a for i, a in enumerate(arrays)})
    loss, grads = eager(fn, arrays, w)
    np.testing.assert_allclose(res[gg.outputs[0].name], loss.detach().numpy(), rtol=1e-10)
    for i, gr in enumerate(grads):
        np.testing.assert_allclose(res[f"d.x{i}"], gr.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"d.x{i}")


def test_every_differentiable_primitive_is_covered():
    seen = set()
    for fn, arrays in PROGRAMS.values():
        g, _ = record(fn, arrays)
        seen |= {n.op for n in g.nodes}
    differentiable = {name for name, p in P.REGISTRY.items() if p.vjp is not None}
    assert differentiable - seen == set()


def test_unused_input_gets_zero_gradient_and_unneeded_work_is_dropped():
    g, _ = record(lambda x, y: gradc.exp(x) * 2, [nrm(3), nrm(3)])
    gg = grad(g, ["x0", "x1"])
    res = interpret(gg, {"x0": np.ones(3), "x1": np.ones(3)})
    np.testing.assert_array_equal(res["d.x1"], np.zeros(3))
    # with respect to x1 only, nothing of exp's backward is needed
    g1 = grad(g, ["x1"])
    assert [n.op for n in g1.nodes].count("mul") == [n.op for n in g.nodes].count("mul")


def test_value_used_twice_accumulates():
    g, _ = record(lambda x: x * x + x, [nrm(4)])
    gg = grad(g, ["x0"])
    x = rng.standard_normal(4)
    res = interpret(gg, {"x0": x})
    w = next(n.attrs["value"] for n in g.nodes if n.op == "const")
    np.testing.assert_allclose(res["d.x0"], w * (2 * x + 1), rtol=1e-12)


def test_autodiff_matches_torch():
    torch = pytest.importorskip("torch")
    fn, arrays = PROGRAMS["mlp_ce"]
    g, w = record(fn, arrays)
    res = interpret(grad(g, ["x0", "x1", "x2"]), {f"x{i}": a for i, a in enumerate(arrays)})
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = -torch.log_softmax(torch.tanh(ts[0] @ ts[1]) @ ts[2], 1).gather(1, torch.tensor([[0], [2], [1]])).mean()
    (out * torch.tensor(w.numpy())).sum().backward()
    for i, t in enumerate(ts):
        np.testing.assert_allclose(res[f"d.x{i}"], t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_second_order_by_applying_the_pass_twice():
    g, _ = record(lambda x: gradc.tanh(x) ** 3, [nrm(5)])
    g1 = grad(g, ["x0"])
    g1.outputs = [g1.outputs[1]]  # d.x0, reduced to a scalar below
    h = g1.copy()
    with GraphBuilder(h):
        s = symbolic_tensor(h.outputs[0]).sum()
    h.outputs = [s._data]
    g2 = grad(h, ["x0"])
    x = rng.standard_normal(5)
    res = interpret(g2, {"x0": x})
    t = gradc.tensor(x, requires_grad=True)
    w = next(n.attrs["value"] for n in g.nodes if n.op == "const")
    (d,) = gradc.autograd.grad(((gradc.tanh(t) ** 3) * gradc.tensor(w)).sum(), t, create_graph=True)
    (dd,) = gradc.autograd.grad(d.sum(), t)
    np.testing.assert_allclose(res[g2.outputs[1].name], dd.numpy(), rtol=1e-10)
