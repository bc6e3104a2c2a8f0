"""PyTorch's type promotion: tensors with dimensions, 0-d tensors and Python
scalars, across categories (bool < integer < floating), checked against torch."""
import itertools

import numpy as np
import pytest

import gradc
from helpers import assert_same

torch = pytest.importorskip("torch")

DTYPES = ["bool", "int32", "int64", "float32", "float64"]
SAMPLE = {"bool": [True, False], "int32": [3, -2], "int64": [5, 2], "float32": [1.5, -0.25], "float64": [2.25, 0.5]}


def _operand(m, kind):
    """kind: ('dim', dtype) | ('0d', dtype) | ('py', value)."""
    how, what = kind
    if how == "py":
        return what
    data = SAMPLE[what] if how == "dim" else SAMPLE[what][0]
    return m.tensor(data, dtype=getattr(m, what))


KINDS = ([("dim", d) for d in DTYPES] + [("0d", d) for d in DTYPES]
         + [("py", v) for v in (True, 2, -3, 1.5)])
PAIRS = [(a, b) for a, b in itertools.product(KINDS, KINDS) if not (a[0] == "py" and b[0] == "py")]

OPS = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "sub": lambda a, b: a - b,
    "eq": lambda a, b: a == b,
    "lt": lambda a, b: a < b,
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_binary_promotion_table(op):
    f = OPS[op]
    mismatches = []
    for a, b in PAIRS:
        try:
            t = f(_operand(torch, a), _operand(torch, b))
        except RuntimeError:
            with pytest.raises(RuntimeError):
                f(_operand(gradc, a), _operand(gradc, b))
            continue
        g = f(_operand(gradc, a), _operand(gradc, b))
        try:
            assert_same(g, t)
        except AssertionError as e:
            mismatches.append(f"{a} {op} {b}: {e}")
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize("fn", ["maximum", "minimum", "where", "pow", "cat"])
def test_other_ops_promote_like_torch(fn):
    mismatches = []
    dims = [k for k in KINDS if k[0] == "dim"]
    for a, b in itertools.product(dims + [k for k in KINDS if k[0] == "0d"], dims):
        def run(m):
            x, y = _operand(m, a), _operand(m, b)
            if fn == "where":
                return m.where(m.tensor([True, False]), x, y)
            if fn == "pow":
                return m.pow(x, y.abs() if y.dtype != m.bool else y)
            if fn == "cat":
                return m.cat([x.reshape(-1), y])
            return getattr(m, fn)(x, y)

        try:
            t = run(torch)
        except RuntimeError:
            continue
        try:
            assert_same(run(gradc), t)
        except (AssertionError, RuntimeError) as e:
            mismatches.append(f"{fn}({a}, {b}): {e}")
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize("name,f", [
    ("int_div_int", lambda m: m.tensor([1, 2]) / m.tensor([2, 4])),
    ("int_div_scalar", lambda m: m.tensor([3]) / 2),
    ("int_plus_float_scalar", lambda m: m.tensor([1, 2]) + 0.5),
    ("int_times_float_0d", lambda m: m.tensor([1, 2]) * m.tensor(1.5, dtype=m.float64)),
    ("float32_plus_float64_0d", lambda m: m.tensor([1.0]) + m.tensor(2.0, dtype=m.float64)),
    ("float32_0d_plus_float64_0d", lambda m: m.tensor(1.0) + m.tensor(2.0, dtype=m.float64)),
    ("float32_plus_float64", lambda m: m.tensor([1.0]) + m.tensor([2.0], dtype=m.float64)),
    ("int32_plus_int64_0d", lambda m: m.tensor([1], dtype=m.int32) + m.tensor(2)),
    ("bool_plus_bool", lambda m: m.tensor([True]) + m.tensor([True])),
    ("bool_plus_int", lambda m: m.tensor([True, False]) + 1),
    ("bool_times_float", lambda m: m.tensor([True, False]) * 2.5),
    ("compare_gives_bool", lambda m: m.tensor([1.0, 2.0]) > m.tensor([1, 3])),
    ("sum_of_bool_is_long", lambda m: m.tensor([True, True, False]).sum()),
    ("sum_of_int32_is_long", lambda m: m.tensor([1, 2], dtype=m.int32).sum()),
    ("mean_with_dtype", lambda m: m.tensor([1, 2]).mean(dtype=m.float64)),
    ("int_pow_float", lambda m: m.tensor([2, 3]) ** 0.5),
    ("float_scalar_pow_int", lambda m: 2.0 ** m.tensor([1, 2])),
    ("int_scalar_pow_int", lambda m: 2 ** m.tensor([1, 2])),
    ("exp_of_int", lambda m: m.exp(m.tensor([0, 1]))),
    ("sqrt_of_bool", lambda m: m.sqrt(m.tensor([True, False]))),
    ("abs_of_int", lambda m: m.abs(m.tensor([-2, 3]))),
    ("neg_of_int32", lambda m: -m.tensor([2], dtype=m.int32)),
    ("floor_divide", lambda m: m.floor_divide(m.tensor([7, -7]), 2)),
    ("true_divide_bool", lambda m: m.tensor([True]) / m.tensor([True])),
    ("where_scalar_int_tensor", lambda m: m.where(m.tensor([True, False]), m.tensor([1, 2]), 0.5)),
    ("where_two_scalars", lambda m: m.where(m.tensor([True, False]), 1.0, 0.0)),
    ("clamp_int_float_bounds", lambda m: m.clamp(m.tensor([1, 5]), 0.5, 2.5)),
    ("prod_of_int32_is_long", lambda m: m.tensor([2, 3], dtype=m.int32).prod()),
    ("argmax_is_long", lambda m: m.tensor([1.0, 3.0]).argmax()),
    ("double_plus_int_scalar", lambda m: m.tensor([1.0], dtype=m.float64) + 2),
])
def test_promotion_cases(name, f):
    assert_same(f(gradc), f(torch))


def test_float_alpha_with_integer_operands_raises():
    for m in (gradc, torch):
        with pytest.raises(RuntimeError, match="alpha"):
            m.add(m.tensor([5]), m.tensor([2]), alpha=0.5)
        assert m.sub(m.tensor([5]), m.tensor([2]), alpha=2).tolist() == [1]
        assert m.add(m.tensor([5]), m.tensor([2.0]), alpha=0.5).tolist() == [6.0]


def test_matmul_does_not_promote():
    for m in (gradc, torch):
        with pytest.raises(RuntimeError, match="same dtype"):
            m.tensor([[1, 2]]) @ m.tensor([[1.5], [2.0]])
        with pytest.raises(RuntimeError, match="same dtype"):
            m.ones(2, 2) @ m.ones(2, 2, dtype=m.float64)


def test_default_dtype_governs_float_results():
    try:
        gradc.set_default_dtype(gradc.float64)
        assert gradc.tensor([1.0]).dtype is gradc.float64
        assert (gradc.tensor([1, 2]) / 2).dtype is gradc.float64
        assert (gradc.tensor([1, 2]) + 0.5).dtype is gradc.float64
        assert gradc.zeros(2).dtype is gradc.float64
        assert (gradc.tensor([1.0], dtype=gradc.float32) + 0.5).dtype is gradc.float32
    finally:
        gradc.set_default_dtype(gradc.float32)
    assert gradc.get_default_dtype() is gradc.float32
    with pytest.raises(TypeError):
        gradc.set_default_dtype(gradc.int64)


def test_inplace_keeps_dtype_and_refuses_unsafe_casts():
    for m in (gradc, torch):
        x = m.tensor([1.0, 2.0])
        x += m.tensor([1.0, 1.0], dtype=m.float64)
        assert x.dtype == m.float32
        i = m.tensor([1, 2])
        i *= 3
        assert i.dtype == m.int64 and i.tolist() == [3, 6]
        with pytest.raises(RuntimeError):
            i += 0.5
        b = m.tensor([True, False])
        with pytest.raises(RuntimeError):
            b += 1


def test_dtype_objects():
    assert gradc.float is gradc.float32 and gradc.double is gradc.float64 and gradc.long is gradc.int64
    assert gradc.float32.is_floating_point and not gradc.int64.is_floating_point
    assert gradc.float32.itemsize == 4 and gradc.int64.itemsize == 8
    assert repr(gradc.float32) == "gradc.float32"
    assert gradc.tensor([1.0]).element_size() == 4
    assert gradc.tensor([1.0]).is_floating_point() and not gradc.tensor([1]).is_floating_point()
    assert np.dtype(gradc.float64.np) == np.float64
