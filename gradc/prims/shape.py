"""Shape primitives: reshape, transpose, broadcast, concat."""
from __future__ import annotations

import math

import numpy as np

from .elementwise import fmt
from .registry import Aval, Primitive, ShapeError


def _reshape_shape(x, *, shape):
    if math.prod(shape) != math.prod(x.shape) or any(s < 0 for s in shape):
        raise ShapeError(f"shape {fmt(shape)} is invalid for input of size {math.prod(x.shape)} (shape {fmt(x.shape)})")
    return Aval(tuple(shape), x.dtype)


reshape = Primitive(
    "reshape",
    lambda x, *, shape: np.reshape(x, shape),
    _reshape_shape,
    (lambda g, x, out, *, shape: reshape(g, shape=tuple(x.shape)),),
    kind="shape",
)


def _transpose_shape(x, *, perm):
    if sorted(perm) != list(range(len(x.shape))):
        raise ShapeError(f"perm {perm} is not a permutation of the {len(x.shape)} dimensions of {fmt(x.shape)}")
    return Aval(tuple(x.shape[p] for p in perm), x.dtype)


def inverse_perm(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


transpose = Primitive(
    "transpose",
    lambda x, *, perm: np.transpose(x, perm),
    _transpose_shape,
    (lambda g, x, out, *, perm: transpose(g, perm=inverse_perm(perm)),),
    kind="shape",
)


def _broadcast_shape(x, *, shape):
    lead = len(shape) - len(x.shape)
    if lead < 0 or any(s != 1 and s != t for s, t in zip(x.shape, shape[lead:])):
        raise ShapeError(f"the shape {fmt(x.shape)} cannot be expanded to {fmt(shape)}")
    return Aval(tuple(shape), x.dtype)


def _broadcast_vjp(g, x, out, *, shape):
    from .elementwise import unbroadcast

    return unbroadcast(g, x.shape)


broadcast = Primitive(
    "broadcast",
    lambda x, *, shape: np.broadcast_to(x, shape),
    _broadcast_shape,
    (_broadcast_vjp,),
    kind="shape",
    doc="broadcast(x, shape=...): NumPy broadcasting to a larger shape (expand)",
)


def _concat_shape(*xs, axis):
    first = xs[0]
    for x in xs[1:]:
        if x.dtype is not first.dtype:
            raise ShapeError(f"operands must have one dtype, got {first.dtype.name} and {x.dtype.name}")
        if len(x.shape) != len(first.shape) or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis
        ):
            raise ShapeError(
                f"sizes of tensors must match except in dimension {axis}: got {fmt(first.shape)} and {fmt(x.shape)}"
            )
    if not 0 <= axis < len(first.shape):
        raise ShapeError(f"axis {axis} out of range for {fmt(first.shape)}")
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return Aval(tuple(shape), first.dtype)


def _concat_vjp(g, *xs, out, needs, axis):
    from .index import Slice, index

    cots, start = [], 0
    for x, need in zip(xs, needs):
        n = x.shape[axis]
        spec = tuple(Slice(0, s, 1) if i != axis else Slice(start, start + n, 1) for i, s in enumerate(g.shape))
        cots.append(index(g, spec=spec) if need else None)
        start += n
    return tuple(cots)


concat = Primitive(
    "concat",
    lambda *xs, axis: np.concatenate(xs, axis=axis),
    _concat_shape,
    _concat_vjp,
    kind="shape",
)
