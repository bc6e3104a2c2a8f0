"""Finite-difference gradient checks in float64, without PyTorch.

Every differentiable primitive in the registry has sample inputs here (a
coverage test fails when a new primitive has none), and its vjp rule is
checked against central differences, to first order and, since the rules are
written with primitives, to second order (Hessian-vector products against
differences of the analytic gradient). Composite ops are checked the same way.
"""
import math

import numpy as np
import pytest

import gradc
from gradc import prims as P
from gradc.prims import REGISTRY

EPS = 1e-6
RTOL, ATOL = 1e-6, 1e-8


# ---------------------------------------------------------------- the checker
def _tensors(arrays, diff):
    return [gradc.tensor(a.copy(), requires_grad=i in diff) if isinstance(a, np.ndarray) else a
            for i, a in enumerate(arrays)]


def _value(f, arrays, w):
    with gradc.no_grad():
        out = f(*_tensors(arrays, ()))
    return float(np.sum(np.asarray(out._data, dtype=np.float64) * w))


def _analytic_grads(f, arrays, diff, w, create_graph=False):
    ts = _tensors(arrays, diff)
    out = f(*ts)
    loss = (out * gradc.tensor(w)).sum()
    gs = gradc.autograd.grad(loss, [ts[i] for i in diff], create_graph=create_graph, allow_unused=True)
    return ts, [np.zeros_like(arrays[i]) if g is None else g for g, i in zip(gs, diff)]


def _as_np(g):
    return np.asarray(g.detach()._data) if isinstance(g, gradc.Tensor) else g


def differentiable_operands(arrays, prim=None):
    return [i for i, a in enumerate(arrays)
            if isinstance(a, np.ndarray) and a.dtype == np.float64 and (prim is None or prim.differentiable(i))]


def gradcheck(f, arrays, diff=None, second_order=True, seed=0):
    """Compare autograd's gradients of sum(w * f(...)) with central differences."""
    rng = np.random.default_rng(seed)
    diff = differentiable_operands(arrays) if diff is None else diff
    with gradc.no_grad():
        out = f(*_tensors(arrays, ()))
    w = rng.uniform(0.5, 1.5, size=tuple(out.shape)) * rng.choice([-1.0, 1.0], size=tuple(out.shape))
    _, grads = _analytic_grads(f, arrays, diff, w)
    for i, g in zip(diff, grads):
        num = np.zeros_like(arrays[i])
        for k in np.ndindex(arrays[i].shape):
            plus = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
            minus = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
            plus[i][k] += EPS
            minus[i][k] -= EPS
            num[k] = (_value(f, plus, w) - _value(f, minus, w)) / (2 * EPS)
        np.testing.assert_allclose(_as_np(g), num, rtol=RTOL, atol=ATOL, err_msg=f"gradient of operand {i}")
    if second_order:
        hessian_check(f, arrays, diff, w, rng)


def hessian_check(f, arrays, diff, w, rng):
    """Hessian-vector product by double backward vs. differences of the analytic gradient."""
    v = [rng.standard_normal(arrays[i].shape) for i in diff]
    ts, grads = _analytic_grads(f, arrays, diff, w, create_graph=True)
    terms = [(g * gradc.tensor(vi)).sum() for g, vi in zip(grads, v) if isinstance(g, gradc.Tensor) and g.requires_grad]
    if terms:
        h = terms[0]
        for t in terms[1:]:
            h = h + t
        hv = gradc.autograd.grad(h, [ts[i] for i in diff], allow_unused=True)
        hv = [np.zeros_like(arrays[i]) if g is None else _as_np(g) for g, i in zip(hv, diff)]
    else:  # the gradient does not depend on the inputs: the Hessian is zero
        hv = [np.zeros_like(arrays[i]) for i in diff]

    def shifted(sign):
        moved = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
        for i, vi in zip(diff, v):
            moved[i] = np.asarray(moved[i] + sign * EPS * vi)
        return [_as_np(g) for g in _analytic_grads(f, moved, diff, w)[1]]

    plus, minus = shifted(1.0), shifted(-1.0)
    for k, i in enumerate(diff):
        num = (plus[k] - minus[k]) / (2 * EPS)
        np.testing.assert_allclose(hv[k], num, rtol=1e-5, atol=1e-6, err_msg=f"Hessian-vector product, operand {i}")


# ---------------------------------------------------------------- sample inputs per primitive
def _rng(seed=0):
    return np.random.default_rng(seed)


def _normal(*shape, seed=0):
    return np.asarray(_rng(seed).standard_normal(shape))


def _positive(*shape, seed=0):
    return _rng(seed).uniform(0.5, 2.0, shape)


def _nonzero(*shape, seed=0):
    r = _rng(seed)
    return r.uniform(0.3, 2.0, shape) * r.choice([-1.0, 1.0], shape)


def _distinct(*shape, seed=0):
    """Values at least 0.1 apart, so no difference step crosses a tie."""
    n = math.prod(shape)
    return (_rng(seed).permutation(n) * 0.1 - 0.05 * n).reshape(shape) + 0.01


IDX = np.array([2, 0, 2])
SPEC = (P.Arg(0), P.Slice(1, 4, 2))
GIDX = np.array([[0, 3], [1, 1], [2, 0]])

# primitive name -> list of (operands, attrs); operands are arrays (float64 ones are differentiated)
SAMPLES = {
    "neg": [([_normal(2, 3)], {})],
    "exp": [([_normal(2, 3)], {})],
    "log": [([_positive(2, 3)], {})],
    "log1p": [([_positive(2, 3)], {})],
    "sqrt": [([_positive(2, 3)], {})],
    "abs": [([_nonzero(2, 3)], {})],
    "sign": [([_nonzero(2, 3)], {})],
    "sin": [([_normal(2, 3)], {})],
    "cos": [([_normal(2, 3)], {})],
    "tanh": [([_normal(2, 3)], {})],
    "sigmoid": [([_normal(2, 3) * 3], {})],
    "erf": [([_normal(2, 3)], {})],
    "add": [([_normal(2, 3), _normal(3, seed=1)], {}), ([_normal(2, 1), _normal(1, 3, seed=1)], {})],
    "sub": [([_normal(2, 1), _normal(1, 3, seed=1)], {}), ([_normal(2, 3), 1.5], {})],
    "mul": [([_normal(2, 3), _normal(2, 3, seed=1)], {}), ([_normal(), _normal(2, 3, seed=1)], {})],
    "div": [([_normal(2, 3), _nonzero(3, seed=1)], {}), ([2.0, _nonzero(2, 3)], {})],
    "pow": [([_positive(2, 3), _normal(3, seed=1)], {}), ([_positive(2, 3), 3.0], {}), ([2.0, _normal(3)], {})],
    "maximum": [([_distinct(2, 3), _distinct(3, seed=1) + 0.03], {})],
    "minimum": [([_distinct(2, 3), _distinct(3, seed=1) + 0.03], {})],
    "where": [([_normal(2, 3) > 0, _normal(2, 3, seed=1), _normal(3, seed=2)], {})],
    "convert": [([_normal(2, 3)], {"dtype": gradc.float64})],
    "reshape": [([_normal(2, 3)], {"shape": (3, 1, 2)})],
    "transpose": [([_normal(2, 3, 4)], {"perm": (1, 2, 0)})],
    "broadcast": [([_normal(3, 1)], {"shape": (2, 3, 4)})],
    "concat": [([_normal(2, 3), _normal(1, 3, seed=1), _normal(2, 3, seed=2)], {"axis": 0})],
    "sum": [([_normal(2, 3, 4)], {"axes": (0, 2)}), ([_normal(2, 3)], {"axes": ()})],
    "max": [([_distinct(2, 3, 4)], {"axes": (1,)}), ([_distinct(2, 3)], {"axes": (0, 1)})],
    "prod": [([_nonzero(2, 3)], {"axes": (1,)}),
             ([np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 1.5], [1.0, 2.0, -1.0]])], {"axes": (1,)})],
    "index": [([_normal(3, 4), IDX], {"spec": SPEC}), ([_normal(3, 4)], {"spec": (1, None, P.Slice(0, 4, 3))})],
    "scatter_index": [([_normal(3, 2), IDX], {"spec": SPEC, "shape": (3, 4)})],
    "gather": [([_normal(3, 4), GIDX], {"axis": 1}), ([_normal(3, 4), np.array([[2, 0, 1, 2], [0, 0, 2, 1]])], {"axis": 0})],
    "scatter_add": [([_normal(3, 2), GIDX], {"axis": 1, "shape": (3, 4)})],
    "matmul": [([_normal(2, 3), _normal(3, 4, seed=1)], {}), ([_normal(2, 1, 2, 3), _normal(3, 3, 2, seed=1)], {})],
}


def test_every_differentiable_primitive_has_samples():
    differentiable = {name for name, p in REGISTRY.items() if p.vjp is not None}
    assert set(SAMPLES) == differentiable, (
        f"missing samples: {sorted(differentiable - set(SAMPLES))}; stale: {sorted(set(SAMPLES) - differentiable)}"
    )


CASES = [(name, k) for name in sorted(SAMPLES) for k in range(len(SAMPLES[name]))]


@pytest.mark.parametrize("name,k", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_primitive_gradient(name, k):
    prim = REGISTRY[name]
    operands, attrs = SAMPLES[name][k]
    diff = differentiable_operands(operands, prim)
    assert diff, f"sample for {name} has no differentiable float64 operand"
    gradcheck(lambda *xs: prim(*xs, **attrs), operands, diff)


def test_convert_gradient_returns_to_operand_dtype():
    x = gradc.tensor([1.0, 2.0], dtype=gradc.float32, requires_grad=True)
    y = P.convert(x, dtype=gradc.float64)
    (y * gradc.tensor([3.0, -1.0], dtype=gradc.float64)).sum().backward()
    assert x.grad.dtype is gradc.float32
    assert x.grad.tolist() == [3.0, -1.0]


# ---------------------------------------------------------------- composite ops
COMPOSITES = {
    "softmax": (lambda x: gradc.softmax(x, 1), [_normal(3, 4)]),
    "softmax0": (lambda x: x.softmax(0), [_normal(3, 4)]),
    "log_softmax": (lambda x: gradc.log_softmax(x, -1), [_normal(3, 4)]),
    "logsumexp": (lambda x: gradc.logsumexp(x, 1), [_normal(3, 4)]),
    "logsumexp_all": (lambda x: gradc.logsumexp(x, (0, 1), keepdim=True), [_normal(3, 4)]),
    "var": (lambda x: gradc.var(x, 1), [_normal(3, 4)]),
    "var_all_biased": (lambda x: x.var(unbiased=False), [_normal(3, 4)]),
    "std": (lambda x: gradc.std(x, 0, keepdim=True), [_normal(3, 4)]),
    "mean": (lambda x: x.mean((0, 2)), [_normal(2, 3, 4)]),
    "rsqrt": (lambda x: gradc.rsqrt(x), [_positive(3, 4)]),
    "gelu_erf": (lambda x: 0.5 * x * (1 + gradc.erf(x / math.sqrt(2))), [_normal(3, 4)]),
    "clamp": (lambda x: gradc.clamp(x, -0.5, 0.5), [_distinct(3, 4) * 0.3]),
    "clamp_tensor_bounds": (lambda x, lo: gradc.clamp(x, min=lo), [_distinct(3, 4), _distinct(4, seed=1) + 0.03]),
    "relu": (lambda x: gradc.relu(x), [_distinct(3, 4)]),
    "amin": (lambda x: gradc.amin(x, 1), [_distinct(3, 4)]),
    "max_dim": (lambda x: gradc.max(x, 0).values, [_distinct(3, 4)]),
    "min_dim_keep": (lambda x: x.min(1, keepdim=True)[0], [_distinct(3, 4)]),
    "gather": (lambda x: gradc.gather(x, 1, gradc.tensor(GIDX)), [_normal(3, 4)]),
    "getitem_mixed": (lambda x: x[gradc.tensor([2, 0, 2]), 1:4:2], [_normal(3, 4)]),
    "getitem_mask": (lambda x: x[x > 0], [_nonzero(3, 4)]),
    "getitem_ellipsis": (lambda x: x[..., None, 1], [_normal(2, 3, 4)]),
    "setitem": (lambda x, v: _setitem(x, (slice(None), [0, 2]), v), [_normal(3, 4), _normal(3, 2, seed=1)]),
    "cat_split": (lambda x, y: gradc.cat([x, y], 1).split([1, 4], dim=1)[1] * 2, [_normal(2, 3), _normal(2, 2, seed=1)]),
    "stack_chunk": (lambda x, y: gradc.stack([x, y], 0).chunk(3, dim=2)[0], [_normal(2, 3), _normal(2, 3, seed=1)]),
    "matmul_vec": (lambda a, b: a @ b, [_normal(3), _normal(2, 3, 4, seed=1)]),
    "cumsum": (lambda x: gradc.cumsum(x, 1), [_normal(3, 4)]),
    "prod_all": (lambda x: x.prod(), [_nonzero(2, 3)]),
    "masked_fill": (lambda x: x.masked_fill(x > 0.5, 2.0), [_distinct(3, 4)]),
    "where_scalar": (lambda x, y: gradc.where(x > y, x * y, 1.0), [_distinct(3, 4), _distinct(4, seed=1) + 0.03]),
    "inplace_chain": (lambda x, y: _inplace_chain(x, y), [_normal(3, 4), _normal(3, 4, seed=1)]),
    "expand_repeat": (lambda x: x.expand(2, 3, 4).repeat(1, 2, 1), [_normal(3, 1)]),
    "pow_tensor": (lambda x, y: x ** y, [_positive(3, 4), _normal(4, seed=1)]),
}


def _setitem(x, key, v):
    y = x.clone()
    y[key] = v
    return y


def _inplace_chain(x, y):
    h = x * 1.0
    h.mul_(y)
    h += x
    return h.div_(2.0).exp_()


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_gradient(name):
    f, arrays = COMPOSITES[name]
    gradcheck(f, arrays)
