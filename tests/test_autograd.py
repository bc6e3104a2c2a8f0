"""Autograd semantics against PyTorch: accumulation, retain_graph, grad modes,
autograd.grad with higher order, and the errors (with PyTorch's wording)."""
import numpy as np
import pytest

import gradc
from helpers import assert_same

torch = pytest.importorskip("torch")


def both(data, requires_grad=True, dtype="float64"):
    return (gradc.tensor(data, dtype=getattr(gradc, dtype), requires_grad=requires_grad),
            torch.tensor(data, dtype=getattr(torch, dtype), requires_grad=requires_grad))


def raises_like_torch(fn_g, fn_t, phrase):
    """Both raise the same exception type, and gradc's message contains `phrase` as PyTorch's does."""
    with pytest.raises(Exception) as et:
        fn_t()
    with pytest.raises(type(et.value)) as eg:
        fn_g()
    assert phrase in str(et.value), f"torch's message changed: {et.value}"
    assert phrase in str(eg.value), f"gradc's message lacks {phrase!r}: {eg.value}"
    return str(eg.value)


# ---------------------------------------------------------------- accumulation and backward arguments
def test_grad_accumulates_across_backward_calls():
    (xg, xt) = both([1.0, -2.0, 3.0])
    for m, x in ((gradc, xg), (torch, xt)):
        assert x.grad is None
        (x * x).sum().backward()
        (x.exp() * 2).sum().backward()
        m.sin(x).sum().backward()
    assert_same(xg.grad, xt.grad)


def test_grad_accumulates_into_shared_leaf_used_twice():
    (xg, xt) = both([[1.0, 2.0], [3.0, 4.0]])
    for x in (xg, xt):
        y = x @ x + x * 3
        y.sum().backward()
    assert_same(xg.grad, xt.grad)


def test_backward_with_gradient_argument():
    (xg, xt) = both([1.0, 2.0, 3.0])
    for m, x in ((gradc, xg), (torch, xt)):
        y = x * x
        y.backward(gradient=m.tensor([1.0, 0.5, -1.0], dtype=m.float64))
    assert_same(xg.grad, xt.grad)


def test_grad_owns_its_memory():
    """.grad never aliases the gradient passed in, nor another leaf's .grad (both change in place)."""
    x = gradc.tensor([1.0, 2.0], requires_grad=True)
    y = gradc.tensor([3.0, 4.0], requires_grad=True)
    gr = gradc.tensor([1.0, 1.0])
    (x + y).backward(gr)
    (x * 1).backward(gr)
    x.backward(gr)
    assert gr.tolist() == [1.0, 1.0]
    assert x.grad.tolist() == [3.0, 3.0] and y.grad.tolist() == [1.0, 1.0]
    a = gradc.tensor([1.0], requires_grad=True)
    b = gradc.tensor([1.0], requires_grad=True)
    ((a + b) * 3).sum().backward()
    a.grad.add_(1)
    assert b.grad.tolist() == [3.0]


def test_backward_gradient_shape_mismatch_raises():
    (xg, xt) = both([1.0, 2.0, 3.0])
    raises_like_torch(lambda: (xg * 2).backward(gradc.ones(2, dtype=gradc.float64)),
                      lambda: (xt * 2).backward(torch.ones(2, dtype=torch.float64)), "Mismatch in shape")


def test_backward_inputs_restricts_accumulation():
    (xg, xt), (yg, yt) = both([1.0, 2.0]), both([3.0, 4.0])
    for x, y in ((xg, yg), (xt, yt)):
        (x * y).sum().backward(inputs=[x])
    assert_same(xg.grad, xt.grad)
    assert yg.grad is None and yt.grad is None


def test_functional_backward():
    (xg, xt) = both([1.0, 2.0])
    gradc.autograd.backward((xg * xg).sum())
    torch.autograd.backward((xt * xt).sum())
    assert_same(xg.grad, xt.grad)


# ---------------------------------------------------------------- retain_graph
@pytest.mark.parametrize("f", [lambda x: (x * x).sum(), lambda x: x.exp().sum(), lambda x: x.tanh().mean()],
                         ids=["mul", "exp", "tanh"])
def test_second_backward_needs_retain_graph(f):
    (xg, xt) = both([0.5, -1.0])
    for x in (xg, xt):
        y = f(x)
        y.backward(retain_graph=True)
        y.backward()  # allowed once more: the graph was retained
    assert_same(xg.grad, xt.grad)
    msg = raises_like_torch(lambda: f_backward_twice(f, xg), lambda: f_backward_twice(f, xt),
                            "Trying to backward through the graph a second time")
    assert "retain_graph=True" in msg


def f_backward_twice(f, x):
    y = f(x)
    y.backward()
    y.backward()


def test_graph_without_saved_tensors_can_be_walked_twice():
    (xg, xt) = both([0.5, -1.0])
    for x in (xg, xt):
        y = (x + 1).reshape(2, 1).sum()
        y.backward()
        y.backward()
    assert_same(xg.grad, xt.grad)


# ---------------------------------------------------------------- graph structure
def test_grad_fn_presence_and_leaves():
    (xg, xt) = both([1.0, 2.0])
    (cg, ct) = both([1.0, 2.0], requires_grad=False)
    for x, c in ((xg, xt), (cg, ct)):
        assert x.grad_fn is None and x.is_leaf
    assert (cg * 2).grad_fn is None and not (cg * 2).requires_grad
    for x, t in ((xg, xt),):
        assert (x * 2).grad_fn is not None and (x * 2).requires_grad and not (x * 2).is_leaf
    assert (xg * cg).grad_fn.name == (xt * ct).grad_fn.name()
    assert (xg + 1).grad_fn.name == (xt + 1).grad_fn.name()
    assert xg.sum().grad_fn.name == xt.sum().grad_fn.name()
    assert (xg > 0).grad_fn is None and not (xg > 0).requires_grad
    assert xg.argmax().grad_fn is None


def test_non_leaf_grad_is_none_unless_retained():
    x = gradc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = x * 3
    z.retain_grad()
    (y * z).sum().backward()
    assert y.grad is None
    np.testing.assert_allclose(z.grad.numpy(), (x * 2).detach().numpy())


def test_detach_shares_memory_and_cuts_the_graph():
    x = gradc.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None
    e = x.detach()
    e[0] = 7.0  # shares memory with x (as in PyTorch)
    assert x.tolist() == [7.0, 2.0]
    y = (x * d).sum()
    y.backward()
    assert x.grad.tolist() == [2.0, 4.0]  # d is a constant


def test_requires_grad_():
    x = gradc.tensor([1.0, 2.0])
    assert not x.requires_grad
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    y = gradc.tensor([1.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_numpy_of_tensor_requiring_grad_raises():
    (xg, xt) = both([1.0])
    raises_like_torch(lambda: xg.numpy(), lambda: xt.numpy(), "detach().numpy()")


# ---------------------------------------------------------------- grad modes
def test_no_grad_context_and_decorator():
    x = gradc.tensor([1.0, 2.0], requires_grad=True)
    with gradc.no_grad():
        assert not gradc.is_grad_enabled()
        y = x * 2
    assert gradc.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None

    @gradc.no_grad()
    def f(t):
        return t * 3, gradc.is_grad_enabled()

    z, enabled = f(x)
    assert not enabled and not z.requires_grad
    assert gradc.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = gradc.tensor([1.0, 2.0], requires_grad=True)
    with gradc.no_grad():
        with gradc.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and not z.requires_grad

    @gradc.enable_grad()
    def f(t):
        return t * 3

    with gradc.no_grad():
        assert f(x).requires_grad


def test_set_grad_enabled_function_and_context():
    x = gradc.tensor([1.0], requires_grad=True)
    try:
        gradc.set_grad_enabled(False)
        assert not (x * 2).requires_grad
    finally:
        gradc.set_grad_enabled(True)
    assert (x * 2).requires_grad
    with gradc.set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with gradc.set_grad_enabled(True):
            assert (x * 2).requires_grad
    assert gradc.is_grad_enabled()


def test_grad_mode_restored_after_exception():
    with pytest.raises(ValueError):
        with gradc.no_grad():
            raise ValueError
    assert gradc.is_grad_enabled()


# ---------------------------------------------------------------- autograd.grad and higher order
def test_autograd_grad_returns_without_accumulating():
    (xg, xt), (yg, yt) = both([1.0, 2.0]), both([3.0, -1.0])
    rg = gradc.autograd.grad((xg * yg).sum(), [xg, yg])
    rt = torch.autograd.grad((xt * yt).sum(), [xt, yt])
    assert isinstance(rg, tuple)
    assert_same(list(rg), list(rt))
    assert xg.grad is None and yg.grad is None


def test_autograd_grad_with_grad_outputs_and_unused():
    (xg, xt), (yg, yt) = both([1.0, 2.0]), both([3.0, -1.0])
    rg = gradc.autograd.grad(xg * 2, xg, grad_outputs=gradc.tensor([1.0, -1.0], dtype=gradc.float64))
    rt = torch.autograd.grad(xt * 2, xt, grad_outputs=torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert_same(list(rg), list(rt))
    raises_like_torch(lambda: gradc.autograd.grad((xg * 2).sum(), [xg, yg]),
                      lambda: torch.autograd.grad((xt * 2).sum(), [xt, yt]), "allow_unused=True")
    rg = gradc.autograd.grad((xg * 2).sum(), [xg, yg], allow_unused=True)
    assert rg[1] is None


SECOND_ORDER = {
    "cube": lambda m, x: (x ** 3).sum(),
    "tanh": lambda m, x: m.tanh(x).sum(),
    "sigmoid_mul": lambda m, x: (m.sigmoid(x) * x).sum(),
    "softmax": lambda m, x: (m.softmax(x, 0) * m.arange(3, dtype=m.float64)).sum(),
    "logsumexp": lambda m, x: m.logsumexp(x, 0),
    "exp_div": lambda m, x: (m.exp(x) / (1 + x * x)).sum(),
    "matmul": lambda m, x: (m.outer(x, x) @ x).sum(),
    "norm": lambda m, x: m.sqrt((x * x).sum()),
    "var": lambda m, x: x.var(),
    "max": lambda m, x: (m.amax(x) * x).sum(),
    "prod": lambda m, x: x.prod(),
    "where": lambda m, x: m.where(x > 0, x ** 2, -(x ** 3)).sum(),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_second_derivatives_match_torch(name):
    f = SECOND_ORDER[name]
    (xg, xt) = both([0.3, -1.2, 0.7])
    results = []
    for m, x in ((gradc, xg), (torch, xt)):
        (g,) = m.autograd.grad(f(m, x), x, create_graph=True)
        assert g.requires_grad
        (h,) = m.autograd.grad((g * m.tensor([1.0, 2.0, -1.0], dtype=m.float64)).sum(), x)
        results.append((g, h))
    assert_same(results[0][0], results[1][0], what="first derivative")
    assert_same(results[0][1], results[1][1], what="Hessian-vector product")


def test_backward_create_graph_keeps_grad_differentiable():
    (xg, xt) = both([0.5, 2.0])
    for m, x in ((gradc, xg), (torch, xt)):
        (x ** 3).sum().backward(create_graph=True)
        g = x.grad
        assert g.requires_grad
        x.grad = None
        g.sum().backward()
    assert_same(xg.grad, xt.grad)


# ---------------------------------------------------------------- errors
def test_integer_tensor_cannot_require_grad():
    # the seed tutorial's first snippet
    msg = raises_like_torch(lambda: gradc.tensor([1, 2, 3], requires_grad=True),
                            lambda: torch.tensor([1, 2, 3], requires_grad=True), "floating point")
    assert "gradc.float32" in msg or ".float()" in msg  # says how to fix it
    raises_like_torch(lambda: gradc.tensor([1, 2]).requires_grad_(),
                      lambda: torch.tensor([1, 2]).requires_grad_(), "floating point")


def test_backward_on_non_scalar_needs_gradient():
    # the seed tutorial's second snippet
    (xg, xt) = both([1.0, 2.0, 3.0], dtype="float32")
    msg = raises_like_torch(lambda: (xg * 2).backward(), lambda: (xt * 2).backward(),
                            "grad can be implicitly created only for scalar outputs")
    assert ".sum()" in msg and "gradient" in msg


def test_backward_on_tensor_without_grad_raises():
    (xg, xt) = both([1.0, 2.0], requires_grad=False)
    raises_like_torch(lambda: xg.sum().backward(), lambda: xt.sum().backward(), "does not require grad")


def test_inplace_change_of_saved_tensor_raises():
    (xg, xt) = both([1.0, 2.0, 3.0])

    def run(x):
        a = x.exp()  # exp saves its result
        a.add_(1)
        a.sum().backward()

    raises_like_torch(lambda: run(xg), lambda: run(xt), "modified by an inplace operation")

    def run2(x):
        h = x * 2
        y = h * h  # saves h
        h.mul_(3)
        y.sum().backward()

    raises_like_torch(lambda: run2(xg), lambda: run2(xt), "modified by an inplace operation")


def test_inplace_through_a_view_is_seen_by_saved_tensors():
    """Views (slices, reshape, transpose) share memory and the version counter with their base."""
    (xg, xt) = both([1.0, 2.0, 3.0])

    def run(m, x):
        h = x * 2
        y = h * h  # saves h
        with m.no_grad():
            h[1:].mul_(3)
        y.sum().backward()

    raises_like_torch(lambda: run(gradc, xg), lambda: run(torch, xt), "modified by an inplace operation")
    for m in (gradc, torch):
        w = m.zeros(3, 4)
        w[0].fill_(2.0)
        w.t()[1].add_(1)
        w.reshape(12)[-1] = 5.0
        assert w.tolist() == [[2.0, 3.0, 2.0, 2.0], [0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 5.0]]


def test_inplace_on_tensor_backward_does_not_need_works():
    (xg, xt) = both([1.0, 2.0, 3.0])
    for x in (xg, xt):
        y = x * 3
        w = y + 2  # add needs no values
        y.add_(5)
        (w * 2).sum().backward()
    assert_same(xg.grad, xt.grad)


def test_inplace_on_non_leaf_joins_the_graph():
    (xg, xt) = both([1.0, -2.0, 3.0])
    for x in (xg, xt):
        y = x * 1
        y.mul_(x)
        y += x.exp()
        y.sum().backward()
    assert_same(xg.grad, xt.grad)


def test_inplace_on_leaf_requiring_grad():
    (xg, xt) = both([1.0, 2.0])
    raises_like_torch(lambda: xg.add_(1), lambda: xt.add_(1), "a leaf Variable that requires grad")
    raises_like_torch(lambda: xg.__setitem__(0, 5.0), lambda: xt.__setitem__(0, 5.0),
                      "a leaf Variable that requires grad")
    for m, x in ((gradc, xg), (torch, xt)):
        with m.no_grad():
            x.add_(1)
            x[1] = 10.0
            x *= 2
    assert_same(xg, xt)
    assert xg.requires_grad and xg.grad_fn is None


def test_version_counter_counts_inplace_ops():
    x = gradc.zeros(3)
    v0 = x._version[0]
    x.add_(1)
    x[0] = 2.0
    x.zero_()
    assert x._version[0] == v0 + 3
