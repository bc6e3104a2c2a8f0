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
  private buffer never aliases a parameter that the step writes. The call
  itself goes through `<entry>__call`, which takes no argument (the table's
  address sits in a global of the module, set once): ctypes converts no
  argument, about 0.1 us instead of 0.5 us.
- `run_steps(n, stacks)`: n steps in one native call (`<entry>__run`), each
  on the next batch of the stacked batch inputs; returns the outputs stacked.

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
from .lower import ALIGN, CONSTS_SLOT, ARENA_SLOT, FIRST_INPUT_SLOT, Lowered, batch_inputs, check_indices, index_uses

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_CALL = ctypes.CFUNCTYPE(None)
_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


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
        entry = lowered.entry
        lib = jit.NativeLibrary(obj, entry, f"{entry}__call", f"{entry}__run", f"{entry}__table")
        self._finalizer = weakref.finalize(self, lib.close)
        self._fn = _ENTRY(lib.address)
        self._call = _CALL(lib.addresses[f"{entry}__call"])
        self._run_steps = _RUN(lib.addresses[f"{entry}__run"])
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
        ctypes.c_void_p.from_address(lib.addresses[f"{entry}__table"]).value = self._table_addr
        self._missing = set(self._required)
        self._batch = batch_inputs(graph)
        self._saved: dict = {}  # name -> the copy `run_steps` keeps of an updated array
        self._may_fail = any(  # a kernel checks an index computed in the graph
            v.producer is not None and v.producer.op != "const" for n in graph.nodes for v, _, _ in index_uses(n))

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
        for c in self._input_checks:
            check_indices(self._bound[c.value], c)
        self._call()
        if self._status[0]:
            self._raise_status()
        return self._outputs

    def call_lines(self, ref, out: str) -> list:
        """Python source of `out = call()` for a caller's generated fast path (`ref(obj)` names an
        object in it), once every input is bound: the same checks and native call, inline."""
        e = ref(self)
        lines = [f"{ref(check_indices)}({e}._bound[{c.value!r}], {ref(c)})" for c in self._input_checks]
        lines.append(f"{e}._call()")
        if self._may_fail:  # only a kernel that checks indices sets the status word
            lines += [f"if {ref(self._status)}[0]:", f"    {e}._raise_status()"]
        return lines + [f"{out} = {ref(self._outputs)}"]

    def run_steps(self, n: int, stacks: dict) -> list:
        """n steps in one native call: `stacks[name]` holds batch input `name` of every step
        along a new first axis (inputs not given keep their bound array); returns each
        output's n values stacked. Params and state are updated in place step after step.
        Every stacked index tensor is checked before the first step. When the graph checks
        indices it computes itself (inside kernels), the run first copies the params and
        state it updates (into buffers kept for the next run): a step that fails there
        restores them, so a failed run changes nothing, like a failed call."""
        if self._fn is None:
            self._check_open()
        arrays = {name: self._stack(n, name, a) for name, a in stacks.items()}
        missing = [m for m in self._required if m in self._missing and m not in arrays]
        if missing:
            raise RuntimeError("run_steps() before every input was bound: missing "
                               + ", ".join("%" + m for m in missing) + "; pass them to bind() or stack them")
        for c in self._input_checks:
            check_indices(arrays[c.value] if c.value in arrays else self._bound[c.value], c)
        outs = [np.empty((n, *v.shape), v.dtype.np) for v in self.graph.outputs]
        words = [n]
        for v in self._batch:
            a = arrays.get(v.name)
            words += [self._table[FIRST_INPUT_SLOT + self._slot_index(v.name)], 0] if a is None else \
                [a.ctypes.data, nbytes(v)]
        words += [o.ctypes.data for o in outs]
        steps = np.array(words, np.uint64)
        saved = self._save_updated() if self._may_fail else []
        self._run_steps(self._table_addr, steps.ctypes.data)
        done = int(steps[0])
        if done < n:
            for a, copy in saved:
                np.copyto(a, copy)
            self._raise_status(f" at step {done + 1} of {n}")
        return outs

    def _save_updated(self) -> list:
        """(array, copy) of every param and state the step updates, copied into kept buffers."""
        pairs = []
        for name in sorted(self._updated):
            a = self._bound[name]
            copy = self._saved.get(name)
            if copy is None or copy.shape != a.shape or copy.dtype != a.dtype:
                copy = self._saved[name] = np.empty_like(a)
            np.copyto(copy, a)
            pairs.append((a, copy))
        return pairs

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
        self._fn = self._call = self._run_steps = None

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
        if self._status[0]:
            self._raise_status()

    def _raise_status(self, where: str = "") -> None:
        raise IndexError(f"index out of range in {self._lowered.node_names[self._status[0]]}{where}: an index "
                         "tensor computed in the graph holds a value outside [-size, size); no param or state "
                         "was updated")

    def _stack(self, n: int, name: str, a) -> np.ndarray:
        """`a` as n batches of input `name`: C-contiguous, its dtype, never overlapping what the step writes."""
        v = self._inputs.get(name)
        if v is None or v.kind != "input":
            raise KeyError(f"graph {self.name} has no batch input %{name}")
        a = np.asarray(a)
        if a.shape != (n, *v.shape):
            raise ValueError(f"input %{name}: expected {n} stacked batches of shape {_fmt(v.shape)}, "
                             f"got shape {_fmt(a.shape)}")
        a = np.require(a, v.dtype.np, ["C", "A"])
        if any(np.may_share_memory(a, self._bound[t]) for t in self._updated if t in self._bound):
            a = a.copy()
        return a

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
