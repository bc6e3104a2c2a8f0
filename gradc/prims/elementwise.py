"""Elementwise primitives: unary math, binary arithmetic, comparisons, select, convert.

Binary ops broadcast implicitly (NumPy's rules) but require one dtype: the
front end inserts `convert` for PyTorch's type promotion, so every node is
monomorphic. Their vjp rules undo broadcasting with `unbroadcast`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from .registry import Aval, Primitive, ShapeError


def fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def broadcast_shapes(*shapes) -> tuple:
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(-1, -ndim - 1, -1):  # from the last axis, as PyTorch reports mismatches
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            a = next(s for s in shapes if len(s) >= -i and s[i] != 1)
            b = next(s for s in shapes if len(s) >= -i and s[i] not in (1, a[i]))
            raise ShapeError(
                f"shapes {fmt(a)} and {fmt(b)} cannot be broadcast: the size of tensor a ({a[i]}) must "
                f"match the size of tensor b ({b[i]}) at non-singleton dimension {ndim + i}"
            )
        out.append(sizes.pop() if sizes else 1)
    return tuple(out[::-1])


def unbroadcast(g, shape):
    """Sum `g` down to `shape` (the inverse of implicit broadcasting)."""
    from .reduce import reduce_sum
    from .shape import reshape

    if tuple(g.shape) == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1
    )
    r = reduce_sum(g, axes=axes) if axes else g
    return reshape(r, shape=tuple(shape)) if tuple(r.shape) != tuple(shape) else r


def _same_dtype(name, avals, allowed=None):
    ds = {a.dtype for a in avals if a.dtype is not None}
    if len(ds) != 1:
        if not ds:
            raise ShapeError("needs at least one tensor operand")
        raise ShapeError(
            "operands must have one dtype, got " + " and ".join(d.name for d in ds)
        )
    d = ds.pop()
    if allowed == "float" and not d.is_floating_point:
        raise ShapeError(f"needs a floating-point operand, got {d.name}")
    if allowed == "int" and d.is_floating_point:
        raise ShapeError(f"needs a bool or integer operand, got {d.name}")
    return d


def _unary(name, impl, rule, allowed="float", doc=""):
    def shape(x):
        return Aval(tuple(x.shape), _same_dtype(name, [x], allowed))

    return Primitive(name, impl, shape, None if rule is None else (rule,), kind="unary", doc=doc)


def _binary(name, impl, rx=None, ry=None, allowed=None, out_dtype=None, kind="binary"):
    """A broadcasting binary op; its rules get unbroadcast to each operand's shape."""

    def shape(x, y):
        d = _same_dtype(name, [x, y], allowed)
        return Aval(broadcast_shapes(tuple(x.shape), tuple(y.shape)), out_dtype or d)

    def wrap(rule, i):
        def cot(g, *ops, out):
            return unbroadcast(rule(g, *ops, out), ops[i].shape)

        return cot

    vjp = None if rx is None else (wrap(rx, 0), wrap(ry, 1))
    return Primitive(name, impl, shape, vjp, kind=kind)


# ---------------------------------------------------------------- unary
def _sigmoid(x):
    # exp of a non-positive argument only: no overflow warnings, full precision
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _sign(x):
    # as PyTorch: sign(nan) is 0, sign of a bool is itself
    if x.dtype == np.bool_:
        return x.copy()
    return np.sign(x) if x.dtype.kind != "f" else np.where(np.isnan(x), 0, np.sign(x)).astype(x.dtype)


_erf_scalar = np.vectorize(math.erf, otypes=[np.float64])


def _erf(x):
    return _erf_scalar(x).astype(x.dtype, copy=False) if x.size else x.copy()


neg = _unary("neg", np.negative, lambda g, x, out: neg(g), allowed=None)
exp = _unary("exp", np.exp, lambda g, x, out: mul(g, out))
log = _unary("log", np.log, lambda g, x, out: div(g, x))
log1p = _unary("log1p", np.log1p, lambda g, x, out: div(g, add(x, 1.0)))
sqrt = _unary("sqrt", np.sqrt, lambda g, x, out: div(g, mul(out, 2.0)))
abs = _unary("abs", np.abs, lambda g, x, out: mul(g, sign(x)), allowed=None)  # noqa: A001
sign = _unary("sign", _sign, lambda g, x, out: mul(g, 0.0), allowed=None)
sin = _unary("sin", np.sin, lambda g, x, out: mul(g, cos(x)))
cos = _unary("cos", np.cos, lambda g, x, out: neg(mul(g, sin(x))))
tanh = _unary("tanh", np.tanh, lambda g, x, out: mul(g, sub(1.0, mul(out, out))))
sigmoid = _unary("sigmoid", _sigmoid, lambda g, x, out: mul(g, mul(out, sub(1.0, out))))
erf = _unary("erf", _erf, lambda g, x, out: mul(g, mul(exp(neg(mul(x, x))), 2.0 / math.sqrt(math.pi))))
logical_not = _unary("logical_not", np.logical_not, None, allowed="int")


# ---------------------------------------------------------------- binary
def _pow_dx(g, x, y, out):
    # y * x^(y-1), taken as 0 where y == 0 (PyTorch's convention)
    if not hasattr(y, "shape"):
        return mul(g, 0.0) if y == 0 else mul(g, mul(pow(x, y - 1), y))
    return where(eq(y, 0.0), 0.0, mul(g, mul(y, pow(x, sub(y, 1.0)))))


def _pow_dy(g, x, y, out):
    # x^y log x, taken as 0 where x == 0 and y >= 0 (PyTorch's convention)
    if not hasattr(x, "shape"):
        return mul(g, 0.0) if x == 0 else mul(g, mul(out, math.log(x) if x > 0 else math.nan))
    return where(logical_and(eq(x, 0.0), ge(y, 0.0)), 0.0, mul(g, mul(out, log(x))))


def _share(loses, mine):
    """maximum/minimum: PyTorch splits the gradient evenly between equal operands, and
    an operand gets it unless it loses (so both get it where a NaN makes the result)."""

    def rule(g, x, y, out):
        a, b = (x, y) if mine == 0 else (y, x)
        return where(loses(a, b), 0.0, where(eq(a, b), mul(g, 0.5), g))

    return rule


add = _binary("add", np.add, lambda g, x, y, out: g, lambda g, x, y, out: g)
sub = _binary("sub", np.subtract, lambda g, x, y, out: g, lambda g, x, y, out: neg(g))
mul = _binary("mul", np.multiply, lambda g, x, y, out: mul(g, y), lambda g, x, y, out: mul(g, x))
div = _binary(
    "div",
    np.true_divide,
    lambda g, x, y, out: div(g, y),
    lambda g, x, y, out: neg(mul(g, div(out, y))),
    allowed="float",
)
def _pow_impl(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "iu" or y.dtype.kind not in "iu" or not (y < 0).any():
        return np.power(x, y)
    # integer x ** -k truncates as in PyTorch: 1 for x == 1, +-1 for x == -1, 0 otherwise
    neg = y < 0
    r = np.power(x, np.where(neg, 0, y))
    return np.where(neg, np.where(x == 1, 1, np.where(x == -1, 1 - 2 * (y % 2), 0)), r).astype(r.dtype)


pow = _binary("pow", _pow_impl, _pow_dx, _pow_dy)  # noqa: A001
maximum = _binary("maximum", np.maximum, _share(lambda a, b: lt(a, b), 0), _share(lambda a, b: lt(a, b), 1))
minimum = _binary("minimum", np.minimum, _share(lambda a, b: gt(a, b), 0), _share(lambda a, b: gt(a, b), 1))

eq = _binary("eq", np.equal, out_dtype=dtypes.bool_, kind="compare")
ne = _binary("ne", np.not_equal, out_dtype=dtypes.bool_, kind="compare")
lt = _binary("lt", np.less, out_dtype=dtypes.bool_, kind="compare")
le = _binary("le", np.less_equal, out_dtype=dtypes.bool_, kind="compare")
gt = _binary("gt", np.greater, out_dtype=dtypes.bool_, kind="compare")
ge = _binary("ge", np.greater_equal, out_dtype=dtypes.bool_, kind="compare")
logical_and = _binary("logical_and", np.logical_and, out_dtype=dtypes.bool_, kind="compare")
logical_or = _binary("logical_or", np.logical_or, out_dtype=dtypes.bool_, kind="compare")


# ---------------------------------------------------------------- select, convert
def _where_shape(c, x, y):
    if c.dtype is not dtypes.bool_:
        raise ShapeError(f"condition must be bool, got {c.dtype.name}")
    d = _same_dtype("where", [x, y])
    return Aval(broadcast_shapes(tuple(c.shape), tuple(x.shape), tuple(y.shape)), d)


def _where_impl(c, x, y):
    return np.where(c, x, y)


where = Primitive(
    "where",
    _where_impl,
    _where_shape,
    (None, lambda g, c, x, y, out: unbroadcast(where(c, g, 0.0), x.shape),
     lambda g, c, x, y, out: unbroadcast(where(c, 0.0, g), y.shape)),
    kind="select",
    doc="where(c, x, y): x where c is true, else y",
)


def _convert_shape(x, *, dtype):
    return Aval(tuple(x.shape), dtype)


def _convert_vjp(g, x, out, *, dtype):
    return convert(g, dtype=x.dtype) if x.dtype.is_floating_point else None


convert = Primitive(
    "convert",
    lambda x, *, dtype: np.asarray(x).astype(dtype.np),
    _convert_shape,
    (_convert_vjp,),
    kind="unary",
    doc="convert(x, dtype=...): change element type",
)
