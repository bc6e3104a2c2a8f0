"""Indexing and index assignment against PyTorch, forward and gradient:
ints, slices with steps, None, ..., boolean masks, integer lists/arrays/tensors
and their combinations (advanced indices adjacent or separated)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradc
from helpers import assert_same, compare

torch = pytest.importorskip("torch")


def make_key(m, recipe):
    """Materialise an index recipe for module m (gradc or torch)."""
    out = []
    for kind, v in recipe:
        if kind == "tensor":
            out.append(m.tensor(v))
        elif kind == "list":
            out.append(list(v))
        elif kind == "ndarray":
            out.append(np.asarray(v))
        elif kind == "mask":
            out.append(m.tensor(v))
        else:
            out.append(v)
    return tuple(out) if len(out) != 1 else out[0]


@st.composite
def index_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    recipe, axis, used_ellipsis, n_adv = [], 0, False, 0
    n_items = draw(st.integers(1, len(shape) + 1))
    for _ in range(n_items):
        choices = ["none"] + (["ellipsis"] if not used_ellipsis else [])
        if axis < len(shape):
            choices += ["int", "slice", "slice", "list", "tensor", "ndarray", "mask"]
        kind = draw(st.sampled_from(choices))
        n = shape[axis] if axis < len(shape) else 0
        if kind == "none":
            recipe.append(("raw", None))
        elif kind == "ellipsis":
            recipe.append(("raw", Ellipsis))
            used_ellipsis = True
            axis = len(shape)  # conservatively: later items index nothing but None
        elif kind == "int":
            recipe.append(("raw", draw(st.integers(-n, n - 1))))
            axis += 1
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-n - 1, n + 1)))
            stop = draw(st.one_of(st.none(), st.integers(-n - 1, n + 1)))
            step = draw(st.one_of(st.none(), st.integers(1, 3)))
            recipe.append(("raw", slice(start, stop, step)))
            axis += 1
        elif kind == "mask":
            k = draw(st.integers(1, min(2, len(shape) - axis)))
            mask = np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape[axis:axis + k])),
                                          max_size=int(np.prod(shape[axis:axis + k]))))).reshape(shape[axis:axis + k])
            recipe.append(("mask", mask))
            axis += k
            n_adv += 1
        else:
            size = draw(st.integers(0, 3)) if n_adv == 0 else 2  # advanced indices broadcast together
            vals = draw(st.lists(st.integers(-n, n - 1), min_size=size, max_size=size))
            recipe.append((kind, np.array(vals, dtype=np.int64)))
            axis += 1
            n_adv += 1
    # several masks / index arrays must broadcast against each other: keep only compatible cases
    return shape, recipe


def _run_index(shape, recipe, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    try:
        ref = torch.tensor(x)[make_key(torch, recipe)]
    except (IndexError, RuntimeError, ValueError) as e:
        with pytest.raises(type(e)):
            gradc.tensor(x)[make_key(gradc, recipe)]
        return
    del ref
    compare(torch, lambda t: t[make_key(gradc, recipe)], lambda t: t[make_key(torch, recipe)], x)


@settings(max_examples=150, deadline=None)
@given(case=index_cases(), dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 1000))
def test_getitem_matches_torch(case, dtype, seed):
    shape, recipe = case
    _run_index(shape, recipe, dtype, seed)


X = np.arange(60.0).reshape(3, 4, 5)
GETITEM = [
    ("int", lambda x: x[1]),
    ("neg_int", lambda x: x[-1]),
    ("int_int", lambda x: x[1, -2]),
    ("int_int_int", lambda x: x[2, 3, 4]),
    ("slice", lambda x: x[1:]),
    ("slice_step", lambda x: x[::2]),
    ("slice_step_mid", lambda x: x[:, 1:4:2]),
    ("slice_out_of_range", lambda x: x[5:10]),
    ("slice_neg", lambda x: x[-2:, :-1]),
    ("none", lambda x: x[None]),
    ("none_mid", lambda x: x[:, None, 1]),
    ("ellipsis", lambda x: x[..., 2]),
    ("ellipsis_mid", lambda x: x[0, ..., 1:3]),
    ("ellipsis_none", lambda x: x[..., None]),
    ("mask_full", lambda x: x[x > 30]),
    ("mask_first_dims", lambda x: x[x.sum(2) > 100]),
    ("mask_dim0", lambda x: x[x[:, 0, 0] > 10]),
    ("mask_after_slice", lambda x: x[:, x[0, :, 0] > 6]),
    ("list", lambda x: x[[0, 2, 2]]),
    ("list_neg", lambda x: x[[-1, 0]]),
    ("tensor_idx", lambda x: x[IDX(x, [2, 0])]),
    ("tensor_2d_idx", lambda x: x[IDX(x, [[0, 1], [2, 2]])]),
    ("ndarray_idx", lambda x: x[np.array([1, 1, 0])]),
    ("two_adjacent", lambda x: x[[0, 2], [1, 3]]),
    ("adjacent_after_slice", lambda x: x[:, [0, 3], [1, 4]]),
    ("separated", lambda x: x[[0, 2], :, [1, 4]]),
    ("int_and_list", lambda x: x[1, [0, 3]]),
    ("int_and_list_separated", lambda x: x[[0, 1], 2, [1, 4]]),
    ("int_slice_list", lambda x: x[1, :, [0, 3]]),  # PyTorch applies the int first; NumPy would not
    ("list_slice_int", lambda x: x[[0, 2], 1:3, 2]),
    ("int_none_tensor", lambda x: x[0, None, IDX(x, [1, 2])]),
    ("mask_slice_int", lambda x: x[IDX(x, [1, 0, 1]) > 0, :, 3]),
    ("broadcast_idx", lambda x: x[IDX(x, [[0], [2]]), IDX(x, [1, 3])]),
    ("list_slice_step", lambda x: x[[2, 0], ::2]),
    ("0d_tensor_idx", lambda x: x[IDX(x, 1)]),
    ("empty_list", lambda x: x[IDX(x, np.zeros(0, np.int64))]),
    ("duplicates_grad", lambda x: x[[1, 1, 1], [0, 0, 2]]),
]


def IDX(x, v):
    """An int64 index tensor of the same library as x."""
    return (gradc if isinstance(x, gradc.Tensor) else torch).tensor(np.asarray(v, dtype=np.int64))


@pytest.mark.parametrize("name,f", GETITEM, ids=[c[0] for c in GETITEM])
def test_getitem_cases(name, f):
    compare(torch, f, f, X)


def test_getitem_whole_tensor_and_views():
    x = gradc.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x[:]
    assert y.shape == x.shape
    (y * 2).sum().backward()
    assert x.grad.tolist() == [[2.0, 2.0], [2.0, 2.0]]


@pytest.mark.parametrize("key", [3, (0, 5), -4, (0, 0, 0, 0), (slice(None), [0, 7])],
                         ids=["row", "col", "neg", "too_many", "list"])
def test_getitem_errors(key):
    with pytest.raises(Exception) as et:
        torch.zeros(3, 4, 5)[key]
    with pytest.raises(type(et.value)):
        gradc.zeros(3, 4, 5)[key]


def test_float_index_and_negative_step_rejected():
    for m in (gradc, torch):
        x = m.zeros(3)
        with pytest.raises(IndexError):
            x[m.tensor([0.0])]
        with pytest.raises(ValueError):
            x[::-1]


def test_mask_shape_mismatch_error():
    for m in (gradc, torch):
        with pytest.raises(IndexError):
            m.zeros(3, 4)[m.tensor([True, False])]


# ---------------------------------------------------------------- assignment
SETITEM = [
    ("int_scalar", lambda m, x, v: x.__setitem__(1, 5.0)),
    ("slice_scalar", lambda m, x, v: x.__setitem__((slice(None), slice(0, 4, 2)), -1.0)),
    ("int_tensor", lambda m, x, v: x.__setitem__(0, v[1])),
    ("slice_broadcast", lambda m, x, v: x.__setitem__(slice(1, 3), v[0])),
    ("mask_scalar", lambda m, x, v: x.__setitem__(x > 0, 0.0)),
    ("mask_values", lambda m, x, v: x.__setitem__(x > 0.5, v[x > 0.5].detach() * 0 + 3)),
    ("list_rows", lambda m, x, v: x.__setitem__([2, 0], v[:2])),
    ("tensor_idx", lambda m, x, v: x.__setitem__((m.tensor([0, 2]), m.tensor([1, 3])), m.tensor([7.0, 8.0],
                                                 dtype=x.dtype))),
    ("ellipsis_col", lambda m, x, v: x.__setitem__((Ellipsis, 1), v[:, 2])),
    ("none_scalar_0d", lambda m, x, v: x.__setitem__((1, 2), m.tensor(4.0, dtype=x.dtype))),
    ("int_value", lambda m, x, v: x.__setitem__(2, 3)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,f", SETITEM, ids=[c[0] for c in SETITEM])
def test_setitem_forward_and_gradient(name, f, dtype):
    rng = np.random.default_rng(0)
    xa, va = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)

    def run(m, x, v):
        y = x * 1.0  # a non-leaf copy (a leaf requiring grad cannot be written in place)
        f(m, y, v)
        return y * x

    compare(torch, lambda x, v: run(gradc, x, v), lambda x, v: run(torch, x, v), xa, va)


def test_setitem_with_int_and_separated_tensor_index():
    rng = np.random.default_rng(1)

    def run(m, x, v):
        y = x * 1.0
        y[1, :, [0, 3]] = v
        return y * x

    compare(torch, lambda x, v: run(gradc, x, v), lambda x, v: run(torch, x, v),
            rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 2)))


@pytest.mark.parametrize("dtype", ["int64", "bool", "float32"])
def test_setitem_without_grad(dtype):
    a = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    val = True if dtype == "bool" else 9
    g, t = gradc.tensor(a), torch.tensor(a)
    for x in (g, t):
        x[1] = val
        x[:, [0, 3]] = val
        x[x == val] = val
        x[0, 0] = 0
    assert_same(g, t)


def test_setitem_casts_value_to_tensor_dtype():
    for m in (gradc, torch):
        x = m.zeros(3, dtype=m.int64)
        x[0] = 2.7
        x[1:] = m.tensor([1.9, -1.9])
        assert x.dtype == m.int64 and x.tolist() == [2, 1, -1]


def test_setitem_shape_mismatch_raises():
    for m in (gradc, torch):
        with pytest.raises(RuntimeError):
            m.zeros(3, 4)[0] = m.ones(3)
