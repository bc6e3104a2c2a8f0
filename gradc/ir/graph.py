"""The IR's data structures: values, nodes and graphs.

A `Graph` is a flat list of `Node`s in SSA form. Every `Value` has a static
shape and a dtype and is defined once: either as a graph input (kind
`param`, `state`, `input` or `scalar`) or by one node. A node applies a
registry primitive (`op` is its name) to operands, which are values or
Python-scalar literals, with static attributes. Two ops are not primitives:
`grad` (the traced marker "gradient of %loss with respect to %p", consumed by
the reverse-mode pass) and `const` is a primitive like any other.

`updates` are the in-place writes a step performs on params and state,
applied after the outputs are computed: `%0.weight <- %17`.

After the `fuse` pass, nodes carry the name of the kernel they belong to
(`node.kernel`) and `graph.kernels` holds each kernel's header: the values
it writes to memory and, after `plan`, where they live (see passes/fuse.py
and passes/plan.py). The interpreter ignores kernels.
"""
from __future__ import annotations

import itertools

from ..dtypes import DType

INPUT_KINDS = ("param", "state", "input", "scalar")
GRAD = "grad"  # the marker op: %d.p = grad %loss wrt %p


def type_str(dtype: DType, shape) -> str:
    """`f32[2,3]`: a type as the IR prints it."""
    return f"{dtype.short}[{','.join(map(str, shape))}]"


class Value:
    __slots__ = ("name", "dtype", "shape", "kind", "producer")

    def __init__(self, name: str, dtype: DType, shape: tuple, kind: str | None = None, producer=None):
        self.name, self.dtype, self.shape, self.kind, self.producer = name, dtype, tuple(shape), kind, producer

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def type_str(self):
        return type_str(self.dtype, self.shape)

    def __repr__(self):
        return f"%{self.name}: {self.type_str}"


class Node:
    __slots__ = ("op", "_operands", "inputs", "attrs", "out", "loc", "source", "kernel")

    def __init__(self, op: str, operands, attrs: dict, out: Value, loc: str = "", source: str = ""):
        self.op, self.operands, self.attrs, self.out = op, operands, dict(attrs), out
        self.loc, self.source = loc, source  # user's file:line and the text of that line
        self.kernel = None  # name of the kernel the node was fused into (see passes/fuse.py)
        out.producer = self

    @property
    def operands(self) -> list:
        """Values and literals, in order. Replace the list to change them (`inputs`,
        the operands that are values, is kept with it: passes read it in their inner loops)."""
        return self._operands

    @operands.setter
    def operands(self, operands) -> None:
        self._operands = list(operands)
        self.inputs = [o for o in self._operands if isinstance(o, Value)]

    def describe(self) -> str:
        """`%3 = matmul (train.py:12)`: the node as errors and reports name it."""
        return f"%{self.out.name} = {self.op}" + (f" ({self.loc})" if self.loc else "")

    def __repr__(self):
        from .printer import format_node

        return format_node(self)


class Kernel:
    """A kernel's header: the values its function writes to memory.

    `stores` are used after the kernel (by other kernels, outputs or
    updates); `temps` only inside it (a matmul result its epilogue reads, a
    transposed operand). After `plan`, `offsets` gives each an arena offset,
    or the name of the param it is written into (an in-place update), and
    `scratch` the offset of the kernel's private scratch bytes.
    """

    __slots__ = ("name", "stores", "temps", "offsets", "scratch")

    def __init__(self, name: str, stores=(), temps=(), offsets=None, scratch=None):
        self.name, self.stores, self.temps = name, list(stores), list(temps)
        self.offsets: dict = dict(offsets or {})  # value name -> arena offset (int) or param name (str)
        self.scratch: int | None = scratch

    def __repr__(self):
        return f"<kernel {self.name}: stores {self.stores}, temps {self.temps}>"


class Graph:
    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self.updates: list[tuple[Value, Value]] = []  # (param or state input, new value)
        self.kernels: dict[str, Kernel] = {}  # kernel name -> header, in schedule order (after fuse)
        self.fusion_notes: dict = {}  # (value, user) -> why they ended up in different kernels (not printed)
        self._names: set[str] = set()
        self._counter = itertools.count(1)

    # ------------------------------------------------------------ construction
    def fresh_name(self, hint: str | None = None) -> str:
        if hint is not None and hint not in self._names:
            return hint
        while True:
            n = str(next(self._counter)) if hint is None else f"{hint}.{next(self._counter)}"
            if n not in self._names:
                return n

    def _claim(self, name):
        if name in self._names:
            raise ValueError(f"value %{name} defined twice")
        self._names.add(name)

    def add_input(self, name: str, dtype: DType, shape, kind: str) -> Value:
        if kind not in INPUT_KINDS:
            raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
        self._claim(name)
        v = Value(name, dtype, shape, kind)
        self.inputs.append(v)
        return v

    def add_node(self, op, operands, attrs, dtype, shape, name=None, loc="", source="") -> Value:
        name = self.fresh_name() if name is None else name
        self._claim(name)
        v = Value(name, dtype, shape)
        self.nodes.append(Node(op, operands, attrs, v, loc, source))
        return v

    # ------------------------------------------------------------ queries
    def input(self, name: str) -> Value:
        for v in self.inputs:
            if v.name == name:
                return v
        raise KeyError(f"graph {self.name} has no input %{name}")

    def values(self):
        yield from self.inputs
        for n in self.nodes:
            yield n.out

    def users(self) -> dict:
        """value name -> list of nodes using it."""
        use: dict = {}
        for n in self.nodes:
            for o in n.inputs:
                use.setdefault(o.name, []).append(n)
        return use

    def roots(self) -> list[Value]:
        """Values the graph must produce: outputs and update sources."""
        return list(self.outputs) + [v for _, v in self.updates]

    def copy(self) -> "Graph":
        """An independent copy (new Value and Node objects, same names; attribute values,
        which are immutable, are shared). Equal to `parse(str(self))`, without the text."""
        g = Graph(self.name)
        env = {}
        for v in self.inputs:
            env[v.name] = g.add_input(v.name, v.dtype, v.shape, v.kind)
        for n in self.nodes:
            operands = [env[o.name] if isinstance(o, Value) else o for o in n.operands]
            out = n.out
            env[out.name] = g.add_node(n.op, operands, n.attrs, out.dtype, out.shape, out.name, n.loc, n.source)
            g.nodes[-1].kernel = n.kernel
        g.outputs = [env[v.name] for v in self.outputs]
        g.updates = [(env[t.name], env[v.name]) for t, v in self.updates]
        g.kernels = {name: Kernel(name, k.stores, k.temps, k.offsets, k.scratch) for name, k in self.kernels.items()}
        g.fusion_notes = dict(self.fusion_notes)
        g._counter = itertools.count(max((int(n) for n in g._names if n.isdigit()), default=0) + 1)
        return g

    def rebuild(self, nodes) -> None:
        """Replace the node list (after a pass) and refresh the name table."""
        self.nodes = list(nodes)
        self._names = {v.name for v in self.inputs} | {n.out.name for n in self.nodes}

    # ------------------------------------------------------------ views
    def __str__(self):
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self):
        return f"<gradc.ir.Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"

    def to_dot(self) -> str:
        from .dot import to_dot

        return to_dot(self)

    def verify(self) -> "Graph":
        from .verify import verify

        verify(self)
        return self


def ancestors(values) -> set[str]:
    """Names of the given values and of every value they are computed from."""
    seen, stack = set(), list(values)
    while stack:
        v = stack.pop()
        if v.name in seen:
            continue
        seen.add(v.name)
        if v.producer is not None:
            stack.extend(v.producer.inputs)
    return seen
