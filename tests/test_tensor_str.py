"""Printed tensors match PyTorch's repr character for character (with `gradc.` for `torch.`)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradc
from gradc.ir.graph import Value
from gradc._tensor_str import get_printoptions, printoptions

torch = pytest.importorskip("torch")

NAN, INF = math.nan, math.inf


def expected(t):
    return repr(t).replace("torch.", "gradc.")


def check(arr, requires_grad=False):
    """gradc and torch tensors made from the same array print the same."""
    arr = np.asarray(arr)
    g = gradc.tensor(arr.copy(), requires_grad=requires_grad)
    t = torch.tensor(arr.copy(), requires_grad=requires_grad)
    assert repr(g) == expected(t)
    assert str(g) == repr(g)


@pytest.fixture
def torch_options():
    """Restore both libraries' print options after a test changes them."""
    yield
    torch.set_printoptions(profile="default")
    gradc.set_printoptions(profile="default")


def _rng(seed):
    return np.random.default_rng(seed)


F32, F64 = np.float32, np.float64
CASES = {
    "seed 2-d int": np.array([[1, 2], [3, 4]]),
    "seed int + 1": np.array([[2, 3], [4, 5]]),
    "seed grad": np.array([2.0, 4.0, 6.0], F32),
    "0-d float": np.array(3.5, F32),
    "0-d int-valued": np.array(3.0, F32),
    "0-d float64": np.array(-2.25, F64),
    "0-d int64": np.array(7),
    "0-d int32": np.array(-7, np.int32),
    "0-d bool": np.array(True),
    "0-d nan": np.array(NAN, F32),
    "0-d -inf": np.array(-INF, F64),
    "0-d tiny": np.array(1e-20, F32),
    "0-d negative zero": np.array(-0.0, F32),
    "empty 1-d": np.array([], F32),
    "empty 1-d float64": np.array([], F64),
    "empty 1-d int64": np.array([], np.int64),
    "empty 2-d": np.zeros((0, 3), F32),
    "empty 3-d bool": np.zeros((2, 0, 3), bool),
    "empty int32": np.zeros((4, 0), np.int32),
    "float64 suffix": np.array([1.5, 2.5], F64),
    "int32 suffix": np.array([1, -2], np.int32),
    "bool": np.array([[True, False], [False, True]]),
    "int64 extremes": np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max]),
    "int32 widths": np.array([1, -100000, 22], np.int32),
    "precision 4": np.array([1.23456789, -0.5, 1 / 3], F32),
    "rounds to ints": np.array([0.99999, 2.00001], F64),
    "sci by ratio": np.array([1.0, 1001.0], F32),
    "no sci at ratio 1000": np.array([1.5, 1500.0], F64),
    "sci by size": np.array([1.5e8, 2.0e8], F32),
    "sci by smallness": np.array([5e-5, 6e-5], F32),
    "1e-4 in float32 is below 1e-4": np.array([1e-4], F32),
    "1e-4 in float64": np.array([1e-4, 2e-4], F64),
    "int-valued huge": np.array([1e10, 2.0, 3.0], F32),
    "int-valued negative": np.array([-1.0, 0.0, 10.0], F32),
    "nan inf int mode": np.array([NAN, INF, -INF, 2.0], F32),
    "nan inf frac": np.array([NAN, INF, -INF, 2.5], F64),
    "nan inf sci": np.array([NAN, INF, 1e-9, 2.5], F64),
    "only nonfinite and zeros": np.array([NAN, 0.0, -0.0, INF], F32),
    "negative zero frac": np.array([-0.0, 1.5, -1.5], F32),
    "negative zero int": np.array([-0.0, 1.0], F32),
    "negative zero sci": np.array([-0.0, 1e-7], F64),
    "all zeros": np.zeros((2, 3), F32),
    "float64 extremes": np.array([1e308, -1e-308, 5e-324], F64),
    "float32 extremes": np.array([3.4e38, 1.2e-38, 1e-45], F32),
    "wrap 1-d": np.arange(100, dtype=F32) / 7,
    "wrap 1-d int": np.arange(-60, 60),
    "wrap 2-d": _rng(0).standard_normal((3, 30)),
    "3-d blank lines": _rng(1).standard_normal((2, 3, 4)).astype(F32),
    "4-d": _rng(2).integers(-9, 10, (2, 2, 2, 3)),
    "summarize 1-d": np.arange(1001, dtype=F32),
    "summarize 1-d int": np.arange(5000),
    "summarize 2-d": _rng(3).standard_normal((40, 50)).astype(F32),
    "summarize wide rows": _rng(4).standard_normal((5, 400)),
    "summarize tall": _rng(5).standard_normal((1001, 1)).astype(F32),
    "summarize 3-d": _rng(6).integers(0, 100, (12, 10, 11)),
    "summarize formats only edges": np.concatenate([np.ones(500), [1e30] * 5, np.ones(500)]),
    "1000 elements not summarized": np.arange(1000, dtype=F64).reshape(10, 100),
    "single column": np.arange(5, dtype=F32).reshape(5, 1),
    "size-1 dims": np.array([[[0.5]]], F32),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_torch(name):
    check(CASES[name])


@pytest.mark.parametrize("name", ["seed grad", "0-d float", "float64 suffix", "empty 2-d", "wrap 2-d", "summarize 2-d"])
def test_requires_grad_suffix(name):
    check(CASES[name], requires_grad=True)


def test_seed_outputs():
    assert repr(gradc.tensor([[1, 2], [3, 4]])) == "tensor([[1, 2],\n        [3, 4]])"
    assert str(gradc.tensor([1.0, 2.0, 3.0]) * 2) == "tensor([2., 4., 6.])"


def test_suffix_moves_to_next_line_when_too_long():
    arr = np.arange(14, dtype=F64) + 0.5  # one full line of values, then the suffixes
    check(arr, requires_grad=True)
    assert "],\n       dtype=torch.float64" in repr(torch.tensor(arr))  # the case does exercise the wrap


@pytest.mark.parametrize("op", [lambda x: x * 2, lambda x: x.exp()])
def test_grad_fn_suffix_same_as_torch(op):
    arr = np.linspace(-1, 1, 20)
    gx, tx = gradc.tensor(arr, requires_grad=True), torch.tensor(arr, requires_grad=True)
    gy, ty = op(gx), op(tx)
    torch_name = type(ty.grad_fn).__name__
    assert repr(gy) == expected(ty).replace(torch_name, gy.grad_fn.name)
    assert gy.grad_fn.name == torch_name


@pytest.mark.parametrize("op", [lambda x: x.sum(), lambda x: x.mean(), lambda x: gradc.softmax(x, 0)])
def test_grad_fn_suffix_names_the_node(op):
    gy = op(gradc.tensor([0.25, 0.5], requires_grad=True))
    assert repr(gy).endswith(f", grad_fn=<{gy.grad_fn.name}>)")
    assert "requires_grad" not in repr(gy)


def test_detached_and_no_grad_print_no_autograd_suffix():
    x = gradc.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x.detach()) == expected(torch.tensor([1.0, 2.0]))
    with gradc.no_grad():
        assert repr(x * 2) == expected(torch.tensor([2.0, 4.0]))


def test_symbolic_tensor_prints_its_type():
    t = gradc.Tensor._wrap(Value("x", gradc.float32, (2, 3)))
    assert repr(t) == "tensor(<symbolic f32[2, 3]>)"
    s = gradc.Tensor._wrap(Value("s", gradc.int64, ()))
    assert str(s) == "tensor(<symbolic i64[]>)"


def test_default_dtype_float64_moves_the_suffix():
    old_t, old_g = torch.get_default_dtype(), gradc.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    gradc.set_default_dtype(gradc.float64)
    try:
        for arr in (np.array([1.5, 2.0], F32), np.array([1.5, 2.0], F64), np.array([], F64), np.zeros((0, 2), F32)):
            check(arr)
    finally:
        torch.set_default_dtype(old_t)
        gradc.set_default_dtype(old_g)


def test_printoptions_context_restores(torch_options):
    before = get_printoptions()
    with printoptions(precision=2, sci_mode=True):
        assert repr(gradc.tensor([1.2345])) == "tensor([1.23e+00])"
    assert get_printoptions() == before


@pytest.mark.parametrize("profile", ["short", "full", "default"])
def test_profiles(profile, torch_options):
    torch.set_printoptions(profile=profile)
    gradc.set_printoptions(profile=profile)
    check(CASES["summarize 2-d"])
    check(CASES["precision 4"])


# ---------------------------------------------------------------- property tests

@st.composite
def shapes(draw, max_dims=4, max_elements=6000):
    """Up to 4 dims, 0-sized ones included, sometimes long enough to be summarized."""
    shape, room = [], max_elements
    for _ in range(draw(st.integers(0, max_dims))):
        side = draw(st.one_of(st.integers(0, 6), st.integers(0, max(0, room))))
        side = min(side, room)
        shape.append(side)
        room = room // side if side else max_elements
    return tuple(shape)


def signed(s):
    return st.tuples(s, st.booleans()).map(lambda p: -p[0] if p[1] else p[0])


FLOAT_KINDS = {
    "ints": st.integers(-(10**6), 10**6).map(float),
    "small": st.floats(-100, 100),
    "huge": signed(st.floats(1e7, 1e38)),
    "tiny": signed(st.floats(1e-30, 1e-3)),
    "specials": st.sampled_from([0.0, -0.0, NAN, INF, -INF, 1.0, -1.0]),
    "anything": st.floats(allow_nan=True, allow_infinity=True),
}
FLOAT_KINDS["mixed"] = st.one_of(*FLOAT_KINDS.values())
INT_KINDS = {
    "int32": [st.integers(-20, 20), st.integers(-(2**31), 2**31 - 1)],
    "int64": [st.integers(-20, 20), st.integers(-(2**63), 2**63 - 1)],
}


@st.composite
def arrays(draw):
    shape = draw(shapes())
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "int32", "bool"]))
    if dtype == "bool":
        return draw(hnp.arrays(bool, shape))
    if dtype in INT_KINDS:
        return draw(hnp.arrays(dtype, shape, elements=draw(st.sampled_from(INT_KINDS[dtype]))))
    kind = draw(st.sampled_from(sorted(FLOAT_KINDS)))
    a = draw(hnp.arrays(np.float64, shape, elements=FLOAT_KINDS[kind]))
    with np.errstate(over="ignore"):
        return a.astype(dtype)


@settings(max_examples=150, deadline=None)
@given(arrays(), st.booleans())
def test_matches_torch_property(arr, requires_grad):
    check(arr, requires_grad and arr.dtype.kind == "f")


@settings(max_examples=40, deadline=None)
@given(
    arrays(),
    st.integers(0, 8),
    st.sampled_from([0, 5, 30, 1000]),
    st.integers(0, 4),
    st.integers(10, 120),
    st.sampled_from([None, True, False]),
)
def test_printoptions_match_torch(arr, precision, threshold, edgeitems, linewidth, sci_mode):
    opts = dict(precision=precision, threshold=threshold, edgeitems=edgeitems, linewidth=linewidth, sci_mode=sci_mode)
    torch.set_printoptions(**opts)
    gradc.set_printoptions(**opts)
    try:
        check(arr)
    finally:
        torch.set_printoptions(profile="default")
        gradc.set_printoptions(profile="default")
