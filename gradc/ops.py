"""The functional tensor API (`gradc.add`, `gradc.sum`, `gradc.cat`, ...).

Every function here is a composition of registry primitives: it normalises
PyTorch's arguments (dims, promotion, 1-D matmul, index expressions) and binds
primitives, so eager autograd and tracing need nothing op-specific.
"""
from __future__ import annotations

import builtins
import collections
import math

import numpy as np

from . import autograd
from . import dtypes as _dt
from . import prims as P
from .tensor import Tensor, _dim

_bmax, _bmin, _babs, _bsum = builtins.max, builtins.min, builtins.abs, builtins.sum


# ---------------------------------------------------------------- helpers
def _tensor(x, dtype=None):
    if isinstance(x, Tensor):
        return x if dtype is None or x.dtype is dtype else to_dtype(x, dtype)
    from .creation import tensor

    return tensor(x, dtype=dtype)


def _is_scalar(x):
    return isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating))


def _literal(x, dtype):
    """A Python scalar of the kind of `dtype`, as primitives take literals."""
    if dtype.category == 2:
        return float(x)
    if dtype.category == 1:
        return int(x)
    return bool(x)


def _operand(x, dtype):
    if _is_scalar(x):
        return _literal(x, dtype)
    t = _tensor(x)
    return t if t.dtype is dtype else to_dtype(t, dtype)


def _promoted(*xs, floating=False):
    xs = [x if (_is_scalar(x) or isinstance(x, Tensor)) else _tensor(x) for x in xs]
    d = _dt.result_type(*xs)
    if floating and not d.is_floating_point:
        d = _dt.get_default_dtype()
    return [_operand(x, d) for x in xs], d


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    if ndim == 0:
        for d in dims:
            _dim(d, 0)
        return ()
    axes = sorted({_dim(d, ndim) for d in dims})
    return tuple(axes)


def _keep(r, x_shape, axes, keepdim):
    if keepdim and axes:
        return P.reshape(r, shape=tuple(1 if i in axes else s for i, s in enumerate(x_shape)))
    return r


def _shape_error(op, msg):
    """A ShapeError naming the op and the user's line, like the primitives' shape rules give."""
    from .dispatch import user_location

    return P.ShapeError(f"{op}: {msg} (at {user_location()})")


def _named(t, name):
    """Give the result's autograd node PyTorch's name for the composite op."""
    if t.grad_fn is not None:
        t.grad_fn.name = name
    return t


def to_dtype(x, dtype):
    dtype = _dt.as_dtype(dtype)
    x = _tensor(x)
    return x if x.dtype is dtype else P.convert(x, dtype=dtype)


def clone(x):
    return _named(P.convert(x, dtype=x.dtype), "CloneBackward0")


# ---------------------------------------------------------------- elementwise
def _binary(prim, a, b, floating=False):
    (a, b), _ = _promoted(a, b, floating=floating)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = _tensor(a)
    return prim(a, b)


def _scaled(a, b, alpha):
    """b * alpha for add/sub; PyTorch refuses a float alpha for integer operands."""
    operands = [x if _is_scalar(x) or isinstance(x, Tensor) else _tensor(x) for x in (a, b)]
    if isinstance(alpha, float) and not _dt.result_type(*operands).is_floating_point:
        raise RuntimeError(
            f"For integral input tensors, argument alpha must not be a floating point number (got {alpha})."
        )
    return mul(b, alpha)


def add(a, b, *, alpha=1):
    if alpha != 1:
        b = _scaled(a, b, alpha)
    return _binary(P.add, a, b)


def sub(a, b, *, alpha=1):
    bools = [isinstance(t, (bool, np.bool_)) or (isinstance(t, Tensor) and t.dtype is _dt.bool_) for t in (a, b)]
    if builtins.all(bools):
        raise RuntimeError(
            "Subtraction, the `-` operator, with two bool tensors is not supported. "
            "Use the `^` or `logical_xor()` operator instead."
        )
    if builtins.any(bools):
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    if alpha != 1:
        b = _scaled(a, b, alpha)
    return _binary(P.sub, a, b)


def mul(a, b):
    return _binary(P.mul, a, b)


def div(a, b, *, rounding_mode=None):
    if rounding_mode is not None:
        return floor_divide(a, b) if rounding_mode == "floor" else _trunc_div(a, b)
    return _binary(P.div, a, b, floating=True)


true_divide = divide = div
multiply, subtract = mul, sub


def floor_divide(a, b):
    (a, b), d = _promoted(a, b)
    with autograd.no_grad():
        num, den = (np.asarray(x._data if isinstance(x, Tensor) else x) for x in (a, b))
        _check_int_divisor(den, d)
        r = np.floor_divide(num, den)
    return Tensor._wrap(np.asarray(r, d.np))


def _check_int_divisor(den, d):
    if not d.is_floating_point and (np.asarray(den) == 0).any():
        raise RuntimeError("ZeroDivisionError: integer division by zero")


def _trunc_div(a, b):
    (a, b), d = _promoted(a, b)
    _check_int_divisor(b._data if isinstance(b, Tensor) else b, d)
    q = div(a, b)
    return Tensor._wrap(np.trunc(q._data).astype(d.np))


def pow(a, b):  # noqa: A001
    if isinstance(a, Tensor) and _is_scalar(b) and not a.dtype.is_floating_point and isinstance(b, float):
        a = to_dtype(a, _dt.get_default_dtype())
    if isinstance(a, Tensor) and not a.dtype.is_floating_point and _is_scalar(b) and not isinstance(b, float) and b < 0:
        raise RuntimeError(
            "Integers to negative integer powers are not allowed. Use a float exponent (x ** -1.0) or "
            "convert first (x.float() ** -1)."
        )
    return _named(_binary(P.pow, a, b), "PowBackward0")


def maximum(a, b):
    return _binary(P.maximum, a, b)


def minimum(a, b):
    return _binary(P.minimum, a, b)


def _compare(prim):
    def f(a, b):
        return _binary(prim, a, b)

    f.__name__ = prim.name
    return f


eq, ne, lt, le, gt, ge = (_compare(p) for p in (P.eq, P.ne, P.lt, P.le, P.gt, P.ge))
greater, less, equal = gt, lt, eq


def logical_and(a, b):
    return P.logical_and(to_dtype(a, _dt.bool_), to_dtype(b, _dt.bool_))


def logical_or(a, b):
    return P.logical_or(to_dtype(a, _dt.bool_), to_dtype(b, _dt.bool_))


def logical_not(a):
    return P.logical_not(to_dtype(a, _dt.bool_))


def remainder(a, b):
    """a - floor(a / b) * b: Python's %, with the sign of b. Its gradient is 1 for a and
    -floor(a / b) for b, as in PyTorch."""
    return sub(a, mul(floor_divide(a, b), b))


def _bitwise(name, logical, np_fn):
    def f(a, b):
        (a, b), d = _promoted(a, b)
        if d is _dt.bool_:
            return logical(a, b)
        if d.is_floating_point:
            raise RuntimeError(f'"{name}_cpu" not implemented for \'{d.name}\': bitwise ops take bool or integer tensors')
        arrays = [x._concrete(f"{name}()") if isinstance(x, Tensor) else x for x in (a, b)]
        return Tensor._wrap(np.asarray(np_fn(*arrays), d.np))

    f.__name__ = name
    return f


bitwise_and = _bitwise("bitwise_and", logical_and, np.bitwise_and)
bitwise_or = _bitwise("bitwise_or", logical_or, np.bitwise_or)


def bitwise_not(x):
    x = _tensor(x)
    if x.dtype is _dt.bool_:
        return logical_not(x)
    if x.dtype.is_floating_point:
        raise RuntimeError(f"bitwise_not is only supported for integer and bool tensors, got {x.dtype.name}")
    return sub(neg(x), 1)  # two's complement: ~x == -x - 1


def _float_unary(prim):
    def f(x):
        x = _tensor(x)
        if not x.dtype.is_floating_point:
            x = to_dtype(x, _dt.get_default_dtype())
        return prim(x)

    f.__name__ = prim.name
    return f


exp, log, log1p, sqrt, sin, cos, tanh, sigmoid, erf = (
    _float_unary(p) for p in (P.exp, P.log, P.log1p, P.sqrt, P.sin, P.cos, P.tanh, P.sigmoid, P.erf)
)


def rsqrt(x):
    return _named(P.div(1.0, sqrt(x)), "RsqrtBackward0")


def square(x):
    return mul(x, x)


def neg(x):
    x = _tensor(x)
    if x.dtype is _dt.bool_:
        raise RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    return P.neg(x)


negative = neg


def abs(x):  # noqa: A001
    x = _tensor(x)
    if x.dtype is _dt.bool_:
        raise RuntimeError("abs is not implemented for bool tensors; convert first, e.g. x.long().abs()")
    return P.abs(x)


absolute = abs


def sign(x):
    return P.sign(_tensor(x))


def relu(x):
    x = _tensor(x)
    if x.dtype is _dt.bool_:
        raise RuntimeError("Boolean inputs not supported for relu; convert first, e.g. x.float().relu()")
    zero = _literal(0, x.dtype)
    return _named(P.where(P.le(x, zero), zero, x), "ReluBackward0")


def where(condition, x=None, y=None):
    if x is None and y is None:
        return nonzero(condition, as_tuple=True)
    (x, y), d = _promoted(x, y)
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = _tensor(x)
    return P.where(to_dtype(condition, _dt.bool_), x, y)


def masked_fill(x, mask, value):
    x = _tensor(x)  # the result keeps x's dtype, as in PyTorch
    value = _literal(value, x.dtype) if _is_scalar(value) else to_dtype(value, x.dtype)
    return where(mask, value, x)


def clamp(x, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    x = _tensor(x)
    r = x
    # where-based so the gradient passes at the bounds, as in PyTorch
    if min is not None:
        r = _bound(r, min, lt)
    if max is not None:
        r = _bound(r, max, gt)
    return _named(r, "ClampBackward1")


def _bound(r, b, beyond):
    hit = beyond(r, b)
    if isinstance(b, Tensor) and b.dtype.is_floating_point:
        hit = logical_or(hit, isnan(b))  # a NaN bound gives NaN, as in PyTorch
    elif _is_scalar(b) and b != b:
        hit = logical_or(hit, True)
    return where(hit, b, r)


clip = clamp


def isnan(x):
    return ne(x, x)


def isinf(x):
    x = _tensor(x)
    return eq(abs(x), math.inf) if x.dtype.is_floating_point else zeros_like(x, dtype=_dt.bool_)


def isfinite(x):
    return logical_not(logical_or(isnan(x), isinf(x)))


# ---------------------------------------------------------------- reductions
def sum(x, dim=None, keepdim=False, *, dtype=None):  # noqa: A001
    x = _tensor(x)
    if dtype is not None:
        x = to_dtype(x, dtype)
    elif x.dtype is _dt.int32:
        x = to_dtype(x, _dt.int64)  # integer sums accumulate in int64, as in PyTorch
    axes = _axes(dim, x.ndim)
    return _named(_keep(P.reduce_sum(x, axes=axes), x.shape, axes, keepdim), "SumBackward" + ("0" if dim is None else "1"))


def mean(x, dim=None, keepdim=False, *, dtype=None):
    x = _tensor(x)
    if dtype is not None:
        x = to_dtype(x, dtype)
    if not x.dtype.is_floating_point:
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point or complex "
            f"dtype. Got: {x.dtype.name}. Convert first, e.g. x.float().mean()."
        )
    axes = _axes(dim, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    s = _keep(P.reduce_sum(x, axes=axes), x.shape, axes, keepdim)
    return _named(P.div(s, float(n)), "MeanBackward" + ("0" if dim is None else "1"))


def amax(x, dim=(), keepdim=False):
    x = _tensor(x)
    axes = _axes(None if dim == () else dim, x.ndim)
    _nonempty(x, axes, "amax", dim not in ((), None))
    return _named(_keep(P.reduce_max(x, axes=axes), x.shape, axes, keepdim), "AmaxBackward0")


def amin(x, dim=(), keepdim=False):
    x = _tensor(x)
    _nonempty(x, _axes(None if dim == () else dim, x.ndim), "amin", dim not in ((), None))
    flip = logical_not if x.dtype is _dt.bool_ else neg
    return _named(flip(amax(flip(x), dim, keepdim)), "AminBackward0")


def _nonempty(x, axes, name, dim_given, no_dim_error=RuntimeError):
    """PyTorch's errors for max-like reductions over nothing."""
    if not dim_given:
        if x.numel() == 0:
            raise no_dim_error(
                f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
                "Specify the reduction dim with the 'dim' argument."
            )
        return
    for a in axes:
        if x.shape[a] == 0:
            raise IndexError(
                f"{name}(): Expected reduction dim {a} to have non-zero size (shape {list(x.shape)})."
            )


MaxMin = collections.namedtuple("MaxMin", ["values", "indices"])


def argmax(x, dim=None, keepdim=False, *, _name="argmax"):
    x = _tensor(x)
    _nonempty(x, _axes(dim, x.ndim), _name, dim is not None, IndexError)
    if dim is None:
        r = P.argmax(P.reshape(x, shape=(x.numel(),)), axis=0)
        return P.reshape(r, shape=(1,) * x.ndim) if keepdim else r
    axis = _dim(dim, x.ndim)
    if x.ndim == 0:
        return P.argmax(x, axis=0)
    return _keep(P.argmax(x, axis=axis), x.shape, (axis,), keepdim)


def argmin(x, dim=None, keepdim=False):
    x = _tensor(x)
    return argmax(neg(x) if x.dtype is not _dt.bool_ else logical_not(x), dim, keepdim, _name="argmin")


def _max_min(x, dim, keepdim, other, largest):
    x = _tensor(x)
    if isinstance(dim, Tensor) or (dim is not None and not isinstance(dim, (int, np.integer))):
        other = dim
    if other is not None:
        return maximum(x, other) if largest else minimum(x, other)
    name = "max" if largest else "min"
    _nonempty(x, _axes(dim, x.ndim), name, dim is not None)
    if dim is None:
        return amax(x) if largest else amin(x)
    axis = _dim(dim, x.ndim)
    idx = argmax(x, axis, keepdim=True) if largest else argmin(x, axis, keepdim=True)
    if x.ndim == 0:
        return MaxMin(x, P.reshape(idx, shape=()))
    values = P.gather(x, idx, axis=axis)  # the gradient goes to the selected element, as in PyTorch
    if not keepdim:
        values, idx = squeeze(values, axis), squeeze(idx, axis)
    return MaxMin(_named(values, "MaxBackward0" if largest else "MinBackward0"), idx)


def max(x, dim=None, keepdim=False, *, other=None):  # noqa: A001
    return _max_min(x, dim, keepdim, other, True)


def min(x, dim=None, keepdim=False, *, other=None):  # noqa: A001
    return _max_min(x, dim, keepdim, other, False)


def prod(x, dim=None, keepdim=False, *, dtype=None):
    x = _tensor(x)
    if dtype is not None:
        x = to_dtype(x, dtype)
    if dtype is None and x.dtype.category < 2:
        x = to_dtype(x, _dt.int64)  # integer products accumulate in int64, as in PyTorch
    axes = _axes(dim, x.ndim)
    return _named(_keep(P.reduce_prod(x, axes=axes), x.shape, axes, keepdim), "ProdBackward0")


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    x = _tensor(x)
    if correction is None:
        correction = 1 if unbiased in (None, True) else 0
    axes = _axes(dim, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    centered = sub(x, mean(x, dim=axes, keepdim=True))
    ss = sum(mul(centered, centered), dim=axes, keepdim=keepdim)
    return _named(div(ss, float(_bmax(n - correction, 0))), "VarBackward0")


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    v = var(x, dim, unbiased, keepdim, correction=correction)
    # PyTorch's convention: zero gradient (not nan) where the std is 0 (constant slices)
    flat = eq(v, 0.0)
    return _named(where(flat, 0.0, sqrt(where(flat, 1.0, v))), "StdBackward0")


def logsumexp(x, dim, keepdim=False):
    x = _tensor(x)
    if not x.dtype.is_floating_point:
        x = to_dtype(x, _dt.get_default_dtype())
    axes = _axes(dim, x.ndim)
    m = _max_shift(x, axes)
    s = sum(exp(sub(x, m)), dim=axes, keepdim=True)
    r = add(log(s), m)
    return _named(squeeze(r, axes) if (axes and not keepdim) else r, "LogsumexpBackward0")


def _max_shift(x, axes):
    """The constant subtracted before exp for stability: each slice's max, or 0 where that
    is infinite (all -inf slices) or the slice is empty."""
    with autograd.no_grad():
        if builtins.any(x.shape[a] == 0 for a in axes):
            return Tensor._wrap(np.zeros(tuple(1 if i in axes else s for i, s in enumerate(x.shape)), x.dtype.np))
        m = amax(x, axes, keepdim=True) if axes else x
        return where(isinf(m), 0.0, m).detach()


def any(x, dim=None, keepdim=False):  # noqa: A001
    x = to_dtype(x, _dt.bool_)
    return to_dtype(sum(x, dim, keepdim), _dt.bool_) if dim is not None else to_dtype(sum(x), _dt.bool_)


def all(x, dim=None, keepdim=False):  # noqa: A001
    return logical_not(any(logical_not(x), dim, keepdim))


def cumsum(x, dim):
    x = _tensor(x)
    axis = _dim(dim, x.ndim)
    n = x.shape[axis] if x.ndim else 1
    tri = Tensor._wrap(np.tril(np.ones((n, n), x.dtype.np)))  # cumsum as a triangular matmul
    moved = movedim(x, axis, -1) if x.ndim else reshape(x, (1,))
    out = matmul(moved, tri.T) if x.dtype.is_floating_point else Tensor._wrap(np.cumsum(moved._data, -1))
    return movedim(out, -1, axis) if x.ndim else reshape(out, ())


# ---------------------------------------------------------------- linear algebra
def matmul(a, b):
    a, b = _tensor(a), _tensor(b)
    if a.dtype is not b.dtype:  # PyTorch does not promote in matmul
        raise RuntimeError(
            f"expected m1 and m2 to have the same dtype, but got: {a.dtype.name} != {b.dtype.name}. "
            "Convert one operand first, e.g. a.float() @ b.float()."
        )
    if a.ndim == 0 or b.ndim == 0:
        raise _shape_error("matmul", f"both arguments to matmul need to be at least 1D, but they are {a.ndim}D "
                           f"and {b.ndim}D (shapes {list(a.shape)} and {list(b.shape)})")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise _shape_error("matmul", f"mat1 and mat2 shapes cannot be multiplied ({'x'.join(map(str, a.shape))} and "
                           f"{'x'.join(map(str, b.shape))}): the last size of the first, {a.shape[-1]}, must match "
                           f"the {'second-to-' if b.ndim > 1 else ''}last size of the second")
    a2 = P.reshape(a, shape=(1,) + tuple(a.shape)) if a.ndim == 1 else a
    b2 = P.reshape(b, shape=tuple(b.shape) + (1,)) if b.ndim == 1 else b
    r = P.matmul(a2, b2)
    shape = list(r.shape)  # drop the axes added for 1-D operands
    if b.ndim == 1:
        del shape[-1]
    if a.ndim == 1:
        del shape[-1 if b.ndim == 1 else -2]
    if len(shape) != r.ndim:
        r = P.reshape(r, shape=tuple(shape))
    return _named(r, "MmBackward0" if a.ndim == b.ndim == 2 else "MatmulBackward0")


def mm(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise _shape_error("mm", f"expected 2D tensors, got {list(a.shape)} and {list(b.shape)}; "
                           "use matmul (@) for other shapes")
    return matmul(a, b)


def bmm(a, b):
    if a.ndim != 3 or b.ndim != 3:
        raise _shape_error("bmm", f"expected 3D tensors, got {list(a.shape)} and {list(b.shape)}")
    if a.shape[0] != b.shape[0]:
        raise _shape_error("bmm", f"batch sizes differ: {list(a.shape)} and {list(b.shape)}; use matmul (@) to "
                           "broadcast batch dimensions")
    return _named(matmul(a, b), "BmmBackward0")


def dot(a, b):
    if a.ndim != 1 or b.ndim != 1:
        raise _shape_error("dot", f"1D tensors expected, but got {list(a.shape)} and {list(b.shape)}")
    if a.shape[0] != b.shape[0]:
        raise _shape_error("dot", f"inconsistent tensor size, expected tensor {list(a.shape)} and src "
                           f"{list(b.shape)} to have the same number of elements")
    return matmul(a, b)


def outer(a, b):
    return mul(reshape(a, (-1, 1)), reshape(b, (1, -1)))


# ---------------------------------------------------------------- shapes
def _sizes(args):
    if len(args) == 1 and isinstance(args[0], (tuple, list, Tensor)):
        args = tuple(args[0])
    return tuple(int(s) for s in args)


def reshape(x, *shape):
    x = _tensor(x)
    shape = _sizes(shape)
    if shape.count(-1) > 1:
        raise _shape_error("reshape", f"only one dimension can be inferred, got shape {list(shape)}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or x.numel() % known:
            raise _shape_error("reshape", f"shape '{list(shape)}' is invalid for input of size {x.numel()} "
                               f"(shape {list(x.shape)})")
        shape = tuple(x.numel() // known if s == -1 else s for s in shape)
    if tuple(shape) == tuple(x.shape):
        return P.reshape(x, shape=shape) if x.requires_grad else x
    return P.reshape(x, shape=shape)


view = reshape


def view_as(x, other):
    return reshape(x, other.shape)


reshape_as = view_as


def flatten(x, start_dim=0, end_dim=-1):
    x = _tensor(x)
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = _dim(start_dim, x.ndim), _dim(end_dim, x.ndim)
    shape = tuple(x.shape[:s]) + (math.prod(x.shape[s:e + 1]),) + tuple(x.shape[e + 1:])
    return reshape(x, shape)


def squeeze(x, dim=None):
    x = _tensor(x)
    if dim is None:
        axes = tuple(i for i, s in enumerate(x.shape) if s == 1)
    else:
        axes = tuple(a for a in _axes(dim, x.ndim) if x.shape[a] == 1)
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def unsqueeze(x, dim):
    x = _tensor(x)
    d = _dim(dim, x.ndim + 1)
    shape = list(x.shape)
    shape.insert(d, 1)
    return reshape(x, tuple(shape))


def expand(x, *sizes):
    x = _tensor(x)
    sizes = _sizes(sizes)
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise _shape_error(
            "expand", f"the number of sizes provided ({len(sizes)}) must be greater or equal to the number of "
            f"dimensions in the tensor ({x.ndim}): cannot expand {list(x.shape)} to {list(sizes)}"
        )
    shape = tuple(x.shape[i - lead] if (s == -1 and i >= lead) else s for i, s in enumerate(sizes))
    if builtins.any(s < 0 for s in shape):
        raise _shape_error("expand", f"cannot expand {list(x.shape)} to {list(sizes)}: -1 (keep the size) is not "
                           "allowed in a leading, new dimension, and sizes must not be negative")
    if shape == tuple(x.shape):
        return x
    return _named(P.broadcast(x, shape=shape), "ExpandBackward0")


def expand_as(x, other):
    return expand(x, other.shape)


def broadcast_to(x, shape):
    return expand(x, shape)


def repeat(x, *sizes):
    x = _tensor(x)
    sizes = _sizes(sizes)
    x = reshape(x, (1,) * (len(sizes) - x.ndim) + tuple(x.shape))
    inter = []
    for r, s in zip(sizes, x.shape):
        inter += [r, s]
    y = expand(reshape(x, tuple(v for s in x.shape for v in (1, s))), tuple(inter))
    return reshape(y, tuple(r * s for r, s in zip(sizes, x.shape)))


def permute(x, *dims):
    x = _tensor(x)
    dims = _sizes(dims)
    if len(dims) != x.ndim:
        raise _shape_error(
            "permute", f"number of dimensions in the tensor input does not match the length of the desired "
            f"ordering of dimensions i.e. input.dim() = {x.ndim} is not equal to len(dims) = {len(dims)} "
            f"(shape {list(x.shape)}, dims {list(dims)})"
        )
    perm = tuple(_dim(d, x.ndim) for d in dims)
    if perm == tuple(range(x.ndim)):
        return x
    return _named(P.transpose(x, perm=perm), "PermuteBackward0")


def transpose(x, dim0, dim1):
    x = _tensor(x)
    if x.ndim == 0:
        return x
    perm = list(range(x.ndim))
    a, b = _dim(dim0, x.ndim), _dim(dim1, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return _named(permute(x, perm), "TransposeBackward0")


swapaxes = transpose


def t(x):
    if x.ndim > 2:
        raise _shape_error("t", f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D "
                           f"(shape {list(x.shape)}); use transpose(dim0, dim1)")
    return transpose(x, 0, -1) if x.ndim == 2 else x


def movedim(x, source, destination):
    x = _tensor(x)
    s, d = _dim(source, x.ndim), _dim(destination, x.ndim)
    perm = [i for i in range(x.ndim) if i != s]
    perm.insert(d, s)
    return permute(x, perm)


def cat(tensors, dim=0):
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    d = _dt.result_type(*tensors)
    legacy = [t.ndim == 1 and t.shape[0] == 0 for t in tensors]
    ref = next((t for t, e in zip(tensors, legacy) if not e), tensors[0])
    axis = _dim(dim, ref.ndim)
    # PyTorch accepts legacy empty 1-D tensors next to any shape: they join as empty slices
    empty = tuple(0 if i == axis else s for i, s in enumerate(ref.shape))
    ts = [to_dtype(reshape(t, empty) if e else t, d) for t, e in zip(tensors, legacy)]
    return _named(P.concat(*ts, axis=axis), "CatBackward0")


concat = concatenate = cat


def stack(tensors, dim=0):
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(tensors[0].shape):
            raise _shape_error(
                "stack", f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} at entry 0 "
                f"and {list(t.shape)} at entry {i}"
            )
    d = _dim(dim, tensors[0].ndim + 1)
    return _named(cat([unsqueeze(t, d) for t in tensors], d), "StackBackward0")


def _slice_along(x, axis, start, stop):
    spec = tuple(P.Slice(start, stop, 1) if i == axis else P.Slice(0, s, 1) for i, s in enumerate(x.shape))
    return P.index(x, spec=spec)


def split(x, split_size_or_sections, dim=0):
    x = _tensor(x)
    axis = _dim(dim, x.ndim)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        step = int(split_size_or_sections)
        if step < 0 or (step == 0 and n != 0):
            raise _shape_error("split", f"split_size must be positive (0 only for an empty dimension), got "
                               f"{step} for dimension {axis} of {list(x.shape)}")
        sizes = ([_bmin(step, n - i) for i in range(0, n, step)] if step else []) or [0]
    else:
        sizes = list(split_size_or_sections)
        if _bsum(sizes) != n:
            raise _shape_error(
                "split", f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size at "
                f"dimension {axis}, shape {list(x.shape)}), but got split_sizes={sizes}"
            )
    out, start = [], 0
    for s in sizes:
        out.append(_slice_along(x, axis, start, start + s))
        start += s
    return tuple(out)


def chunk(x, chunks, dim=0):
    x = _tensor(x)
    n = x.shape[_dim(dim, x.ndim)]
    return split(x, _bmax(1, -(-n // chunks)), dim)


def unbind(x, dim=0):
    axis = _dim(dim, x.ndim)
    return tuple(squeeze(p, axis) for p in split(x, 1, axis))


# ---------------------------------------------------------------- indexing
def _as_index_tensor(k):
    if isinstance(k, Tensor):
        return k
    a = np.asarray(k)
    if isinstance(k, list) and a.size == 0:
        a = a.astype(np.int64)  # `x[[]]` selects nothing (an empty list has no dtype of its own)
    return _tensor(a)


def _canonical_index(x, key):
    """PyTorch/NumPy index expression -> (canonical spec, integer index tensors)."""
    if not isinstance(key, tuple):
        key = (key,)
    key = tuple(_as_index_tensor(k) if isinstance(k, (list, np.ndarray)) else k for k in key)
    consumed = _bsum(
        (k.ndim if isinstance(k, Tensor) and k.dtype is _dt.bool_ else 1)
        for k in key if k is not None and k is not Ellipsis
    )
    if _bsum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consumed > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    spec, idx, axis = [], [], 0
    for k in key:
        if k is Ellipsis:
            for _ in range(x.ndim - consumed):
                spec.append(P.Slice(0, x.shape[axis], 1))
                axis += 1
        elif k is None:
            spec.append(None)
        elif isinstance(k, slice):
            if k.step is not None and k.step <= 0:
                raise ValueError("step must be greater than zero")
            start, stop, step = k.indices(x.shape[axis])
            spec.append(P.Slice(start, _bmax(stop, start), step))
            axis += 1
        elif isinstance(k, Tensor) and k.dtype is _dt.bool_:
            if tuple(k.shape) != tuple(x.shape[axis:axis + k.ndim]):
                raise IndexError(
                    f"The shape of the mask {list(k.shape)} at index {axis} does not match the shape of the "
                    f"indexed tensor {list(x.shape)}"
                )
            for nz in np.nonzero(k._concrete("boolean-mask indexing (its result's size depends on data)")):
                spec.append(P.Arg(len(idx)))
                idx.append(Tensor._wrap(nz.astype(np.int64)))
                axis += 1
        elif isinstance(k, Tensor):
            if k.dtype.is_floating_point:
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
            spec.append(P.Arg(len(idx)))
            idx.append(k)
            axis += 1
        elif isinstance(k, (int, np.integer)) or (hasattr(k, "__index__") and not isinstance(k, float)):
            i = int(k)
            n = x.shape[axis]
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for dimension {axis} with size {n}")
            spec.append(i % n)
            axis += 1
        else:
            raise IndexError(
                f"only integers, slices (`:`), ellipsis (`...`), None and long or bool tensors are valid indices "
                f"(got {type(k).__name__})"
            )
    for a in range(axis, x.ndim):
        spec.append(P.Slice(0, x.shape[a], 1))
    if len(idx) > 1:
        try:
            np.broadcast_shapes(*(tuple(i.shape) for i in idx))
        except ValueError:
            raise IndexError(
                "shape mismatch: indexing tensors could not be broadcast together with shapes "
                + ", ".join(str(list(i.shape)) for i in idx)
            ) from None
    return tuple(spec), idx


def _split_ints(x, spec):
    """PyTorch applies integer indices before tensor indices (NumPy would treat them as
    advanced indices, which moves result dimensions): a spec of the basic part (ints,
    slices, None) and one of the tensor indices over its result."""
    first, second, axis = [], [], 0
    for e in spec:
        if e is None:
            first.append(None)
            second.append(P.Slice(0, 1, 1))
            continue
        if isinstance(e, P.Arg):
            first.append(P.Slice(0, x.shape[axis], 1))
            second.append(e)
        else:
            first.append(e)
            if isinstance(e, P.Slice):
                second.append(P.Slice(0, len(range(e.start, e.stop, e.step)), 1))
        axis += 1
    return tuple(first), tuple(second)


def _mixes_ints(spec, idx):
    return bool(idx) and builtins.any(isinstance(e, int) for e in spec)


def getitem(x, key):
    spec, idx = _canonical_index(x, key)
    if _mixes_ints(spec, idx):
        first, second = _split_ints(x, spec)
        return _named(P.index(P.index(x, spec=first), *idx, spec=second), "IndexBackward0")
    if not idx and builtins.all(isinstance(e, P.Slice) and e == (0, s, 1) for e, s in zip(spec, x.shape)) and len(spec) == x.ndim:
        return x if not x.requires_grad else P.reshape(x, shape=tuple(x.shape))
    return _named(P.index(x, *idx, spec=spec), "IndexBackward0")


def index_put(x, key, value):
    """x with x[key] = value, out of place (what `x[key] = value` computes)."""
    spec, idx = _canonical_index(x, key)
    if _mixes_ints(spec, idx):
        first, second = _split_ints(x, spec)
        return _put(x, first, [], _put(P.index(x, spec=first), second, idx, value))
    return _put(x, spec, idx, value)


def _put(x, spec, idx, value):
    target = P.index(x, *idx, spec=spec)
    v = expand(to_dtype(_tensor(value), x.dtype), tuple(target.shape))
    if not x.dtype.is_floating_point:
        out = x._data.copy()
        out[P.index_key(spec, [i._data for i in idx])] = v._data
        return Tensor._wrap(out)
    hit = P.scatter_index(Tensor._wrap(np.ones(tuple(target.shape), x.dtype.np)), *idx, spec=spec, shape=tuple(x.shape))
    kept = where(gt(hit, 0.0), 0.0, x)
    return add(kept, P.scatter_index(v, *idx, spec=spec, shape=tuple(x.shape)))


def gather(x, dim, index):
    x = _tensor(x)
    return _named(P.gather(x, _tensor(index), axis=_dim(dim, x.ndim)), "GatherBackward0")


def take_along_dim(x, indices, dim):
    return gather(x, dim, indices)


def nonzero(x, as_tuple=False):
    a = _tensor(x)._concrete("nonzero() (its result's size depends on data)")
    nz = [Tensor._wrap(i.astype(np.int64)) for i in np.nonzero(a)]
    if as_tuple:
        return tuple(nz)
    return Tensor._wrap(np.stack([i._data for i in nz], axis=1) if nz else np.zeros((0, 0), np.int64))


# ---------------------------------------------------------------- softmax family
def softmax(x, dim, dtype=None):
    x = _tensor(x) if dtype is None else to_dtype(x, dtype)
    e = exp(sub(x, _max_shift(x, _axes(dim, x.ndim))))
    return _named(div(e, sum(e, dim, keepdim=True)), "SoftmaxBackward0")


def log_softmax(x, dim, dtype=None):
    x = _tensor(x) if dtype is None else to_dtype(x, dtype)
    return _named(sub(x, logsumexp(x, dim, keepdim=True)), "LogSoftmaxBackward0")


# ---------------------------------------------------------------- creation shortcuts used above
def zeros(*size, dtype=None):
    from .creation import zeros as z

    return z(*size, dtype=dtype)


def ones(*size, dtype=None):
    from .creation import ones as o

    return o(*size, dtype=dtype)


def zeros_like(x, dtype=None):
    return Tensor._wrap(np.zeros(tuple(x.shape), _dt.as_dtype(dtype or x.dtype).np))


def ones_like(x, dtype=None):
    return Tensor._wrap(np.ones(tuple(x.shape), _dt.as_dtype(dtype or x.dtype).np))


def full_like(x, value, dtype=None):
    return Tensor._wrap(np.full(tuple(x.shape), value, _dt.as_dtype(dtype or x.dtype).np))
