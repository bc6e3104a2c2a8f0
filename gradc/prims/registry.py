"""The primitive registry: one definition per primitive op.

A `Primitive` carries everything every layer of gradc needs to know about an
op, declared side by side:

- `shape(*avals, **attrs) -> Aval`: the shape and dtype rule. It validates
  operands and raises `ShapeError` with a message naming both shapes.
- `impl(*arrays, **attrs) -> np.ndarray`: the NumPy evaluation (eager mode
  and the reference IR interpreter).
- `vjp`: the vector-Jacobian rules, written by calling primitives, so the
  same rule serves eager autograd (operands are concrete tensors) and the
  reverse-mode IR pass (operands are symbolic tensors that record IR nodes).
  Either a tuple with one rule per operand, `rule(g, *operands, out=...,
  **attrs) -> cotangent` (None for operands that are not differentiable), or
  for variadic ops one function `vjp(g, *operands, out=..., needs=...,
  **attrs) -> tuple`. Only the cotangents a caller needs are computed, so a
  rule never touches operands it does not need.

Operands are tensors or Python scalars ("literals", already of the kind of
the op's dtype); literals never get cotangents. Calling a primitive binds it
through the hook installed by the front end (`gradc.dispatch`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ..dtypes import DType


class ShapeError(RuntimeError):
    """An op was given operands whose shapes or dtypes its rule rejects."""


class Aval(NamedTuple):
    """Abstract value: what the rules see of an operand."""

    shape: tuple
    dtype: DType | None  # None for a Python-scalar literal (takes its peers' dtype)

    @property
    def ndim(self):
        return len(self.shape)


REGISTRY: dict[str, "Primitive"] = {}

_bind: Callable | None = None  # installed by gradc.dispatch


class Primitive:
    __slots__ = ("name", "impl", "shape", "vjp", "kind", "doc")

    def __init__(self, name, impl, shape, vjp=None, kind="other", doc=""):
        self.name, self.impl, self.shape, self.vjp = name, impl, shape, vjp
        self.kind = kind  # "unary", "binary", "compare", "reduce", "shape", "index", "linalg", ...
        self.doc = doc
        if name in REGISTRY:
            raise ValueError(f"primitive {name!r} registered twice")
        REGISTRY[name] = self

    def __call__(self, *operands, **attrs):
        return _bind(self, operands, attrs)

    def differentiable(self, i: int) -> bool:
        v = self.vjp
        return v is not None and (callable(v) or (i < len(v) and v[i] is not None))

    def cotangents(self, g, operands, out, attrs, needs):
        """Cotangents of the operands flagged in `needs` (None elsewhere)."""
        if callable(self.vjp):
            return self.vjp(g, *operands, out=out, needs=needs, **attrs)
        return tuple(
            rule(g, *operands, out=out, **attrs) if need and rule is not None else None
            for rule, need in zip(self.vjp, needs)
        )

    def __repr__(self):
        return f"<primitive {self.name}>"


def install_bind(fn):
    global _bind
    _bind = fn
