"""Recording IR from tensor code.

While a `GraphBuilder` is active, tensors whose payload is an IR `Value`
("symbolic" tensors) send every primitive they meet here instead of to NumPy:
the node is appended to the graph, with the user's file:line. Concrete
tensors that meet symbolic ones become graph constants, unless the builder
knows them as inputs (parameters, optimizer state).

The same builder serves tracing (front-end code on symbolic tensors) and the
reverse-mode pass (vjp rules on symbolic tensors).
"""
from __future__ import annotations

import linecache
import os

import numpy as np

from .. import dispatch
from ..prims import REGISTRY, make_const_value
from .graph import Graph, Value

_stack: list["GraphBuilder"] = []
_SPLAT_ABOVE = 64  # elements: smaller constants print in full, as they are


def active() -> "GraphBuilder":
    if not _stack:
        raise RuntimeError("a symbolic tensor was used outside of tracing (it escaped from a traced function)")
    return _stack[-1]


class GraphBuilder:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.known: dict[int, Value] = {}  # id(concrete tensor) -> its graph input
        self.keep: list = []  # the tensors behind `known`, kept alive while building
        self.rebound: list = []  # (concrete tensor, its array) changed in place while building
        self.loc: tuple[str, str] | None = None  # forced (loc, source) for nodes made now

    def __enter__(self):
        _stack.append(self)
        return self

    def __exit__(self, *exc):
        _stack.remove(self)
        return False

    def know(self, tensor, value: Value):
        self.known[id(tensor)] = value
        self.keep.append(tensor)

    # ------------------------------------------------------------ values
    def value_of(self, o):
        """The IR operand for a primitive operand: a Value or a literal."""
        from ..tensor import Tensor

        if not isinstance(o, Tensor):
            return o
        d = o._data
        if isinstance(d, Value):
            return d
        if id(o) in self.known:
            return self.known[id(o)]
        return self.constant(d)

    def constant(self, d: np.ndarray) -> Value:
        """A concrete array as a graph constant; one filled with a single value (the zeros
        of fresh optimizer state, say) as that value broadcast, so the graph text holds
        one number, not millions."""
        if d.size > _SPLAT_ABOVE and (d == d.flat[0]).all():
            value = make_const_value(d.reshape(-1)[0])
            scalar = self.emit("const", [], {"value": value}, _aval(value))
            return self.emit("broadcast", [scalar], {"shape": tuple(d.shape)}, _aval(d))
        return self.emit("const", [], {"value": make_const_value(d)}, _aval(d))

    def emit(self, op, operands, attrs, aval, name=None) -> Value:
        loc, source = self.loc if self.loc is not None else _user_loc()
        return self.graph.add_node(op, operands, attrs, aval.dtype, aval.shape, name=name, loc=loc, source=source)

    def bind(self, prim, operands, attrs, out_aval):
        from ..tensor import Tensor

        v = self.emit(prim.name, [self.value_of(o) for o in operands], attrs, out_aval)
        return Tensor._wrap(v)


def _aval(arr):
    from ..dtypes import as_dtype
    from ..prims import Aval

    return Aval(tuple(arr.shape), as_dtype(arr.dtype))


def _user_loc():
    f = dispatch.user_frame()
    if f is None:
        return "", ""
    path, line = f.f_code.co_filename, f.f_lineno
    return f"{os.path.basename(path)}:{line}", linecache.getline(path, line).strip()


def symbolic_bind(prim, operands, attrs, out_aval):
    return active().bind(prim, operands, attrs, out_aval)


def assign_symbolic(target, result):
    """`target` changed in place while tracing: it now holds `result` (SSA: a new value).

    A concrete tensor that is not a graph input (say optimizer state the step
    creates) is rebound too; the builder remembers its old payload so tracing
    can put it back."""
    from .. import ops

    b = active()
    if tuple(result.shape) != tuple(target.shape):
        result = ops.expand(result, tuple(target.shape))
    if result.dtype is not target.dtype:
        result = ops.to_dtype(result, target.dtype)
    v = b.value_of(result)
    if isinstance(target._data, np.ndarray) and id(target) not in b.known:
        b.rebound.append((target, target._data))
    target._data = v
    return target


def symbolic_tensor(value: Value):
    from ..tensor import Tensor

    return Tensor._wrap(value)


dispatch.symbolic_bind = symbolic_bind
assert "const" in REGISTRY
