"""Binding a primitive: how a call like `prims.mul(x, y)` is carried out.

Concrete operands: check the shape rule, evaluate the NumPy impl, and record
an autograd node when needed. Symbolic operands (tensors whose payload is an
IR value, during tracing or the reverse-mode pass) go to the active graph
builder instead, which records a node. Either way the shape rule runs, so
errors read the same in eager code and while tracing.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from . import autograd
from .prims import Aval, ShapeError, install_bind

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Set by gradc.ir.builder while a graph is being built: called as
# builder(prim, operands, attrs, out_aval) for operands containing symbolic tensors.
symbolic_bind = None


def in_gradc(path: str) -> bool:
    """Whether source file `path` is gradc's own (a frame there is not the user's line)."""
    return path.startswith(_PKG_DIR)


def user_frame():
    """The innermost stack frame outside gradc (the user's line), or None."""
    f = sys._getframe(1)
    while f is not None and in_gradc(f.f_code.co_filename):
        f = f.f_back
    return f


def user_location() -> str:
    f = user_frame()
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}" if f is not None else "?"


def aval_of(o) -> Aval:
    from .tensor import Tensor

    if isinstance(o, Tensor):
        return Aval(tuple(o.shape), o.dtype)
    return Aval((), None)


def abstract_eval(prim, operands, attrs) -> Aval:
    """Run prim's shape rule; a rejection names the op, the shapes and the user's line."""
    try:
        return prim.shape(*[aval_of(o) for o in operands], **attrs)
    except ShapeError as e:
        f = user_frame()
        where = f" (at {os.path.basename(f.f_code.co_filename)}:{f.f_lineno})" if f is not None else ""
        raise ShapeError(f"{prim.name}: {e}{where}") from None


def bind(prim, operands, attrs):
    from .tensor import Tensor

    out_aval = abstract_eval(prim, operands, attrs)
    if any(isinstance(o, Tensor) and not isinstance(o._data, np.ndarray) for o in operands):
        return symbolic_bind(prim, operands, attrs, out_aval)
    arrays = [o._data if isinstance(o, Tensor) else o for o in operands]
    with np.errstate(all="ignore"):
        out = prim.impl(*arrays, **attrs)
    if not isinstance(out, np.ndarray) or out.dtype != out_aval.dtype.np:
        out = np.asarray(out, dtype=out_aval.dtype.np)  # NumPy gives scalars for 0-d results
    t = Tensor._wrap(out)
    if out.base is not None:  # a view (reshape, transpose, basic indexing) shares its base's version counter
        for o, a in zip(operands, arrays):
            if isinstance(o, Tensor) and (a is out.base or a.base is out.base):
                t._version = o._version
                break
    if autograd.is_grad_enabled() and prim.vjp is not None:
        autograd.record(t, prim, operands, attrs)
    return t


install_bind(bind)
