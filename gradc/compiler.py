"""`gradc.compile`: trace once, differentiate, optimize, generate code, call natively.

A compiled step keeps one *version* per guard key: the shapes and dtypes of
its arguments; the parameters, buffers and optimizer state it reads (under
the names tracing gives them, with shape, dtype and requires_grad); the
modules' types, train/eval flags and plain attributes; the optimizers'
hyper-parameters except the learning rate, which is a runtime scalar read at
every call. A new key traces again (saying why when `GRADC_LOG=recompiles`);
errors found while tracing (a wrong feature size or dtype) are raised, naming
the user's line, before anything is written.

The per-call path is one generated function (`guards.Guard`, 2-3 us for the seed's
linear regression): under the step's lock it checks each argument's type,
shape and dtype, and compares with `is` every object the key depends on: the
modules, optimizers and scalars the step names, every registry and attribute
of those modules, each parameter's and state tensor's array, requires_grad,
each param group's entries but the learning rate, and the optimizer state's
layout (plain scalar attributes and hyper-parameters by value, in one tuple
per dict). Whatever can change the key replaces one of these objects, so only
then is the key computed by value: an equal key keeps its version and binds
the arrays that were replaced (load_state_dict, `p.data = ...`) without
recompiling. Then it feeds the arguments: an array passed again (the same
object, maybe changed in place) is read where it is, as bound when the
version was chosen, any other is copied into the version's private input
buffer; writes the learning rates; makes the native call, with no argument
(the pointer table is set once); and returns the outputs as new tensors.

A version whose step creates optimizer state runs once, so it runs on the
reference interpreter rather than being compiled (see `_backend_for`).

`step.run(n, *stacks)` makes n steps in one native call over stacked batches,
with the same guards and checks (every batch's index tensors checked before
the first step), the learning rates read once per run, and the same results,
parameters and optimizer state as n calls.
"""
from __future__ import annotations

import ctypes
import functools
import linecache
import operator
import os
import sys
import threading
import weakref
from itertools import chain

import numpy as np

from . import dispatch, tracing
from .errors import TraceError
from .guards import Guard, World
from .tensor import Tensor

MAX_VERSIONS = 8


def _log(kind: str) -> bool:
    return kind in os.environ.get("GRADC_LOG", "").split(",")


def _as_input(a, name):
    """A call argument as a tensor (any strides accepted; complex/object rejected)."""
    if isinstance(a, Tensor):
        return a
    if isinstance(a, np.ndarray):
        _check_dtype(a, name)
        return Tensor(a)
    return a


def _check_dtype(a: np.ndarray, name) -> None:
    if a.dtype.kind not in "biuf" or a.dtype.itemsize < 4 and a.dtype.kind == "f":
        raise TypeError(f"gradc.compile: argument {name!r} has unsupported dtype {a.dtype}; pass float32/float64/int64/bool data")


def _never(args) -> bool:
    return False


def _result(outs):
    return outs[0] if len(outs) == 1 else tuple(outs) if outs else None


def _outputs(result) -> list:
    """The arrays of a step's result (`_result`'s inverse)."""
    if result is None:
        return []
    return [t._data for t in (result if isinstance(result, tuple) else (result,))]


# ----------------------------------------------------------------------------- tracing errors
def _user_line(tb) -> str:
    """`file:line: source` of the innermost frame of a traceback outside gradc."""
    where = ""
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if not dispatch.in_gradc(path):
            source = linecache.getline(path, tb.tb_lineno).strip()
            where = f"{os.path.basename(path)}:{tb.tb_lineno}" + (f": {source}" if source else "")
        tb = tb.tb_next
    return where


def _failing_layer(fn, tb) -> str:
    """`, in layer fc1: Linear(...)`: the innermost module whose call the traceback passes through."""
    from .nn import Module

    layer = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is Module.__call__.__code__:
            layer = frame.f_locals.get("self")
        tb = tb.tb_next
    if layer is None:
        return ""
    names = {id(m): path for root, top in tracing._find(fn, Module) for path, m in top.named_modules(prefix=root)}
    name = names.get(id(layer))
    return f", in layer {name + ': ' if name else ''}{repr(layer).splitlines()[0]}"


def _trace(fn, args, name, label):
    """`tracing.trace`, with the user's line added to the message of an error raised while tracing."""
    try:
        return tracing.trace(fn, *args, name=name)
    except Exception as e:
        where, layer = _user_line(e.__traceback__), _failing_layer(fn, e.__traceback__)
        if (where or layer) and not isinstance(e, TraceError):  # a TraceError names the line already
            note = f"(raised while gradc.compile traced {label}{layer}{', at ' + where if where else ''})"
            if len(e.args) == 1 and isinstance(e.args[0], str) and type(e).__str__ is BaseException.__str__:
                e.args = (f"{e.args[0]} {note}",)
            else:
                e.add_note(note)
        raise


def _dump(name: str, stages: dict, executables: dict) -> None:
    """`GRADC_DUMP=DIR`: the IR stages compiling made (text and DOT; tracing wrote the traced
    and autodiff ones), the LLVM IR before and after LLVM's optimizer, the assembly."""
    d = os.environ.get("GRADC_DUMP")
    if not d:
        return
    for stage, g in stages.items():
        tracing._dump(g, stage)
    os.makedirs(d, exist_ok=True)
    files = {}
    for suffix, ex in executables.items():
        try:
            files[f"{name}{suffix}.ll"] = ex.llvm_ir()
            files[f"{name}{suffix}.opt.ll"] = ex.llvm_ir(optimized=True)
            files[f"{name}{suffix}.s"] = ex.asm()
        except RuntimeError:  # the interpreter backend has no LLVM IR
            pass
    for fname, text in files.items():
        with open(os.path.join(d, fname), "w") as f:
            f.write(text)


# ----------------------------------------------------------------------------- compiled steps
class _Version:
    """One traced-and-compiled variant of a step, and how to feed it."""

    def __init__(self, step, args, key: dict, world: World, number: int):
        from .passes import run_pipeline

        self.key, self.name = key, step.__name__ if number == 1 else f"{step.__name__}_v{number}"
        self.traced = _trace(step.fn, args, self.name, step.__name__)
        self.stages = {"traced": self.traced.graph, "autodiff": self.traced.ir("autodiff")}
        self.pipeline = run_pipeline(self.stages["autodiff"], step.passes)
        self.stages.update(self.pipeline)
        self.graph = self.stages["optimized"]
        inputs = {v.name: v for v in self.graph.inputs}
        self.params = [n for n, v in inputs.items() if v.kind == "param"]
        self.state = [n for n, v in inputs.items() if v.kind == "state" and n in world.state]
        self.new_state = [v for n, v in inputs.items() if v.kind == "state" and n not in world.state]
        self.executable = ex = _backend_for(step.backend, self.new_state)(self.graph)
        n_groups = len(world.groups)
        scalars = ["lr" if n_groups == 1 else f"lr.{k}" for k in range(n_groups)]
        self._lr_buffers = [ex.input_buffer(n) if n in inputs else None for n in scalars]
        self.slots = []  # per argument: (shape, dtype, input buffer), or (None, value, None) for a constant
        self.inputs = []  # per argument: the graph input it feeds, or None
        for name, a in zip(step._names(len(args)), args):
            if isinstance(a, Tensor):
                buf = ex.input_buffer(name) if name in inputs else None
                self.slots.append((tuple(a.shape), a._data.dtype, buf))
                self.inputs.append(name if buf is not None else None)
            else:
                self.slots.append((None, a, None))
                self.inputs.append(None)
        self.reads = [buf for _, _, buf in self.slots]  # the array each input slot reads now
        self._bound, self._lr_cells, self._owners = {}, [], []
        _dump(self.name, {"optimized": self.graph}, {"": ex})

    def adopt(self, world: World) -> None:
        """Bind the params and state the step reads now (resolved by name), where their arrays changed."""
        for i, (_, _, buf) in enumerate(self.slots):
            if self.reads[i] is not buf:  # a caller's array must not be bound while params are (overlap checks)
                self.unshare(i)
        feeds = {}
        for name, t in chain(((n, world.params[n]) for n in self.params), ((n, world.state[n]) for n in self.state)):
            a = t._data
            if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
                # updated in place, so it needs its own plain array (eager SGD clones a transposed
                # gradient's layout into its momentum buffer, for one)
                t._data = np.array(a, order="C")
            if self._bound.get(name) is not t._data:
                feeds[name] = t._data
        if feeds:
            self.executable.bind(feeds)
            self._bound.update(feeds)
        # the guard's fast path writes these cells too (a ctypes store costs less than numpy's)
        self._lr_cells = [(ctypes.c_double.from_address(buf.ctypes.data), g)
                          for buf, g in zip(self._lr_buffers, world.groups) if buf is not None]
        self._owners = [(v, world.owner(v.name)) for v in self.new_state]

    def load(self, args, share=True) -> None:
        """Feed the arguments (as passed): with `share`, an array the input's buffer could be is
        bound as it is (calls that pass it again copy nothing); any other is copied into the
        private buffer."""
        for i, (a, (_, _, buf)) in enumerate(zip(args, self.slots)):
            if buf is None:
                continue
            d = a._data if isinstance(a, Tensor) else a
            if share and type(d) is np.ndarray and d.dtype == buf.dtype and d.flags.c_contiguous and d.flags.aligned:
                try:
                    self.executable.bind({self.inputs[i]: d})
                    self.reads[i] = d
                    continue
                except ValueError:  # it overlaps a param or state that the step updates
                    pass
            self.unshare(i)
            buf[...] = d

    def unshare(self, i: int) -> np.ndarray:
        """Point input slot `i` back at its private buffer (and return it)."""
        buf = self.slots[i][2]
        if self.reads[i] is not buf:
            self.executable.bind({self.inputs[i]: buf})
            self.reads[i] = buf
        return buf

    def run_steps(self, n: int, stacks) -> list:
        """n steps in one native call on stacked batches (arrays, one per argument, None for
        constants); the learning rates are read once. Returns the stacked output arrays."""
        self._write_lrs()
        return self.executable.run_steps(n, {name: a for name, a in zip(self.inputs, stacks) if name is not None})

    def run(self):
        """One call on the loaded arguments: the step's result (a tensor, a tuple of them, or None)."""
        self._write_lrs()
        if self._owners:
            return self._run_creating_state()
        return _result([Tensor._wrap(o.copy()) for o in self.executable.call()])

    def _write_lrs(self) -> None:
        """The runtime scalars: each param group's learning rate, read now."""
        for cell, group in self._lr_cells:
            cell.value = group["lr"]

    def _run_creating_state(self):
        """A step that creates optimizer state: fresh arrays, handed to the optimizer after the call."""
        created = {v.name: np.zeros(v.shape, v.dtype.np) for v, _ in self._owners}
        self.executable.bind(created)
        outs = self.executable.call()
        for v, (opt, p, key) in self._owners:
            opt.state[p][key] = Tensor._wrap(created[v.name])
        return _result([Tensor._wrap(o.copy()) for o in outs])


class CompiledStep:
    """A training step (or any tensor function) compiled with `gradc.compile`; calls are serialized."""

    def __new__(cls, *args, **kwargs):
        # a class of its own, whose `__call__` becomes the generated fast path of the version
        # chosen last (`_select`): no Python frame between the user's call and the guard
        own = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        return super().__new__(own)

    def __init__(self, fn, passes=None, backend=None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.passes = passes
        self.backend = backend or default_backend()
        self._versions: dict = {}  # frozen key -> _Version, in the order they were compiled
        self._lock = threading.Lock()
        self._current = None  # the version chosen by the last call
        self._guard = None  # the fast path of the next call, if it may use that version too (a guards.Guard)
        self._check = _never
        self._arg_names: dict = {}  # number of arguments -> their names (inspect.signature is slow)

    def __del__(self):
        # the class is in a reference cycle (as every class is): let the fast path and the
        # native code it holds go now, not at the next collection
        self._use_fast_path(None)

    def _use_fast_path(self, call) -> None:
        """Make `call` this step's `__call__` (None: the slow path again)."""
        cls = type(self)
        if call is not None:
            cls.__call__ = call
        elif "__call__" in vars(cls):
            del cls.__call__

    def __call__(self, *args):
        """The slow path; once a version is chosen, the guard's fast path stands in for this method."""
        with self._lock:
            return self._slow(args)

    def _slow(self, args):
        """A call that the fast path does not cover (the lock is held)."""
        self._select(args)
        return self._current.run()

    def run(self, n: int, *args):
        """`n` steps in one native call: each tensor argument is a stack of n batches along a
        new first axis (`losses = step.run(100, xs, ys)` with xs of shape (100, *x.shape));
        other arguments are passed to every step as they are. Returns the n results stacked
        (a tensor of shape (n, *loss.shape), a tuple of them, or None), and leaves the model
        and optimizer exactly as n calls `step(xs[i], ys[i])` would. The same guards and
        checks apply as to one call, to every batch before the first step runs; the learning
        rates are read once, at the start (a scheduler steps between runs). A step that
        creates optimizer state runs alone first, as one call."""
        n = operator.index(n)
        if n < 1:
            raise ValueError(f"{self.__name__}.run(n, ...) needs n >= 1, got {n}")
        stacks = [self._stack(n, a, name) for a, name in zip(args, self._names(len(args)))]
        with self._lock:
            outs = self._run_steps(n, args, stacks)
        return _result([Tensor._wrap(o) for o in outs])

    def _names(self, n: int) -> list:
        """The names of the step's first n arguments (computed once per n: inspect.signature is slow)."""
        names = self._arg_names.get(n)
        if names is None:
            names = self._arg_names[n] = tracing._arg_names(self.fn, n)
        return names

    def _stack(self, n: int, a, name: str):
        """A tensor argument of `run` as an array of n batches, or None for a constant."""
        if not isinstance(a, (Tensor, np.ndarray)):
            return None
        d = a._data if isinstance(a, Tensor) else a
        _check_dtype(d, name)
        if d.ndim == 0 or d.shape[0] != n:
            raise ValueError(f"{self.__name__}.run({n}, ...): argument {name!r} has shape {list(d.shape)}; "
                             f"expected {n} batches stacked along the first axis")
        return d

    def _run_steps(self, n: int, args, stacks) -> list:
        first = tuple(a if d is None else d[0] for a, d in zip(args, stacks))
        try:
            same = self._check(first)
        except Exception:  # as in the guard's `call`: the slow path finds out
            same = False
        if not same:
            self._select(first, share=False)
        version = self._current
        if not version._owners:
            return version.run_steps(n, stacks)
        version.load(first, share=False)
        out = _outputs(version.run())  # creates optimizer state; the other steps use another version
        if n == 1:
            return [o[None] for o in out]
        rest = self._run_steps(n - 1, args, [None if d is None else d[1:] for d in stacks])
        return [np.concatenate([o[None], r]) for o, r in zip(out, rest)]

    def _select(self, args, share=True):
        """The slow path: the key by value, its version (compiled if new), bound to today's arrays
        (the arguments' own arrays too, if `share`)."""
        self._guard, self._check = None, _never
        self._use_fast_path(None)
        tensors = tuple(_as_input(a, n) for a, n in zip(args, self._names(len(args))))
        world = World(self.fn)
        key = world.key(tensors)
        frozen = tuple(key.items())
        version = self._versions.get(frozen)
        if version is None:
            version = self._compile(key, frozen, tensors, world)
        version.adopt(world)
        version.load(args, share)
        self._current = version
        # after tracing, which may add attributes; the guard reaches this step weakly (no cycle keeps it alive)
        self._guard = Guard(version, args, world, self._lock, weakref.WeakMethod(self._slow))
        self._check = self._guard.check
        self._use_fast_path(self._guard.call)

    def _compile(self, key, frozen, args, world):
        before = self._current.key if self._current else None
        why = "; ".join(_changes(before, key)) if before else ""
        if len(self._versions) >= MAX_VERSIONS:
            raise RuntimeError(
                f"gradc.compile: {self.__name__} has been compiled {MAX_VERSIONS} times (one version per input "
                f"shape/dtype, parameter layout and optimizer setting; this call changed {why}). Pad batches to "
                "a fixed shape, or raise gradc.compiler.MAX_VERSIONS."
            )
        if before and _log("recompiles"):
            print(f"gradc: recompiling {self.__name__} (version {len(self._versions) + 1}) because {why}", file=sys.stderr)
        version = _Version(self, args, key, world, len(self._versions) + 1)
        self._versions[frozen] = version
        return version

    # ------------------------------------------------------------ inspection
    def _latest(self) -> _Version:
        if not self._versions:
            raise RuntimeError(f"{self.__name__} has not been called yet: call it once so it can be traced")
        return self._current or list(self._versions.values())[-1]

    def ir(self, stage: str = "optimized"):
        stages = self._latest().stages
        if stage not in stages:
            raise KeyError(f"unknown IR stage {stage!r}; available: {', '.join(stages)}")
        return stages[stage]

    def llvm_ir(self, optimized=False):
        return self._native().llvm_ir(optimized=optimized)

    def explain(self, file=None) -> None:
        """Print the pass pipeline's report for the current version: per-pass statistics, the
        kernels with the ops and user lines they absorbed, and where fusion stopped."""
        from .passes.explain import explain

        print(explain(self._latest().pipeline), file=file or sys.stdout, end="")

    def asm(self):
        return self._native().asm()

    def _native(self):
        version = self._latest()
        if version.new_state and isinstance(version.executable, InterpretedGraph):
            raise RuntimeError(f"{self.__name__}'s first call, which created the optimizer's state, ran once on the "
                               "reference interpreter and has no native code: call the step again to compile the "
                               "steady-state step, then ask for its LLVM IR or assembly")
        return version.executable

    @property
    def versions(self) -> int:
        return len(self._versions)


def _changes(before: dict, after: dict) -> list:
    """`name: old -> new` for every entry of the key that differs."""
    out = [f"{k}: {before.get(k, '(none)')} -> {v}" for k, v in after.items() if before.get(k) != v]
    return out + [f"{k}: {v} -> (none)" for k, v in before.items() if k not in after]


class InterpretedGraph:
    """The reference backend: runs the graph on the IR interpreter, with the
    code generator's calling contract (`run`, or `bind` + `call` updating the
    bound params and state in place)."""

    def __init__(self, graph):
        self.graph = graph
        self._bound = {}

    def run(self, feeds):
        from .ir import interpret

        return interpret(self.graph, feeds)

    def bind(self, arrays):
        self._bound.update(arrays)

    def input_buffer(self, name):
        v = next(v for v in self.graph.inputs if v.name == name)
        self._bound[name] = a = np.zeros(v.shape, v.dtype.np)
        return a

    def call(self):
        res = self.run(self._bound)
        for target, _ in self.graph.updates:
            np.copyto(self._bound[target.name], res[target.name])
        return [res[v.name] for v in self.graph.outputs]

    def call_lines(self, ref, out: str) -> list:
        return [f"{out} = {ref(self.call)}()"]

    def run_steps(self, n: int, stacks: dict) -> list:
        """`CompiledGraph.run_steps` on the interpreter: the stacked index tensors are checked
        first, then the steps run one after the other; a step that fails restores the params
        and state as they were before the first."""
        from .codegen.lower import IndexCheck, check_indices, index_uses

        for node in self.graph.nodes:
            for v, size, axis in index_uses(node):
                if v.name in stacks:
                    check_indices(np.asarray(stacks[v.name]), IndexCheck(v.name, size, axis, node.describe()))
        saved = {name: self._bound[name] for name in stacks if name in self._bound}
        before = [(self._bound[t.name], self._bound[t.name].copy()) for t, _ in self.graph.updates]
        outs = []
        try:
            for i in range(n):
                self._bound.update((name, np.asarray(a[i])) for name, a in stacks.items())
                outs.append([np.array(o) for o in self.call()])
        except Exception:
            for a, copy in before:
                np.copyto(a, copy)
            raise
        finally:
            self._bound.update(saved)
        return [np.stack([o[j] for o in outs]) for j in range(len(self.graph.outputs))]

    def llvm_ir(self, optimized=False):
        raise RuntimeError("the interpreter backend generates no LLVM IR")

    asm = llvm_ir


def _backend_for(backend, new_state):
    """The backend of a version: a version that creates optimizer state (Adam's moments,
    SGD's momentum buffers) runs once, at the first step, so it runs on the reference
    interpreter, which costs about one eager step, rather than being compiled to native code
    (half a second and more); the next call compiles the steady-state step."""
    from .codegen import compile_graph

    return InterpretedGraph if new_state and backend is compile_graph else backend


def default_backend():
    """Native code through llvmlite; `GRADC_BACKEND=interpreter` selects the reference interpreter."""
    if os.environ.get("GRADC_BACKEND", "llvm") == "interpreter":
        return InterpretedGraph
    from .codegen import compile_graph

    return compile_graph


# ----------------------------------------------------------------------------- compiled modules
class _CompiledVJP:
    """Stands in for a primitive in the autograd tape: the vjp of a compiled forward
    is a call of its compiled backward graph."""

    vjp = True

    def __init__(self, fwd, name):
        self.fwd, self.name = fwd, name

    def differentiable(self, i):
        return True

    def cotangents(self, g, operands, out, attrs, needs):
        fwd = self.fwd
        feeds = {name: t._data for name, t in zip(fwd.operand_names, operands)}
        feeds["d.out"] = np.ascontiguousarray(g._data)
        with fwd.lock:  # the backward graph's arena is shared by every call
            res = fwd.backward.run(feeds)
        return tuple(Tensor._wrap(res["d." + n]) if need and ("d." + n) in res else None
                     for n, need in zip(fwd.operand_names, needs))


class _ForwardVersion:
    def __init__(self, module, x, backend, passes, lock):
        from .ir import GRAD, check
        from .ir.builder import GraphBuilder, symbolic_tensor
        from .passes import run_pipeline
        from .passes.autodiff import autodiff

        name = type(module).__name__.lower()
        traced = _trace(module, (x,), name, type(module).__name__)
        g = traced.graph
        if len(g.outputs) != 1:
            raise NotImplementedError("gradc.compile(module): the forward must return one tensor")
        self.pipeline = run_pipeline(g, passes)
        self.graph = self.pipeline.graph
        self.executable = backend(self.graph)
        self.lock = lock
        self.params = [p for _, p in traced._params]
        self.operand_names = [g.inputs[-1].name] + [n for n, _ in traced._params]
        # backward: d(sum(out * d.out)) with respect to the input and every parameter
        b = g.copy()
        out = b.outputs[0]
        cot = b.add_input("d.out", out.dtype, out.shape, "input")
        with GraphBuilder(b):
            s = (symbolic_tensor(out) * symbolic_tensor(cot)).sum()
        wrt = [b.input(n) for n in self.operand_names]
        b.outputs = [b.add_node(GRAD, [s._data, w], {}, w.dtype, w.shape, name=f"d.{w.name}") for w in wrt]
        self.backward_pipeline = run_pipeline(check(autodiff(b)), passes)
        self.backward_graph = self.backward_pipeline.graph
        self.backward = backend(self.backward_graph)
        self.vjp = _CompiledVJP(self, "compiled_forward")
        _dump(name, {"optimized": self.graph, "backward": self.backward_graph},
              {"": self.executable, ".backward": self.backward})


class CompiledModule:
    """`gradc.compile(module)`: calls run the traced forward natively; with grad
    enabled the output's `.backward()` runs the compiled backward graph and
    accumulates into the parameters' `.grad` as eager autograd would."""

    def __init__(self, module, passes=None, backend=None):
        self._orig_mod = module
        self.passes, self.backend = passes, backend or default_backend()
        self._versions = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._orig_mod, name)

    def __call__(self, x):
        from . import autograd

        x = _as_input(x, "input")
        m = self._orig_mod
        params = list(m.parameters())
        # the version holds its parameters, so their ids are not reused while it lives
        key = (tuple(x.shape), x.dtype.short, tuple((mod.training, type(mod)) for mod in m.modules()),
               tuple((id(p), tuple(p.shape), p.dtype.short) for p in params))
        with self._lock:
            v = self._versions.get(key)
            if v is None:
                if len(self._versions) >= MAX_VERSIONS:
                    raise RuntimeError(f"gradc.compile: {type(m).__name__} compiled {MAX_VERSIONS} times; use fixed "
                                       "shapes, or raise gradc.compiler.MAX_VERSIONS")
                v = self._versions[key] = _ForwardVersion(m, x, self.backend, self.passes, self._lock)
            feeds = {name: t._data for name, t in zip(v.operand_names, [x] + v.params)}
            res = v.executable.run(feeds)
        out = Tensor._wrap(res[v.graph.outputs[0].name])
        if autograd.is_grad_enabled():
            autograd.record(out, v.vjp, [x] + v.params, {})
        return out

    def explain(self, file=None) -> None:
        """Print the pass report of the last compiled forward graph and of its backward graph."""
        from .passes.explain import explain

        if not self._versions:
            raise RuntimeError(f"{type(self._orig_mod).__name__} has not been called yet: call it once so it can be traced")
        v = list(self._versions.values())[-1]
        out = file or sys.stdout
        print(explain(v.pipeline), file=out)
        print(explain(v.backward_pipeline), file=out, end="")

    def __repr__(self):
        return f"CompiledModule({self._orig_mod!r})"


def compile(fn=None, *, passes=None, backend=None):  # noqa: A001 - PyTorch's name
    """Compile a training step or a module; usable as `@gradc.compile` too."""
    if fn is None:
        return lambda f: compile(f, passes=passes, backend=backend)
    if isinstance(fn, _module_cls()):
        return CompiledModule(fn, passes=passes, backend=backend)
    return CompiledStep(fn, passes=passes, backend=backend)


def _module_cls():
    from .nn import Module

    return Module
