"""`const`: a tensor constant baked into a graph (a concrete tensor met while tracing)."""
from __future__ import annotations

import numpy as np

from .. import dtypes
from .registry import Aval, Primitive


def _const_shape(*, value):
    return Aval(tuple(value.shape), dtypes.as_dtype(value.dtype))


const = Primitive("const", lambda *, value: value, _const_shape, None, kind="const",
                  doc="const {value=[...]}: a constant tensor")


def make_const_value(arr) -> np.ndarray:
    """A read-only contiguous copy, safe to share between graphs."""
    a = np.array(arr, copy=True, order="C")
    a.flags.writeable = False
    return a
