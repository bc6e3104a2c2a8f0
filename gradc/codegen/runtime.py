"""`CompiledGraph`: native code for one graph, its arena, and the checks that
keep the native call safe.

Two ways to call it:

- `run(inputs)`: the reference interpreter's contract. Inputs are converted
  like the interpreter does; params and state are copied, so the caller's
  arrays are untouched; returns outputs and updated params/state by name.
- `bind(arrays)` once, then `call()` per step: params and state are used
  where they live and updated in place; the call from Python passes one
  pointer to a prebuilt table of buffer addresses. `call()` returns the
  outputs as read-only views of the arena, overwritten by the next call.
  `input_buffer(name)` binds a private buffer for a batch input, which the
  caller fills before each call: copying a small batch costs less than
  binding a new array (whose address alone costs about 2 us to read), and a
  private buffer never aliases a parameter that the step writes.

A compiled graph owns one arena, so it runs one call at a time (it is not
thread-safe).

Before any native call every array is checked (shape, dtype, layout) and
every index tensor that is a graph input is checked for range, so the native
code never reads out of bounds; index tensors computed inside the graph are
checked by the kernels, and a failed step writes no param or state.
"""
from __future__ import annotations

import ctypes
import weakref

import numpy as np

from ..ir.graph import Graph
from . import jit
from .kernels import nbytes
from .lower import ALIGN, CONSTS_SLOT, ARENA_SLOT, FIRST_INPUT_SLOT, Lowered, check_indices

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _aligned_empty(size: int) -> np.ndarray:
    """uint8 buffer of `size` bytes starting on a 64-byte boundary."""
    raw = np.empty(size + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + size]


def _fmt(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _pairs_to_check(updated, staged, bound):
    """(updated, other) pairs whose overlap a bind could have changed: only pairs
    with a newly staged array, so re-binding a batch costs O(updated x staged)."""
    for t in updated:
        for name in (bound if t in staged else staged):
            if name != t:
                yield t, name


class CompiledGraph:
    def __init__(self, graph: Graph, lowered: Lowered, optimized_ir: str, obj: bytes):
        """Load object code for `lowered` (from `jit.optimize`, or a cache) into a fresh JIT."""
        self.graph, self.name = graph, graph.name
        self._lowered, self._optimized, self.object_code = lowered, optimized_ir, obj
        self._asm = None
        lib = jit.NativeLibrary(obj, lowered.entry)
        self._finalizer = weakref.finalize(self, lib.close)
        self._fn = _ENTRY(lib.address)
        self.compile_seconds = 0.0
        self.from_cache = False  # set by compile_graph when the object code came from the disk cache

        self._arena = _aligned_empty(lowered.arena_bytes)
        self._status = memoryview(self._arena[:8].view(np.int64))
        self._input_checks = lowered.input_checks
        self._consts = _aligned_empty(lowered.consts.size)
        self._consts[:] = lowered.consts
        self._outputs = [self._view(b, v) for b, v in zip(lowered.outputs, graph.outputs)]
        self._inputs = {v.name: v for v in graph.inputs}
        self._read = {o.name for n in graph.nodes for o in n.inputs} | {v.name for v in graph.roots()}
        self._updated = {t.name for t, _ in graph.updates}
        self._required = [v.name for v in graph.inputs if v.name in self._read or v.name in self._updated]
        self._table, self._bound = self._new_table(), {}
        self._table_addr = self._table.ctypes.data
        self._missing = set(self._required)

    # ------------------------------------------------------------ calling
    def run(self, inputs: dict) -> dict:
        """Outputs and updated params/state by name (exactly `gradc.ir.interpret`'s contract)."""
        self._check_open()
        table, arrays = self._new_table(), {}
        for v in self.graph.inputs:
            if v.name in inputs:
                a = np.asarray(inputs[v.name])
                self._check_shape(v, a)
                if v.name in self._updated:  # a private copy, updated in place
                    a = np.array(a, dtype=v.dtype.np, order="C", copy=True)
                else:
                    a = np.require(a, v.dtype.np, ["C", "A"])
            elif v.name in self._read:
                raise KeyError(f"missing input %{v.name} ({v.type_str} {v.kind}); pass it in the inputs dict")
            elif v.name in self._updated:  # written, never read: the caller may omit it
                a = np.empty(v.shape, v.dtype.np)
            else:
                continue
            arrays[v.name] = a
            table[FIRST_INPUT_SLOT + self._slot_index(v.name)] = a.ctypes.data
        self._invoke(table.ctypes.data, arrays)
        result = {v.name: np.array(o) for v, o in zip(self.graph.outputs, self._outputs)}
        for target, _ in self.graph.updates:
            result[target.name] = arrays[target.name]
        return result

    def bind(self, arrays: dict) -> None:
        """Bind inputs by name for `call()`; params and state are used (and updated) in place."""
        self._check_open()
        staged = {}
        for name, a in arrays.items():
            v = self._inputs.get(name)
            if v is None:
                raise KeyError(f"graph {self.name} has no input %{name}; its inputs are "
                               + ", ".join("%" + n for n in self._inputs))
            if v.kind in ("param", "state"):
                self._check_in_place(v, a)
            else:
                a = np.asarray(a)
                self._check_shape(v, a)
                a = np.require(a, v.dtype.np, ["C", "A"])
            staged[name] = a
        bound = {**self._bound, **staged}
        for t, name in _pairs_to_check(self._updated & bound.keys(), staged.keys(), bound.keys()):
            a = bound[name]
            if np.may_share_memory(bound[t], a):
                    raise ValueError(f"%{t} is updated in place but its array overlaps the array bound to %{name}; "
                                     "bind separate arrays (e.g. a .copy())")
        self._bound = bound
        self._missing -= staged.keys()
        for name, a in staged.items():
            self._table[FIRST_INPUT_SLOT + self._slot_index(name)] = a.ctypes.data

    def input_buffer(self, name: str) -> np.ndarray:
        """A private aligned array bound to input `name`; write each call's value into it."""
        v = self._inputs.get(name)
        if v is None or v.kind in ("param", "state"):
            raise KeyError(f"graph {self.name} has no batch input %{name} (params and state are bound in place)")
        a = _aligned_empty(nbytes(v)).view(v.dtype.np).reshape(v.shape)
        a[...] = 0
        self.bind({name: a})
        return a

    def call(self) -> list:
        """One step on the bound arrays; returns the outputs (views valid until the next call)."""
        if self._missing or self._fn is None:
            self._check_open()
            raise RuntimeError("call() before every input was bound: missing "
                               + ", ".join("%" + n for n in self._required if n in self._missing)
                               + "; pass them to bind()")
        self._invoke(self._table_addr, self._bound)
        return self._outputs

    # ------------------------------------------------------------ inspection
    def llvm_ir(self, optimized: bool = False) -> str:
        return self._optimized if optimized else self._lowered.text

    def asm(self) -> str:
        if self._asm is None:
            self._asm = jit.assembly(self._optimized)
        return self._asm

    @property
    def arena_bytes(self) -> int:
        return self._lowered.arena_bytes

    def close(self) -> None:
        """Free the native code now (also happens when the object is garbage collected)."""
        self._finalizer()
        self._fn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if not self._finalizer.alive else f"arena {self.arena_bytes} bytes"
        return f"<gradc.codegen.CompiledGraph {self.name}: {len(self.graph.nodes)} nodes, {state}>"

    # ------------------------------------------------------------ internals
    def _invoke(self, table_addr: int, arrays: dict) -> None:
        for c in self._input_checks:
            check_indices(arrays[c.value], c)
        self._fn(table_addr)
        code = self._status[0]
        if code:
            raise IndexError(f"index out of range in {self._lowered.node_names[code]}: an index tensor computed "
                             "in the graph holds a value outside [-size, size); no param or state was updated")

    def _new_table(self) -> np.ndarray:
        t = np.zeros(FIRST_INPUT_SLOT + len(self.graph.inputs), np.uint64)
        t[ARENA_SLOT], t[CONSTS_SLOT] = self._arena.ctypes.data, self._consts.ctypes.data
        return t

    def _slot_index(self, name: str) -> int:
        return self._lowered.buffers[name].offset - FIRST_INPUT_SLOT

    def _view(self, buf, v) -> np.ndarray:
        base = self._arena if buf.region == "arena" else self._consts
        a = base[buf.offset:buf.offset + buf.nbytes].view(v.dtype.np).reshape(v.shape)
        a.flags.writeable = False
        return a

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError(f"compiled graph {self.name} was closed; compile it again")

    @staticmethod
    def _check_shape(v, a) -> None:
        if tuple(a.shape) != v.shape:
            raise ValueError(f"input %{v.name}: expected shape {_fmt(v.shape)}, got {_fmt(a.shape)}; "
                             "a compiled graph has static shapes (compile again for new shapes)")

    def _check_in_place(self, v, a) -> None:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"%{v.name} is a {v.kind} used in place: expected a numpy.ndarray, got {type(a).__name__}")
        self._check_shape(v, a)
        if a.dtype != v.dtype.np:
            raise TypeError(f"%{v.name}: expected dtype {v.dtype.np}, got {a.dtype}; a {v.kind} is updated "
                            f"in place, so convert it once (e.g. a.astype(np.{v.dtype.np}))")
        if not (a.flags.c_contiguous and a.flags.aligned):
            raise ValueError(f"%{v.name}: a {v.kind} used in place must be C-contiguous and aligned; "
                             "bind np.ascontiguousarray(a) and keep using that array")
        if v.name in self._updated and not a.flags.writeable:
            raise ValueError(f"%{v.name} is updated in place but its array is read-only")
