"""`gradc.compile`: trace once, differentiate, optimize, generate code, call natively.

A compiled step keeps one *version* per guard key: the shapes and dtypes of
its inputs, the parameters' shapes, the optimizer's hyper-parameters (all but
the learning rate, which is a runtime scalar) and the layout of its state,
and the modules' train/eval flags. A call whose key is new traces again (and
says why when `GRADC_LOG=recompiles`); errors found while tracing (wrong
feature size, dtype) are raised before anything is written. Each call then
binds parameters and state where they live, reads the learning rates, runs
the executable, and writes updates and new optimizer state back.
"""
from __future__ import annotations

import functools
import os
import sys
import threading

import numpy as np

from . import tracing
from .tensor import Tensor

MAX_VERSIONS = 8


def _log(kind: str) -> bool:
    return kind in os.environ.get("GRADC_LOG", "").split(",")


def _describe(a) -> str:
    if isinstance(a, Tensor):
        return f"{a.dtype.short}[{','.join(map(str, a.shape))}]"
    if isinstance(a, np.ndarray):
        return f"ndarray {a.dtype}[{','.join(map(str, a.shape))}]"
    return repr(a)


def _as_input(a, name):
    """A call argument as a tensor (any strides accepted; complex/object rejected)."""
    if isinstance(a, Tensor):
        return a
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf" or a.dtype.itemsize < 4 and a.dtype.kind == "f":
            raise TypeError(f"gradc.compile: argument {name!r} has unsupported dtype {a.dtype}; pass float32/float64/int64/bool data")
        return Tensor(a)
    return a


class _Version:
    """One traced-and-compiled variant of a step, with how to feed its inputs."""

    def __init__(self, step, args, passes):
        from .passes import run_pipeline

        self.traced = tracing.trace(step.fn, *args, name=step.__name__)
        self.stages = {"traced": self.traced.graph}
        self.stages["autodiff"] = self.traced.ir("autodiff")
        self.stages.update(run_pipeline(self.stages["autodiff"], passes))
        self.graph = self.stages["optimized"]
        self.executable = step.backend(self.graph)
        tracer = self.traced
        self.params = {name: p for name, p in tracer._params}
        self.state = {}  # input name -> (tensor, owning dict or None, key) for existing state
        for name, t, st, key in tracer._state:
            self.state[name] = (t, st, key)
        self.new_state = {}  # input name -> (optimizer state dict of a param, key)
        self.groups = {}
        k = 0
        n_groups = sum(len(o.param_groups) for o in tracer._optimizers)
        for opt in tracer._optimizers:
            for group in opt.param_groups:
                self.groups["lr" if n_groups == 1 else f"lr.{k}"] = group
                k += 1
        self.input_names = [v.name for v in self.graph.inputs if v.kind == "input"]
        self._types = {v.name: (v.shape, v.dtype.np) for v in self.graph.inputs}
        self._scalars = {name: np.zeros((), np.float64) for name in self.groups}
        self._bound = dict(self._scalars)
        self.executable.bind(self._scalars)
        by_name = {}
        for opt in tracer._optimizers:
            for p in (q for g in opt.param_groups for q in g["params"]):
                by_name[tracer._param_names.get(id(p))] = (opt, p)
        for v in self.graph.inputs:
            if v.kind == "state" and v.name not in self.state:
                pname, _, key = v.name.rpartition(".")
                while pname and pname not in by_name and "." in pname:  # fresh_name may have added a suffix
                    pname, _, key = pname.rpartition(".")
                self.new_state[v.name] = (by_name[pname], key)

    def _state_tensor(self, name):
        t, st, key = self.state[name]
        return t if st is None else st[key]  # optimizer state is looked up anew: load_state_dict replaces it

    def run(self, args):
        ex, feeds = self.executable, {}
        for name, p in self.params.items():
            if self._bound.get(name) is not p._data:
                feeds[name] = p._data
        for name in self.state:
            a = self._state_tensor(name)._data
            if self._bound.get(name) is not a:
                feeds[name] = a
        for name, group in self.groups.items():  # runtime scalars: read at every call
            self._scalars[name][()] = group["lr"]
        new_state = {name: np.zeros(self._types[name][0], self._types[name][1]) for name in self.new_state}
        feeds.update(new_state)
        tensors = [a for a in args if isinstance(a, Tensor)]
        for name, t in zip(self.input_names, tensors):
            feeds[name] = t._data
        ex.bind(feeds)
        self._bound.update(feeds)
        outs = [Tensor._wrap(np.array(o)) for o in ex.call()]
        for name, arr in new_state.items():
            (opt, p), key = self.new_state[name]
            opt.state[p][key] = Tensor._wrap(arr)
        return outs


class CompiledStep:
    """A training step (or any tensor function) compiled with `gradc.compile`."""

    def __init__(self, fn, passes=None, backend=None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.passes = passes
        self.backend = backend or default_backend()
        self._versions: dict = {}
        self._keys: list = []
        self._lock = threading.Lock()
        self._modules = [m for _, m in tracing._find(fn, _module_cls())]
        self._optimizers = [o for _, o in tracing._find(fn, _optimizer_cls())]

    def _guard(self, args) -> dict:
        key = {}
        names = tracing._arg_names(self.fn, len(args))
        for name, a in zip(names, args):
            key[name] = _describe(a)
        for i, m in enumerate(self._modules):
            key[f"module {i} mode"] = "train" if m.training else "eval"
            key[f"module {i} params"] = tuple((n, tuple(p.shape), p.dtype.short, p.requires_grad) for n, p in m.named_parameters())
        for i, opt in enumerate(self._optimizers):
            for j, group in enumerate(opt.param_groups):
                key[f"optimizer {i} group {j}"] = tuple(
                    (k, v) for k, v in group.items() if k not in ("params", "lr") and _hashable(v)
                )
                key[f"optimizer {i} group {j} state"] = tuple(
                    tuple(sorted((k, tuple(t.shape)) for k, t in opt.state.get(p, {}).items() if isinstance(t, Tensor)))
                    for p in group["params"]
                )
        return key

    def __call__(self, *args):
        args = tuple(_as_input(a, f"arg{i}") for i, a in enumerate(args))
        with self._lock:
            key = self._guard(args)
            frozen = tuple(key.items())
            version = self._versions.get(frozen)
            if version is None:
                version = self._compile(key, frozen, args)
            outs = version.run(args)
        return outs[0] if len(outs) == 1 else tuple(outs) if outs else None

    def _compile(self, key, frozen, args):
        if self._keys and _log("recompiles"):
            last = dict(self._keys[-1])
            why = [f"{k}: {last.get(k)} -> {v}" for k, v in key.items() if last.get(k) != v]
            print(f"gradc: recompiling {self.__name__} because " + "; ".join(why), file=sys.stderr)
        if len(self._versions) >= MAX_VERSIONS:
            raise RuntimeError(
                f"gradc.compile: {self.__name__} has been compiled {MAX_VERSIONS} times (one version per input "
                "shape/dtype and optimizer state layout). Pad batches to a fixed shape, or raise "
                "gradc.compiler.MAX_VERSIONS."
            )
        version = _Version(self, args, self.passes)
        self._versions[frozen] = version
        self._keys.append(frozen)
        return version

    # ------------------------------------------------------------ inspection
    def _latest(self) -> _Version:
        if not self._keys:
            raise RuntimeError(f"{self.__name__} has not been called yet: call it once so it can be traced")
        return self._versions[self._keys[-1]]

    def ir(self, stage: str = "optimized"):
        stages = self._latest().stages
        if stage not in stages:
            raise KeyError(f"unknown IR stage {stage!r}; available: {', '.join(stages)}")
        return stages[stage]

    def llvm_ir(self, optimized=False):
        return self._latest().executable.llvm_ir(optimized=optimized)

    def asm(self):
        return self._latest().executable.asm()

    @property
    def versions(self) -> int:
        return len(self._versions)


def _hashable(v):
    try:
        hash(v)
        return True
    except TypeError:
        return False


def _module_cls():
    from .nn import Module

    return Module


def _optimizer_cls():
    from .optim import Optimizer

    return Optimizer


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

    def call(self):
        res = self.run(self._bound)
        for target, _ in self.graph.updates:
            np.copyto(self._bound[target.name], res[target.name])
        return [res[v.name] for v in self.graph.outputs]

    def llvm_ir(self, optimized=False):
        raise RuntimeError("the interpreter backend generates no LLVM IR")

    asm = llvm_ir


def default_backend():
    """Native code through llvmlite; `GRADC_BACKEND=interpreter` selects the reference interpreter."""
    if os.environ.get("GRADC_BACKEND", "llvm") == "interpreter":
        return InterpretedGraph
    from .codegen import compile_graph

    return compile_graph


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
        res = fwd.backward.run(feeds)
        return tuple(Tensor._wrap(np.array(res["d." + n])) if need and ("d." + n) in res else None
                     for n, need in zip(fwd.operand_names, needs))


class _ForwardVersion:
    def __init__(self, module, x, backend, passes):
        from .ir import GRAD, check
        from .ir.builder import GraphBuilder, symbolic_tensor
        from .passes import run_pipeline
        from .passes.autodiff import autodiff

        traced = tracing.trace(module, x, name=type(module).__name__.lower())
        g = traced.graph
        if len(g.outputs) != 1:
            raise NotImplementedError("gradc.compile(module): the forward must return one tensor")
        self.graph = run_pipeline(g, passes)["optimized"]
        self.executable = backend(self.graph)
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
        self.backward_graph = run_pipeline(check(autodiff(b)), passes)["optimized"]
        self.backward = backend(self.backward_graph)
        self.vjp = _CompiledVJP(self, "compiled_forward")


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
        key = (tuple(x.shape), x.dtype.short, m.training,
               tuple((tuple(p.shape), p.dtype.short) for p in m.parameters()))
        with self._lock:
            v = self._versions.get(key)
            if v is None:
                if len(self._versions) >= MAX_VERSIONS:
                    raise RuntimeError(f"gradc.compile: {type(m).__name__} compiled {MAX_VERSIONS} times; use fixed shapes")
                v = self._versions[key] = _ForwardVersion(m, x, self.backend, self.passes)
            feeds = {name: t._data for name, t in zip(v.operand_names, [x] + v.params)}
            res = v.executable.run(feeds)
        out = Tensor._wrap(np.array(res[v.graph.outputs[0].name]))
        if autograd.is_grad_enabled():
            autograd.record(out, v.vjp, [x] + v.params, {})
        return out

    def __repr__(self):
        return f"CompiledModule({self._orig_mod!r})"


def compile(fn=None, *, passes=None, backend=None):  # noqa: A001 - PyTorch's name
    """Compile a training step or a module; usable as `@gradc.compile` too."""
    if fn is None:
        return lambda f: compile(f, passes=passes, backend=backend)
    if isinstance(fn, _module_cls()):
        return CompiledModule(fn, passes=passes, backend=backend)
    return CompiledStep(fn, passes=passes, backend=backend)
