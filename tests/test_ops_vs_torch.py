"""Differential tests: every eager op against PyTorch, forward and gradient.

Each op is written once as `f(m, *xs)` with `m` the module (gradc or torch),
so the two sides run the same user code. Hypothesis draws shapes (with
broadcasting, size-1 and size-0 dims), dtypes and data; where PyTorch raises,
gradc must raise too. Gradients come from `backward` on a random weighted sum.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import gradc
from helpers import assert_same, compare, rand_array

torch = pytest.importorskip("torch")

FLOATS = ("float32", "float64")
NUMERIC = ("float32", "float64", "int64")
ALL = ("float32", "float64", "int64", "bool")
EXAMPLES = settings(max_examples=12, deadline=None)


def run_both(f, arrays, **kw):
    """compare() when torch accepts the input; otherwise gradc must raise too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f(torch, *[torch.tensor(a.copy()) for a in arrays])
    except Exception as e:  # noqa: BLE001 - any error torch raises must be raised by gradc
        with pytest.raises(Exception) as info:
            f(gradc, *[gradc.tensor(a.copy()) for a in arrays])
        assert isinstance(info.value, type(e)) or isinstance(e, NotImplementedError), (
            f"torch raised {type(e).__name__}: {e}; gradc raised {type(info.value).__name__}: {info.value}"
        )
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare(torch, lambda *xs: f(gradc, *xs), lambda *xs: f(torch, *xs), *arrays, **kw)


# ---------------------------------------------------------------- unary elementwise
UNARY = {
    "exp": (lambda m, x: m.exp(x), "normal", ALL),
    "log": (lambda m, x: m.log(x), "positive", NUMERIC),
    "log1p": (lambda m, x: m.log1p(x), "positive", NUMERIC),
    "sqrt": (lambda m, x: m.sqrt(x), "positive", NUMERIC),
    "rsqrt": (lambda m, x: m.rsqrt(x), "positive", NUMERIC),
    "abs": (lambda m, x: m.abs(x), "normal", ALL),
    "abs_method": (lambda m, x: abs(x), "normal", NUMERIC),
    "neg": (lambda m, x: m.neg(x), "normal", ALL),
    "neg_op": (lambda m, x: -x, "normal", NUMERIC),
    "sign": (lambda m, x: m.sign(x), "normal", ALL),
    "sin": (lambda m, x: m.sin(x), "normal", NUMERIC),
    "cos": (lambda m, x: x.cos(), "normal", NUMERIC),
    "tanh": (lambda m, x: m.tanh(x), "normal", NUMERIC),
    "sigmoid": (lambda m, x: x.sigmoid(), "normal", ALL),
    "relu": (lambda m, x: m.relu(x), "normal", ALL),
    "erf": (lambda m, x: m.erf(x), "normal", NUMERIC),
    "square": (lambda m, x: m.square(x), "normal", NUMERIC),
    "sq_op": (lambda m, x: x ** 2, "normal", NUMERIC),
    "cube_op": (lambda m, x: x ** 3, "normal", NUMERIC),
    "pow_half": (lambda m, x: x ** 0.5, "positive", NUMERIC),
    "pow_neg1": (lambda m, x: m.pow(x, -1.0), "positive", FLOATS),
    "pow_zero": (lambda m, x: m.pow(x, 0), "normal", NUMERIC),
    "rpow": (lambda m, x: 2.0 ** x, "normal", NUMERIC),
    "rpow_int": (lambda m, x: 3 ** x, "unit", FLOATS),
    "clamp": (lambda m, x: m.clamp(x, -0.5, 1.0), "normal", NUMERIC),
    "clamp_min": (lambda m, x: x.clamp(min=0.25), "normal", NUMERIC),
    "clamp_max": (lambda m, x: x.clamp(max=-0.25), "normal", NUMERIC),
    "clamp_int_bounds": (lambda m, x: m.clamp(x, -1, 1), "normal", NUMERIC),
    "clip": (lambda m, x: m.clip(x, 0, 1), "normal", NUMERIC),
    "softmax_last": (lambda m, x: m.softmax(x, -1), "normal", FLOATS),
    "softmax_0": (lambda m, x: x.softmax(0), "normal", FLOATS),
    "log_softmax": (lambda m, x: m.log_softmax(x, -1), "normal", FLOATS),
    "isnan": (lambda m, x: m.isnan(x), "normal", ALL),
    "logical_not": (lambda m, x: m.logical_not(x), "normal", ALL),
    "invert": (lambda m, x: ~x, "normal", ALL),
    "pow_int_neg": (lambda m, x: x ** -2, "nonzero", ALL),
    "eq_none": (lambda m, x: (x == None, x != None), "normal", ALL),  # noqa: E711
    "clone": (lambda m, x: x.clone() * 1, "normal", ALL),
    "scalar_add": (lambda m, x: x + 2, "normal", ALL),
    "scalar_radd_float": (lambda m, x: 1.5 + x, "normal", ALL),
    "scalar_rsub": (lambda m, x: 3 - x, "normal", NUMERIC),
    "scalar_mul_float": (lambda m, x: x * 2.5, "normal", ALL),
    "scalar_div": (lambda m, x: x / 4, "normal", NUMERIC),
    "scalar_rdiv": (lambda m, x: 2 / x, "nonzero", NUMERIC),
    "scalar_gt": (lambda m, x: x > 0.5, "normal", ALL),
    "scalar_eq": (lambda m, x: x == 1, "normal", ALL),
    "scalar_maximum_tensor0d": (lambda m, x: m.maximum(x, m.tensor(0.5)), "normal", ALL),
    "mul_0d_double": (lambda m, x: x * m.tensor(2.0, dtype=m.float64), "normal", ALL),
    "where_scalar": (lambda m, x: m.where(x > 0, x, 0.0), "normal", NUMERIC),
    "masked_fill": (lambda m, x: x.masked_fill(x < 0, -1.0), "normal", NUMERIC),
    "to_double": (lambda m, x: x.double() * 1, "normal", ALL),
    "to_float": (lambda m, x: x.float() * 1, "normal", ALL),
    "to_long": (lambda m, x: x.long(), "normal", ALL),
    "to_bool": (lambda m, x: x.to(m.bool), "normal", ALL),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@EXAMPLES
@given(shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), data=st.data())
def test_unary(name, shape, data):
    f, kind, dtypes = UNARY[name]
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    ties = data.draw(st.booleans(), label="ties")
    if "softmax" in name and len(shape) == 0:
        shape = (3,)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    run_both(f, [rand_array(rng, shape, dtype, kind, ties=ties and kind == "normal")])


# ---------------------------------------------------------------- binary elementwise with broadcasting
BINARY = {
    "add": (lambda m, x, y: m.add(x, y), "normal", ALL),
    "add_alpha": (lambda m, x, y: m.add(x, y, alpha=2), "normal", NUMERIC),
    "add_op": (lambda m, x, y: x + y, "normal", ALL),
    "sub": (lambda m, x, y: m.sub(x, y), "normal", ALL),
    "sub_op": (lambda m, x, y: x - y, "normal", NUMERIC),
    "mul": (lambda m, x, y: m.mul(x, y), "normal", ALL),
    "mul_op": (lambda m, x, y: x * y, "normal", ALL),
    "div": (lambda m, x, y: m.div(x, y), "nonzero", NUMERIC),
    "div_op": (lambda m, x, y: x / y, "nonzero", NUMERIC),
    "pow": (lambda m, x, y: m.pow(x, y), "positive", NUMERIC),
    "pow_op": (lambda m, x, y: x ** y, "positive", FLOATS),
    "pow_int_neg_exponent": (lambda m, x, y: x ** (y - 3), "positive", ("int64",)),
    "bitwise_and": (lambda m, x, y: x & y, "normal", ALL),
    "bitwise_or": (lambda m, x, y: m.bitwise_or(x, y), "normal", ALL),
    "maximum": (lambda m, x, y: m.maximum(x, y), "normal", ALL),
    "minimum": (lambda m, x, y: m.minimum(x, y), "normal", ALL),
    "max_binary": (lambda m, x, y: m.max(x, y), "normal", NUMERIC),
    "min_binary": (lambda m, x, y: m.min(x, y), "normal", NUMERIC),
    "eq": (lambda m, x, y: m.eq(x, y), "normal", ALL),
    "ne": (lambda m, x, y: x != y, "normal", ALL),
    "lt": (lambda m, x, y: x < y, "normal", ALL),
    "le": (lambda m, x, y: m.le(x, y), "normal", ALL),
    "gt": (lambda m, x, y: x > y, "normal", ALL),
    "ge": (lambda m, x, y: x >= y, "normal", ALL),
    "logical_and": (lambda m, x, y: m.logical_and(x, y), "normal", ALL),
    "logical_or": (lambda m, x, y: m.logical_or(x, y), "normal", ALL),
    "where": (lambda m, x, y: m.where(x > y, x, y), "normal", ALL),
    "where_mixed": (lambda m, x, y: m.where(y > 0, x * y, x - y), "normal", NUMERIC),
    "clamp_tensors": (lambda m, x, y: m.clamp(x, min=y), "normal", FLOATS),
    "chain": (lambda m, x, y: m.tanh(x * y + x.exp()) / (1 + y ** 2), "normal", FLOATS),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@EXAMPLES
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=3),
       data=st.data())
def test_binary(name, shapes, data):
    f, kind, dtypes = BINARY[name]
    dx = data.draw(st.sampled_from(dtypes), label="dtype_x")
    dy = data.draw(st.sampled_from(dtypes), label="dtype_y")
    ties = data.draw(st.booleans(), label="ties")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    if name.startswith("pow") and dy in ("int64", "bool"):
        dy = dx  # int ** negative int is undefined in both; keep exponents float or positive ints
    arrays = [rand_array(rng, s, d, kind, ties=ties and kind == "normal") for s, d in zip(shapes.input_shapes, (dx, dy))]
    run_both(f, arrays)


@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float32", "int64"), ("int64", "int64")])
@pytest.mark.parametrize("f", [lambda m, x, y: x // y, lambda m, x, y: m.floor_divide(x, y), lambda m, x, y: 7 // y,
                               lambda m, x, y: m.div(x, y, rounding_mode="floor"),
                               lambda m, x, y: m.div(x, y, rounding_mode="trunc")],
                         ids=["op", "fn", "rop", "div_floor", "div_trunc"])
def test_floor_divide(f, dtypes):
    """Forward only: PyTorch has no derivative for floor division (gradc treats it as a constant)."""
    rng = np.random.default_rng(6)
    x, y = rand_array(rng, (3, 4), dtypes[0], "normal") * 4, rand_array(rng, (4,), dtypes[1], "nonzero")
    run_both(f, [x, y], grad=False)
    if dtypes[1] == "int64":  # integer division by zero raises
        run_both(f, [x, np.zeros(4, np.int64)], grad=False)


@pytest.mark.parametrize("f,grad", [(lambda m, x, y: x % y, True), (lambda m, x, y: m.remainder(x, y), True),
                                    (lambda m, x, y: x % 1.5, True),
                                    (lambda m, x, y: 5.5 % y, False)],  # PyTorch has no derivative here
                         ids=["op", "fn", "scalar", "rop"])
@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float32", "float32"), ("int64", "float32"),
                                    ("int64", "int64")])
def test_remainder(f, grad, dtypes):
    """Python's %, with the sign of the divisor; gradients 1 and -floor(a / b) (values of moderate size:
    gradc computes a - floor(a / b) * b, which loses the exactness of fmod when |a / b| > 2**24)."""
    rng = np.random.default_rng(7)
    x, y = rand_array(rng, (3, 4), dtypes[0], "normal") * 4, rand_array(rng, (4,), dtypes[1], "nonzero")
    run_both(f, [x, y], grad=grad)


# each case: (call, op names one of which the message names, pieces naming the shapes); torch must reject it too
SHAPE_ERRORS = [
    (lambda m: m.ones(2, 3) + m.ones(4, 3), ["add"], ["[2, 3]", "[4, 3]"]),
    (lambda m: m.ones(2, 1, 3) * m.ones(4, 2), ["mul"], ["[2, 1, 3]", "[4, 2]"]),
    (lambda m: m.where(m.ones(2, 3) > 0, m.ones(3), m.ones(4)), ["where"], ["[2, 3]", "[4]"]),
    (lambda m: m.ones(2, 3) @ m.ones(4, 5), ["matmul"], ["2x3", "4x5"]),
    (lambda m: m.ones(3) @ m.ones(4, 5), ["matmul"], ["3", "4x5"]),
    (lambda m: m.ones(2, 2, 3) @ m.ones(3, 3, 4), ["matmul"], ["[2, 2, 3]", "[3, 3, 4]"]),
    (lambda m: m.mm(m.ones(2, 3, 1), m.ones(3, 4)), ["mm"], ["[2, 3, 1]", "[3, 4]"]),
    (lambda m: m.bmm(m.ones(2, 2, 3), m.ones(3, 3, 4)), ["bmm"], ["[2, 2, 3]", "[3, 3, 4]"]),
    (lambda m: m.dot(m.ones(3), m.ones(4)), ["dot"], ["[3]", "[4]"]),
    (lambda m: m.cat([m.ones(2, 3), m.ones(2, 4)]), ["cat", "concat"], ["[2, 3]", "[2, 4]"]),
    (lambda m: m.stack([m.ones(2, 3), m.ones(3, 2)]), ["stack"], ["[2, 3]", "[3, 2]"]),
    (lambda m: m.ones(2, 3).reshape(4, 2), ["reshape"], ["[4, 2]", "[2, 3]"]),
    (lambda m: m.ones(2, 3).view(-1, 4), ["reshape", "view"], ["[-1, 4]", "[2, 3]"]),
    (lambda m: m.ones(3, 2).expand(3, 4), ["expand", "broadcast"], ["[3, 2]", "[3, 4]"]),
    (lambda m: m.ones(2, 3).expand(3), ["expand"], ["[2, 3]", "[3]"]),
    (lambda m: m.gather(m.ones(3, 4), 1, m.zeros(3, dtype=m.int64)), ["gather"], ["[3]", "[3, 4]"]),
    (lambda m: m.split(m.ones(5, 2), [2, 2]), ["split"], ["[5, 2]", "[2, 2]"]),
    (lambda m: m.ones(2, 3).permute(0), ["permute"], ["[2, 3]"]),
    (lambda m: m.t(m.ones(2, 3, 4)), ["t"], ["[2, 3, 4]"]),
]


@pytest.mark.parametrize("k", range(len(SHAPE_ERRORS)))
def test_shape_errors_name_op_shapes_and_user_line(k):
    call, ops, shapes = SHAPE_ERRORS[k]
    with pytest.raises(RuntimeError):
        call(torch)
    with pytest.raises(RuntimeError) as e:
        call(gradc)
    msg = str(e.value)
    assert any(op in msg for op in ops), msg
    for s in shapes:
        assert s in msg, msg
    assert f"(at test_ops_vs_torch.py:{call.__code__.co_firstlineno})" in msg, msg


# ---------------------------------------------------------------- reductions
REDUCE = {
    "sum": (lambda m, x, d, k: m.sum(x, dim=d, keepdim=k), ALL),
    "sum_method": (lambda m, x, d, k: x.sum(d, k) if d is not None else x.sum(), ALL),
    "mean": (lambda m, x, d, k: m.mean(x, dim=d, keepdim=k) if d is not None else x.mean(), NUMERIC),
    "amax": (lambda m, x, d, k: m.amax(x, dim=d, keepdim=k) if d is not None else m.amax(x), ALL),
    "amin": (lambda m, x, d, k: x.amin(dim=d, keepdim=k) if d is not None else x.amin(), ALL),
    "var": (lambda m, x, d, k: m.var(x, dim=d, keepdim=k) if d is not None else x.var(), FLOATS),
    "var_biased": (lambda m, x, d, k: x.var(dim=d, unbiased=False, keepdim=k), FLOATS),
    "var_correction": (lambda m, x, d, k: m.var(x, dim=d, correction=0, keepdim=k), FLOATS),
    "std": (lambda m, x, d, k: m.std(x, dim=d, keepdim=k) if d is not None else x.std(), FLOATS),
    "logsumexp": (lambda m, x, d, k: m.logsumexp(x, dim=d if d is not None else tuple(range(x.ndim)), keepdim=k),
                  NUMERIC),
    "prod": (lambda m, x, d, k: m.prod(x) if not isinstance(d, int) else x.prod(d, keepdim=k), ALL),
    "max_dim": (lambda m, x, d, k: m.max(x) if not isinstance(d, int) else tuple(m.max(x, d, keepdim=k)), ALL),
    "min_dim": (lambda m, x, d, k: x.min() if not isinstance(d, int) else tuple(x.min(dim=d, keepdim=k)), NUMERIC),
    "argmax": (lambda m, x, d, k: m.argmax(x, dim=d if isinstance(d, int) else None, keepdim=k), NUMERIC),
    "argmin": (lambda m, x, d, k: x.argmin(d if isinstance(d, int) else None, k), NUMERIC),
    "any": (lambda m, x, d, k: m.any(x, dim=d, keepdim=k) if isinstance(d, int) else m.any(x), ALL),
    "all": (lambda m, x, d, k: m.all(x, dim=d, keepdim=k) if isinstance(d, int) else x.all(), ALL),
}


@st.composite
def dims(draw, ndim):
    """None, an int (maybe negative) or a tuple of distinct dims."""
    n = max(ndim, 1)
    one = st.integers(-n, n - 1)
    if ndim == 0:
        return draw(st.one_of(st.none(), one))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(one)
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@pytest.mark.parametrize("name", sorted(REDUCE))
@EXAMPLES
@given(shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), data=st.data())
def test_reduction(name, shape, data):
    f, dtypes = REDUCE[name]
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    d = data.draw(dims(len(shape)), label="dim")
    keepdim = data.draw(st.booleans(), label="keepdim")
    ties = data.draw(st.booleans(), label="ties")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    run_both(lambda m, x: f(m, x, d, keepdim), [rand_array(rng, shape, dtype, ties=ties)])


TIES = np.array([[1.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, -1.0, 2.0]])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "f",
    [
        lambda m, x: m.amax(x, 1),
        lambda m, x: m.amin(x, 0),
        lambda m, x: m.amax(x),
        lambda m, x: x.max(),
        lambda m, x: x.min(),
        lambda m, x: m.max(x, 1),
        lambda m, x: m.min(x, 0, keepdim=True),
        lambda m, x: m.relu(x),
        lambda m, x: m.clamp(x, -1.0, 2.0),
        lambda m, x: m.clamp(x, min=0.0),
        lambda m, x: m.maximum(x, x[:, :1]),
        lambda m, x: m.minimum(x, m.zeros(4, dtype=x.dtype)),
        lambda m, x: m.abs(x),
        lambda m, x: m.prod(x, 1),
        lambda m, x: m.prod(x),
        lambda m, x: m.std(x, 1),
        lambda m, x: m.logsumexp(x, 1),
        lambda m, x: m.argmax(x, 1),
    ],
    ids=["amax1", "amin0", "amax_all", "max_all", "min_all", "max_dim", "min_dim_keep", "relu", "clamp",
         "clamp_min0", "maximum_col", "minimum_zero", "abs", "prod1", "prod_all", "std_const_row", "logsumexp",
         "argmax"],
)
def test_ties_forward_and_grad(f, dtype):
    """Gradients at ties and kinks follow PyTorch's conventions exactly."""
    run_both(f, [TIES.astype(dtype)])


def test_prod_gradient_with_zeros():
    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 3.0]])
    run_both(lambda m, x: m.prod(x, 1), [x])
    run_both(lambda m, x: m.prod(x, 0, keepdim=True), [x])


SPECIAL = np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 1e-30, 88.0, -100.0, 5.0]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values_forward(dtype):
    """inf, nan, signed zeros and extremes give PyTorch's values (sign(nan) = 0, NaN bounds, ...)."""
    x = SPECIAL.astype(dtype)
    for name, (f, _, dtypes) in sorted(UNARY.items()):
        if dtype in dtypes:
            run_both(f, [x], grad=False)
    for name, (f, dtypes) in sorted(REDUCE.items()):
        if dtype in dtypes:
            for d in (None, 0, 1):
                run_both(lambda m, x: f(m, x, d, False), [x], grad=False)
    for name, (f, _, _) in sorted(BINARY.items()):
        run_both(f, [x, x.T.copy()], grad=False)


@pytest.mark.parametrize("name", ["maximum", "minimum", "max_binary", "min_binary", "where", "add", "mul", "div"])
def test_special_values_gradient(name):
    """Gradients with inf and nan operands, including ties between infinities and NaN results."""
    run_both(BINARY[name][0], [SPECIAL, SPECIAL.T.copy()])


# ---------------------------------------------------------------- matmul family
MATMUL_SHAPES = [
    ((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((0, 3), (3, 2)), ((2, 0), (0, 3)),
    ((4, 2, 3), (3, 5)), ((2, 3), (4, 3, 5)), ((3,), (4, 3, 2)), ((4, 2, 3), (3,)), ((2, 1, 2, 3), (5, 3, 2)),
    ((1, 2, 3), (4, 3, 1)), ((2, 3), (4, 3)), ((3,), (2,)), ((2, 2, 3), (3, 3, 1)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul(sa, sb, dtype):
    rng = np.random.default_rng(len(sa) * 7 + len(sb))
    a, b = rand_array(rng, sa, dtype), rand_array(rng, sb, dtype)
    run_both(lambda m, x, y: m.matmul(x, y), [a, b])
    run_both(lambda m, x, y: x @ y, [a, b])


@pytest.mark.parametrize("f,sa,sb", [
    (lambda m, a, b: m.mm(a, b), (2, 3), (3, 4)),
    (lambda m, a, b: a.mm(b), (2, 3), (2, 4)),
    (lambda m, a, b: m.bmm(a, b), (2, 2, 3), (2, 3, 4)),
    (lambda m, a, b: m.bmm(a, b), (2, 2, 3), (3, 3, 4)),
    (lambda m, a, b: m.bmm(a, b), (2, 3), (3, 4)),
    (lambda m, a, b: m.mm(a, b), (2, 2, 3), (3, 4)),
    (lambda m, a, b: m.dot(a, b), (3,), (3,)),
    (lambda m, a, b: m.outer(a, b), (3,), (2,)),
    (lambda m, a, b: a.T @ b, (3, 2), (3, 4)),
    (lambda m, a, b: a.mT @ b, (2, 3, 2), (3, 4)),
])
def test_mm_bmm(f, sa, sb):
    rng = np.random.default_rng(0)
    run_both(f, [rand_array(rng, sa), rand_array(rng, sb)])


# ---------------------------------------------------------------- shape ops
SHAPE_OPS = [
    ("T", (2, 3), lambda m, x: x.T),
    ("T3", (2, 3, 4), lambda m, x: x.permute(2, 1, 0)),
    ("transpose", (2, 3, 4), lambda m, x: m.transpose(x, 0, -1)),
    ("transpose_method", (2, 3), lambda m, x: x.transpose(1, 0)),
    ("transpose_same", (2, 3), lambda m, x: x.transpose(1, 1) * 2),
    ("t", (2, 3), lambda m, x: m.t(x)),
    ("permute", (2, 3, 4), lambda m, x: m.permute(x, (1, 2, 0))),
    ("permute_neg", (2, 3, 4), lambda m, x: x.permute(-1, 0, 1)),
    ("reshape", (2, 3, 4), lambda m, x: m.reshape(x, (4, 6))),
    ("reshape_infer", (2, 3, 4), lambda m, x: x.reshape(-1, 2)),
    ("reshape_args", (2, 3, 4), lambda m, x: x.reshape(3, -1, 2)),
    ("reshape_0d", (1, 1), lambda m, x: x.reshape(())),
    ("reshape_from_0d", (), lambda m, x: x.reshape(1, 1)),
    ("reshape_empty", (0, 3), lambda m, x: x.reshape(3, 0, -1)),
    ("view", (2, 3, 4), lambda m, x: x.view(6, 4)),
    ("view_infer", (2, 3, 4), lambda m, x: x.view(-1)),
    ("view_as", (2, 3, 4), lambda m, x: x.view_as(m.zeros(4, 6))),
    ("flatten", (2, 3, 4), lambda m, x: m.flatten(x)),
    ("flatten_1", (2, 3, 4), lambda m, x: x.flatten(1)),
    ("flatten_mid", (2, 3, 4, 1), lambda m, x: x.flatten(1, 2)),
    ("flatten_0d", (), lambda m, x: x.flatten()),
    ("squeeze", (1, 3, 1, 2), lambda m, x: m.squeeze(x)),
    ("squeeze_dim", (1, 3, 1, 2), lambda m, x: x.squeeze(2)),
    ("squeeze_neg", (1, 3, 1, 2), lambda m, x: x.squeeze(-2)),
    ("squeeze_non1", (1, 3, 1, 2), lambda m, x: x.squeeze(1)),
    ("squeeze_tuple", (1, 3, 1, 2), lambda m, x: x.squeeze((0, 2))),
    ("unsqueeze", (2, 3), lambda m, x: m.unsqueeze(x, 0)),
    ("unsqueeze_end", (2, 3), lambda m, x: x.unsqueeze(-1)),
    ("unsqueeze_mid", (2, 3), lambda m, x: x.unsqueeze(1)),
    ("unsqueeze_0d", (), lambda m, x: x.unsqueeze(0)),
    ("expand", (3, 1), lambda m, x: x.expand(2, 3, 4)),
    ("expand_keep", (3, 1), lambda m, x: x.expand(-1, 5)),
    ("expand_tuple", (1,), lambda m, x: m.broadcast_to(x, (2, 3))),
    ("expand_as", (1, 3), lambda m, x: x.expand_as(m.zeros(2, 3))),
    ("repeat", (2, 3), lambda m, x: x.repeat(2, 1, 3)),
    ("split_int", (5, 2), lambda m, x: m.split(x, 2)),
    ("split_list", (5, 2), lambda m, x: x.split([1, 4])),
    ("split_dim", (2, 5), lambda m, x: m.split(x, [2, 0, 3], dim=1)),
    ("split_neg", (2, 5), lambda m, x: x.split(3, -1)),
    ("split_empty", (0, 2), lambda m, x: m.split(x, 2)),
    ("chunk", (5, 2), lambda m, x: m.chunk(x, 2)),
    ("chunk_3", (6, 2), lambda m, x: x.chunk(3, 0)),
    ("chunk_more", (2, 7), lambda m, x: x.chunk(4, 1)),
    ("chunk_4_of_6", (6,), lambda m, x: x.chunk(4)),
    ("unbind", (3, 2), lambda m, x: m.unbind(x, 1)),
    ("movedim", (2, 3, 4), lambda m, x: m.movedim(x, 0, 2)),
    ("cumsum", (2, 3), lambda m, x: m.cumsum(x, 1)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("name,shape,f", SHAPE_OPS, ids=[s[0] for s in SHAPE_OPS])
def test_shape_ops(name, shape, f, dtype):
    rng = np.random.default_rng(1)
    run_both(f, [rand_array(rng, shape, dtype)])


CAT_CASES = [
    ("cat0", [(2, 3), (1, 3), (4, 3)], lambda m, *xs: m.cat(xs)),
    ("cat1", [(2, 3), (2, 1)], lambda m, *xs: m.cat(list(xs), dim=1)),
    ("cat_neg", [(2, 3, 1), (2, 3, 2)], lambda m, *xs: m.cat(xs, -1)),
    ("cat_empty_part", [(2, 3), (0, 3)], lambda m, *xs: m.cat(xs)),
    ("cat_legacy_empty", [(2, 3), (0,)], lambda m, *xs: m.cat(xs)),
    ("cat_single", [(2, 3)], lambda m, *xs: m.cat(xs, 1)),
    ("concat", [(2,), (3,)], lambda m, *xs: m.concat(xs)),
    ("cat_bad", [(2, 3), (2, 4)], lambda m, *xs: m.cat(xs)),
    ("stack0", [(2, 3), (2, 3)], lambda m, *xs: m.stack(xs)),
    ("stack_last", [(2, 3), (2, 3), (2, 3)], lambda m, *xs: m.stack(xs, -1)),
    ("stack_mid", [(2, 3), (2, 3)], lambda m, *xs: m.stack(list(xs), 1)),
    ("stack_0d", [(), ()], lambda m, *xs: m.stack(xs)),
    ("stack_bad", [(2, 3), (3, 2)], lambda m, *xs: m.stack(xs)),
]


@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float32", "float32"), ("float32", "float64"),
                                    ("int64", "float32"), ("bool", "int64")])
@pytest.mark.parametrize("name,shapes,f", CAT_CASES, ids=[c[0] for c in CAT_CASES])
def test_cat_stack(name, shapes, f, dtypes):
    rng = np.random.default_rng(2)
    arrays = [rand_array(rng, s, dtypes[i % 2]) for i, s in enumerate(shapes)]
    run_both(f, arrays)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather(dim, dtype):
    rng = np.random.default_rng(3)
    x = rand_array(rng, (3, 4), dtype)
    idx = rng.integers(0, x.shape[dim], size=(2, 3) if dim == 0 else (3, 5))
    run_both(lambda m, x, i: m.gather(x, dim, i), [x, idx])
    run_both(lambda m, x, i: x.gather(dim, i), [x, idx])
    dup = np.zeros((3, 4), np.int64)  # every element gathers index 0: gradients accumulate
    run_both(lambda m, x, i: m.gather(x, dim, i), [x, dup])


# ---------------------------------------------------------------- in-place ops (forward values, versions, gradients)
INPLACE = [
    ("add_", lambda m, x, y: x.add_(y)),
    ("add_alpha", lambda m, x, y: x.add_(y, alpha=-0.5)),
    ("sub_", lambda m, x, y: x.sub_(y)),
    ("mul_", lambda m, x, y: x.mul_(y)),
    ("div_", lambda m, x, y: x.div_(y.abs() + 1)),
    ("mul_scalar", lambda m, x, y: x.mul_(3)),
    ("iadd", lambda m, x, y: x.__iadd__(y)),
    ("isub", lambda m, x, y: x.__isub__(y)),
    ("imul", lambda m, x, y: x.__imul__(y)),
    ("itruediv", lambda m, x, y: x.__itruediv__(2)),
    ("zero_", lambda m, x, y: x.zero_()),
    ("fill_", lambda m, x, y: x.fill_(2.5)),
    ("copy_", lambda m, x, y: x.copy_(y)),
    ("copy_bcast", lambda m, x, y: x.copy_(y[0])),
    ("clamp_", lambda m, x, y: x.clamp_(-0.5, 0.5)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,f", INPLACE, ids=[c[0] for c in INPLACE])
def test_inplace_forward(name, f, dtype):
    rng = np.random.default_rng(4)
    xa, ya = rand_array(rng, (3, 4), dtype), rand_array(rng, (3, 4), dtype)
    xg, yg = gradc.tensor(xa.copy()), gradc.tensor(ya.copy())
    xt, yt = torch.tensor(xa.copy()), torch.tensor(ya.copy())
    rg, rt = f(gradc, xg, yg), f(torch, xt, yt)
    assert rg is xg  # in-place ops return self
    assert_same(xg, xt)
    assert_same(rg, rt)


@pytest.mark.parametrize("name,f", INPLACE, ids=[c[0] for c in INPLACE])
def test_inplace_on_nonleaf_gradient(name, f):
    """An in-place op on a computed tensor takes part in autograd as in PyTorch."""

    def g(m, x, y):
        h = x * 1.5
        f(m, h, y)
        return h * x

    rng = np.random.default_rng(5)
    run_both(g, [rand_array(rng, (3, 4)), rand_array(rng, (3, 4))])


def test_inplace_int_tensor_with_float_result_raises():
    x = gradc.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast"):
        x.add_(0.5)
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2, 3]).add_(0.5)
    x.add_(2)
    assert x.tolist() == [3, 4, 5]
