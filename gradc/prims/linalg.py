"""Matrix multiplication: `matmul(a, b)` on operands of two or more dimensions,
batch dimensions broadcast (the front end handles 1-D operands)."""
from __future__ import annotations

import numpy as np

from .elementwise import _same_dtype, broadcast_shapes, fmt, unbroadcast
from .registry import Aval, Primitive, ShapeError
from .shape import transpose


def _matmul_shape(a, b):
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ShapeError(f"operands need two or more dimensions, got {fmt(a.shape)} and {fmt(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"mat1 and mat2 shapes cannot be multiplied ({'x'.join(map(str, a.shape))} and "
            f"{'x'.join(map(str, b.shape))}): {a.shape[-1]} != {b.shape[-2]}"
        )
    try:
        batch = broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
    except ShapeError as e:
        raise ShapeError(f"batch dimensions of {fmt(a.shape)} and {fmt(b.shape)} do not match: {e}") from None
    return Aval(batch + (a.shape[-2], b.shape[-1]), _same_dtype("matmul", [a, b]))


def mT(x):
    """Swap the last two axes."""
    n = x.ndim
    return transpose(x, perm=tuple(range(n - 2)) + (n - 1, n - 2))


matmul = Primitive(
    "matmul",
    np.matmul,
    _matmul_shape,
    (
        lambda g, a, b, out: unbroadcast(matmul(g, mT(b)), a.shape),
        lambda g, a, b, out: unbroadcast(matmul(mT(a), g), b.shape),
    ),
    kind="linalg",
)
