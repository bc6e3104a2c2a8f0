"""Data types and PyTorch's type-promotion rules.

A `DType` names a NumPy dtype and carries the short name the IR prints
(`f32`, `i64`, ...). Promotion follows PyTorch: categories bool < integer <
floating; within the highest category present, tensors with dimensions win
over zero-dimensional tensors, which win over Python scalars; a Python float
meeting only integer tensors gives the default float dtype (float32).
"""
from __future__ import annotations

import builtins

import numpy as np


class DType:
    __slots__ = ("name", "short", "np", "is_floating_point", "category", "itemsize")

    def __init__(self, name, short, np_dtype, category):
        self.name = name
        self.short = short
        self.np = np.dtype(np_dtype)
        self.category = category  # 0 bool, 1 integer, 2 floating
        self.is_floating_point = category == 2
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return f"gradc.{self.name}"

    def __reduce__(self):
        return (as_dtype, (self.name,))


float32 = DType("float32", "f32", np.float32, 2)
float64 = DType("float64", "f64", np.float64, 2)
int64 = DType("int64", "i64", np.int64, 1)
int32 = DType("int32", "i32", np.int32, 1)
bool_ = DType("bool", "bool", np.bool_, 0)
float = float32  # noqa: A001 - PyTorch's aliases
double = float64
long = int64
int = int32  # noqa: A001

ALL = (float32, float64, int64, int32, bool_)
_LOOKUP = {}
for _d in ALL:
    _LOOKUP[_d] = _d
    _LOOKUP[_d.np] = _d
    _LOOKUP[_d.name] = _d
    _LOOKUP[_d.short] = _d
_LOOKUP["float"] = float32
_LOOKUP["double"] = float64
_LOOKUP["long"] = int64
_LOOKUP["int"] = int32

_default_float = float32


def as_dtype(d) -> DType:
    """Accept a DType, a NumPy dtype (or type) or a name; raise on anything else."""
    if isinstance(d, DType):
        return d
    try:
        key = d if isinstance(d, str) else np.dtype(d)
        return _LOOKUP[key]
    except (TypeError, KeyError):
        raise TypeError(
            f"gradc does not support dtype {d!r}; use one of "
            + ", ".join(f"gradc.{x.name}" for x in ALL)
        ) from None


def get_default_dtype() -> DType:
    return _default_float


def set_default_dtype(d) -> None:
    global _default_float
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default_float = d


def scalar_dtype(x) -> DType:
    """The dtype a Python scalar gets on its own (`tensor(2.5)`)."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (builtins.int, np.integer)):
        return int64
    return _default_float


def result_type(*operands) -> DType:
    """PyTorch's promotion over tensors (anything with .dtype and .ndim) and Python scalars."""
    best = [None, None, None]  # per priority: dimensioned tensors, 0-d tensors, scalars
    for o in operands:
        if hasattr(o, "dtype") and hasattr(o, "ndim"):
            d, slot = as_dtype(o.dtype), (0 if o.ndim > 0 else 1)
        else:
            d, slot = scalar_dtype(o), 2
        cur = best[slot]
        best[slot] = d if cur is None else _promote(cur, d)
    top = max(d.category for d in best if d is not None)
    for slot, d in enumerate(best):
        if d is not None and d.category == top:
            if slot == 2 and top == 2:
                return _default_float
            if slot == 2 and top == 1:
                return int64
            return d
    raise AssertionError("unreachable")


def _promote(a: DType, b: DType) -> DType:
    """Promotion of two dtypes of equal standing (like torch.promote_types)."""
    if a is b:
        return a
    if a.category != b.category:  # int64 with float32 is float32, not NumPy's float64
        return a if a.category > b.category else b
    return as_dtype(np.promote_types(a.np, b.np))


def can_cast(src: DType, dst: DType) -> bool:
    """Whether an in-place op may write a `src` result into a `dst` tensor (PyTorch's rule)."""
    return src.category <= dst.category
