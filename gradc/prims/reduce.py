"""Reductions. `axes` is a sorted tuple of non-negative axes; reduced axes are
dropped (the front end reshapes for `keepdim=True`)."""
from __future__ import annotations

import numpy as np

from .. import dtypes
from .elementwise import convert, div, eq, mul, sub, where
from .registry import Aval, Primitive, ShapeError
from .shape import broadcast, reshape


def _check_axes(x, axes):
    for a in axes:
        if not 0 <= a < max(len(x.shape), 1):
            raise ShapeError(f"axis {a} is out of range for a tensor of {len(x.shape)} dimensions")
    if list(axes) != sorted(set(axes)):
        raise ShapeError(f"axes must be sorted and distinct, got {axes}")


def _reduce_shape(allowed=None):
    def shape(x, *, axes):
        _check_axes(x, axes)
        if allowed == "float" and not x.dtype.is_floating_point:
            raise ShapeError(f"needs a floating-point operand, got {x.dtype.name}")
        return Aval(tuple(s for i, s in enumerate(x.shape) if i not in axes), x.dtype)

    return shape


def _kept(x_shape, axes):
    """The reduced result's shape with the reduced axes kept as size 1."""
    return tuple(1 if i in axes else s for i, s in enumerate(x_shape))


def expand_back(r, x_shape, axes):
    """Broadcast a reduced result back to the operand's shape."""
    return broadcast(reshape(r, shape=_kept(x_shape, axes)), shape=tuple(x_shape))


def _sum_impl(x, *, axes):
    r = np.sum(x, axis=axes, dtype=x.dtype if x.dtype != np.bool_ else np.int64)
    return np.asarray(r)


def _sum_shape(x, *, axes):
    a = _reduce_shape()(x, axes=axes)
    return Aval(a.shape, dtypes.int64 if x.dtype is dtypes.bool_ else x.dtype)


reduce_sum = Primitive(
    "sum",
    _sum_impl,
    _sum_shape,
    (lambda g, x, out, *, axes: expand_back(g, x.shape, axes),),
    kind="reduce",
)


def _max_vjp(g, x, out, *, axes):
    # amax semantics (as PyTorch): the gradient is shared evenly between ties
    hit = convert(eq(x, expand_back(out, x.shape, axes)), dtype=x.dtype)
    count = expand_back(reduce_sum(hit, axes=axes), x.shape, axes)
    return mul(expand_back(g, x.shape, axes), div(hit, count))


def _max_impl(x, *, axes):
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError("max over an empty dimension has no identity: reduce over non-empty dimensions")
    return np.asarray(np.max(x, axis=axes))


reduce_max = Primitive("max", _max_impl, _reduce_shape(), (_max_vjp,), kind="reduce")


def _prod_vjp(g, x, out, *, axes):
    # d/dx_i is the product of the other elements, exact at zeros (no out / x) and written so
    # that its own derivative is exact too: p is the product of a slice's non-zero elements,
    # n the number of its zeros, z the sum of its zeros (0, but carrying their derivative)
    def back(r):
        return expand_back(r, x.shape, axes)

    zero = eq(x, 0.0)
    nz = where(zero, 1.0, x)
    p = back(reduce_prod(nz, axes=axes))
    n = back(reduce_sum(convert(zero, dtype=x.dtype), axes=axes))
    z = back(reduce_sum(where(zero, x, 0.0), axes=axes))
    at_zero = where(eq(n, 1.0), p, where(eq(n, 2.0), mul(sub(z, x), p), 0.0))
    elsewhere = where(eq(n, 0.0), div(p, nz), where(eq(n, 1.0), mul(z, div(p, nz)), 0.0))
    return mul(back(g), where(zero, at_zero, elsewhere))


reduce_prod = Primitive(
    "prod",
    lambda x, *, axes: np.asarray(np.prod(x, axis=axes)),
    _reduce_shape(),
    (_prod_vjp,),
    kind="reduce",
)


def _argmax_shape(x, *, axis):
    _check_axes(x, (axis,))
    return Aval(tuple(s for i, s in enumerate(x.shape) if i != axis), dtypes.int64)


def _argmax_impl(x, *, axis):
    if x.shape and x.shape[axis] == 0:
        raise ShapeError("argmax of an empty dimension")
    return np.asarray(np.argmax(x, axis=axis) if x.ndim else np.int64(0)).astype(np.int64)


argmax = Primitive("argmax", _argmax_impl, _argmax_shape, None, kind="reduce")
