"""The primitive registry (see `registry.py`): every op gradc knows, defined once.

Importing this package registers all primitives in `REGISTRY`, keyed by the
name the IR prints.
"""
from .registry import REGISTRY, Aval, Primitive, ShapeError, install_bind
from .elementwise import (
    abs, add, broadcast_shapes, convert, cos, div, eq, erf, exp, ge, gt, le, log, log1p,
    logical_and, logical_not, logical_or, lt, maximum, minimum, mul, ne, neg, pow, sigmoid,
    sign, sin, sqrt, sub, tanh, unbroadcast, where,
)
from .shape import broadcast, concat, reshape, transpose
from .reduce import argmax, reduce_max, reduce_prod, reduce_sum
from .index import Arg, Slice, index_key, gather, index, scatter_add, scatter_index
from .linalg import matmul
from .const import const, make_const_value

__all__ = sorted(n for n in dir() if not n.startswith("_"))
