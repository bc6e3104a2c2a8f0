"""Indexing primitives.

`index(x, *idx, spec)` is NumPy/PyTorch indexing with a canonical, static
`spec`: one entry per axis of `x` (plus `None` for new axes), each a `Slice`
with resolved bounds and a positive step, an int, `None`, or `Arg(k)` for the
k-th integer index tensor operand. Boolean masks become integer index tensors
in the front end (their size depends on data). `scatter_index` is its
transpose, used by its vjp. `gather`/`scatter_add` are PyTorch's `gather`
along one axis and its transpose.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import dtypes
from .elementwise import fmt
from .registry import Aval, Primitive, ShapeError


class Slice(NamedTuple):
    start: int
    stop: int
    step: int

    def __repr__(self):
        return f"{self.start}:{self.stop}" + (f":{self.step}" if self.step != 1 else "")


class Arg(NamedTuple):
    k: int

    def __repr__(self):
        return f"${self.k}"


def index_key(spec, idx):
    """The NumPy index tuple for a canonical spec and index arrays."""
    return tuple(
        slice(e.start, e.stop, e.step) if isinstance(e, Slice) else idx[e.k] if isinstance(e, Arg) else e
        for e in spec
    )


def _dummy(shape, dtype):
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=tuple(shape), strides=(0,) * len(shape))


def _index_shape(x, *idx, spec):
    for i in idx:
        if i.dtype not in (dtypes.int64, dtypes.int32):
            raise ShapeError(f"index tensors must be integers, got {i.dtype.name}")
    n_axes = sum(e is not None for e in spec)
    if n_axes != len(x.shape):
        raise ShapeError(f"index spec {spec} does not cover the {len(x.shape)} dimensions of {fmt(x.shape)}")
    try:
        out = _dummy(x.shape, np.bool_)[index_key(spec, [_dummy(i.shape, np.int64) for i in idx])]
    except IndexError as e:
        raise ShapeError(f"{e} (tensor of shape {fmt(x.shape)})") from None
    return Aval(tuple(out.shape), x.dtype)


def _index_impl(x, *idx, spec):
    out = x[index_key(spec, idx)]
    return out if isinstance(out, np.ndarray) else np.asarray(out)


def _index_vjp(g, x, *idx, out, needs, spec):
    return (scatter_index(g, *idx, spec=spec, shape=tuple(x.shape)),) + (None,) * len(idx)


index = Primitive("index", _index_impl, _index_shape, _index_vjp, kind="index")


def _scatter_index_shape(g, *idx, spec, shape):
    want = _index_shape(Aval(tuple(shape), g.dtype), *idx, spec=spec)
    if tuple(want.shape) != tuple(g.shape):
        raise ShapeError(f"update of shape {fmt(g.shape)} does not fit index result {fmt(want.shape)}")
    return Aval(tuple(shape), g.dtype)


def _scatter_index_impl(g, *idx, spec, shape):
    out = np.zeros(shape, g.dtype)
    key = index_key(spec, idx)
    if idx:
        np.add.at(out, key, g)  # repeated indices accumulate
    else:
        out[key] = g
    return out


scatter_index = Primitive(
    "scatter_index",
    _scatter_index_impl,
    _scatter_index_shape,
    lambda g, u, *idx, out, needs, spec, shape: (index(g, *idx, spec=spec),) + (None,) * len(idx),
    kind="index",
    doc="zeros(shape) with u added at x[spec]: the transpose of index",
)


def _gather_shape(x, idx, *, axis):
    if idx.dtype not in (dtypes.int64, dtypes.int32):
        raise ShapeError(f"gather(): index must be an integer tensor, got {idx.dtype.name}")
    if len(idx.shape) != len(x.shape):
        raise ShapeError(
            f"gather(): index {fmt(idx.shape)} and input {fmt(x.shape)} must have the same number of dimensions"
        )
    if not 0 <= axis < max(len(x.shape), 1):
        raise ShapeError(f"gather(): dim {axis} out of range for {fmt(x.shape)}")
    for d, (a, b) in enumerate(zip(idx.shape, x.shape)):
        if d != axis and a > b:
            raise ShapeError(
                f"gather(): size of index {fmt(idx.shape)} must not exceed input {fmt(x.shape)} at dimension {d}"
            )
    return Aval(tuple(idx.shape), x.dtype)


def _gather_key(idx, axis):
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    return tuple(grids)


def _gather_impl(x, idx, *, axis):
    if idx.size and x.ndim:
        n = x.shape[axis]
        if idx.min() < -n or idx.max() >= n:
            bad = idx[(idx < -n) | (idx >= n)].flat[0]
            raise IndexError(f"gather(): index {bad} is out of bounds for dimension {axis} with size {n}")
    return x[_gather_key(idx, axis)] if x.ndim else x.copy()


gather = Primitive(
    "gather",
    _gather_impl,
    _gather_shape,
    (lambda g, x, idx, out, *, axis: scatter_add(g, idx, axis=axis, shape=tuple(x.shape)), None),
    kind="index",
    doc="gather(x, idx, axis): out[i][j] = x[i][idx[i][j]] for axis 1 (torch.gather)",
)


def _scatter_add_shape(u, idx, *, axis, shape):
    _gather_shape(Aval(tuple(shape), u.dtype), idx, axis=axis)
    if tuple(u.shape) != tuple(idx.shape):
        raise ShapeError(f"scatter_add(): source {fmt(u.shape)} must match index {fmt(idx.shape)}")
    return Aval(tuple(shape), u.dtype)


def _scatter_add_impl(u, idx, *, axis, shape):
    out = np.zeros(shape, u.dtype)
    if out.ndim:
        np.add.at(out, _gather_key(idx, axis), u)
    else:
        out[...] = u
    return out


scatter_add = Primitive(
    "scatter_add",
    _scatter_add_impl,
    _scatter_add_shape,
    (lambda g, u, idx, out, *, axis, shape: gather(g, idx, axis=axis), None),
    kind="index",
    doc="zeros(shape) with u added along axis at idx: the transpose of gather",
)
