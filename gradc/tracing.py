"""`gradc.trace`: run a model or a training step on symbolic tensors and record its IR.

The graph's inputs are named after what they are: parameters after
`named_parameters()` (`%0.weight`), optimizer state after its parameter and
key (`%0.weight.momentum_buffer`), the learning rate of each param group as a
runtime `scalar` (`%lr`), and batch data after the function's arguments
(`%x`). During tracing:

- `loss.backward()` records `grad` markers, one per parameter the loss
  depends on, and sets `p.grad` to them;
- `optimizer.step()` runs its ordinary tensor code, so its update formulas
  become IR ops; in-place writes to parameters and state become updates
  (`%0.weight <- %17`); state the step creates becomes new `state` inputs;
- `zero_grad()` records nothing;
- anything needing a concrete value raises `TraceError` at the user's line.

Tracing changes nothing: parameters, gradients, optimizer state and param
groups are restored afterwards.
"""
from __future__ import annotations

import inspect

import numpy as np

from . import ir
from .ir.builder import GraphBuilder, symbolic_tensor
from .dtypes import float64
from .tensor import Tensor


def _find(fn, kinds):
    """Objects of the given kinds that `fn` refers to (closure cells and globals it names)."""
    if isinstance(fn, kinds):
        return [("", fn)]
    found, seen = [], set()

    def scan(code, glb, cells):
        names = list(code.co_names)
        pairs = [(n, glb.get(n)) for n in names]
        pairs += [(n, c.cell_contents) for n, c in cells if _cell_ok(c)]
        for name, obj in pairs:
            if isinstance(obj, kinds) and id(obj) not in seen:
                seen.add(id(obj))
                found.append((name, obj))
        for const in code.co_consts:
            if inspect.iscode(const):
                scan(const, glb, [])

    f = getattr(fn, "__func__", fn)
    if inspect.isfunction(f):
        cells = list(zip(f.__code__.co_freevars, f.__closure__ or ()))
        scan(f.__code__, f.__globals__, cells)
    if inspect.ismethod(fn) and isinstance(fn.__self__, kinds):
        found.append(("self", fn.__self__))
    return found


def _cell_ok(c):
    try:
        c.cell_contents
        return True
    except ValueError:
        return False


class _Tracer:
    """Holds what tracing swapped out, to put it back."""

    def __init__(self, fn, name):
        from .nn import Module
        from .optim import Optimizer

        self.fn = fn
        self.graph = ir.Graph(name)
        self.builder = GraphBuilder(self.graph)
        self.modules = [m for _, m in _find(fn, Module)]
        self.optimizers = [o for _, o in _find(fn, Optimizer)]
        self.params: list[tuple[str, Tensor]] = []
        self.state: list[tuple[str, Tensor, dict, str]] = []  # name, tensor, owning dict, key
        self.saved = []  # (tensor, data, grad)
        self.saved_groups = []  # (group, lr)
        self.saved_state = []  # (optimizer, {param: shallow copy of its state dict})
        self.param_names: dict[int, str] = {}

    # ------------------------------------------------------------ inputs
    def collect_params(self):
        prefixed = len([m for m in self.modules if any(True for _ in m.parameters())]) > 1
        for i, m in enumerate(self.modules):
            for n, p in m.named_parameters():
                if id(p) not in self.param_names:
                    self.param_names[id(p)] = f"m{i}.{n}" if prefixed else n
        for opt in self.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) not in self.param_names:
                        self.param_names[id(p)] = f"p{len(self.param_names)}"
        seen = set()
        for m in self.modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    self.params.append((self.param_names[id(p)], p))
        for opt in self.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        self.params.append((self.param_names[id(p)], p))

    def make_symbolic(self, t: Tensor, value):
        self.saved.append((t, t._data, t.grad))
        self.builder.know(t, value)
        t._data = value

    def bind_inputs(self, args):
        g = self.graph
        for name, p in self.params:
            self.make_symbolic(p, g.add_input(name, p.dtype, tuple(p.shape), "param"))
            p.grad = None
        for m in self.modules:
            for name, t in m.named_buffers():
                if id(t) not in self.builder.known:
                    self.state.append((name, t, None, None))
                    self.make_symbolic(t, g.add_input(name, t.dtype, tuple(t.shape), "state"))
        for opt in self.optimizers:
            self.saved_state.append((opt, {p: dict(st) for p, st in opt.state.items()}))
            for p, st in list(opt.state.items()):
                pname = self.param_names.get(id(p), f"p{id(p)}")
                for key, t in st.items():
                    if isinstance(t, Tensor):
                        name = f"{pname}.{key}"
                        self.state.append((name, t, st, key))
                        self.make_symbolic(t, g.add_input(name, t.dtype, tuple(t.shape), "state"))
        n_groups = sum(len(o.param_groups) for o in self.optimizers)
        k = 0
        for opt in self.optimizers:
            for group in opt.param_groups:
                name = "lr" if n_groups == 1 else f"lr.{k}"
                k += 1
                # f64, like the Python float it stands for: ops cast it to their operands' dtype
                v = g.add_input(name, float64, (), "scalar")
                self.saved_groups.append((group, group["lr"]))
                group["lr"] = symbolic_tensor(v)
        sym_args = []
        names = _arg_names(self.fn, len(args))
        for name, a in zip(names, args):
            if isinstance(a, np.ndarray):
                a = Tensor(a) if a.dtype.kind in "biuf" else a
            if isinstance(a, Tensor):
                sym_args.append(symbolic_tensor(g.add_input(name, a.dtype, tuple(a.shape), "input")))
            else:
                sym_args.append(a)
        return sym_args

    # ------------------------------------------------------------ after the run
    def finish(self, result):
        g = self.graph
        inputs = {v.name: v for v in g.inputs}
        for name, p in self.params:
            if p._data is not inputs[name]:
                g.updates.append((inputs[name], self.builder.value_of(p)))
        for name, t, st, key in self.state:
            if (st is None or st.get(key) is t) and t._data is not inputs[name]:
                g.updates.append((inputs[name], self.builder.value_of(t)))
        old_ids = {id(t) for _, t, _, _ in self.state}
        new_state = set()
        for opt in self.optimizers:
            for p, st in opt.state.items():
                for key, t in list(st.items()):
                    if isinstance(t, Tensor) and id(t) not in old_ids:
                        # state the step created: a new state input, written by this step
                        name = g.fresh_name(f"{self.param_names.get(id(p), 'p')}.{key}")
                        target = g.add_input(name, t.dtype, tuple(t.shape), "state")
                        g.updates.append((target, self.builder.value_of(t)))
                        new_state.add(id(t))
        for t, _ in self.builder.rebound:
            if id(t) not in new_state:
                raise RuntimeError(
                    f"the traced function changed a tensor of shape {list(t.shape)} in place that is not a "
                    "parameter, a module buffer or optimizer state; a compiled step would lose that change. "
                    "Register it as a buffer (module.register_buffer) or return it instead."
                )
        outs = result if isinstance(result, (tuple, list)) else () if result is None else (result,)
        for o in outs:
            if not isinstance(o, Tensor):
                raise TypeError(f"a traced function may return tensors (or a tuple of them), not {type(o).__name__}")
            g.outputs.append(self.builder.value_of(o))

    def restore(self):
        for t, data in reversed(self.builder.rebound):
            t._data = data
        for t, data, grad in reversed(self.saved):
            t._data, t.grad = data, grad
        for group, lr in self.saved_groups:
            group["lr"] = lr
        for opt, snapshot in self.saved_state:  # drop state the traced step created
            opt.state.clear()
            opt.state.update(snapshot)


def _arg_names(fn, n):
    target = fn.forward if hasattr(fn, "forward") else fn
    try:
        params = [p.name for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        nm = params[i] if i < len(params) and not params[-1:] == [] else f"arg{i}"
        names.append(nm if nm not in names else f"{nm}{i}")
    return names


def backward_symbolic(loss: Tensor):
    """`loss.backward()` while tracing: record a `grad` marker for each parameter it depends on."""
    from .ir.builder import active

    b = active()
    if tuple(loss.shape) != ():
        raise RuntimeError(
            f"grad can be implicitly created only for scalar outputs (got shape {list(loss.shape)}); "
            "reduce it first, e.g. loss.sum().backward()"
        )
    reach = ir.ancestors([loss._data])
    for t, value in list(_known_params(b)):
        if value.name in reach and t.requires_grad:
            v = b.emit("grad", [loss._data, value], {}, _aval_of(value), name=b.graph.fresh_name(f"d.{value.name}"))
            g = symbolic_tensor(v)
            t.grad = g if t.grad is None else t.grad + g


def _known_params(b):
    for t in b.keep:
        v = b.known[id(t)]
        if v.kind == "param":
            yield t, v


def _aval_of(v):
    from .prims import Aval

    return Aval(v.shape, v.dtype)


class Traced:
    """A traced function: its graph at each stage, and a callable that runs it on
    the reference interpreter (updating parameters and optimizer state in place)."""

    def __init__(self, fn, graph, tracer):
        self.fn, self.graph = fn, graph
        self._params = tracer.params
        self._state = list(tracer.state)
        self._optimizers = tracer.optimizers
        self._param_names = tracer.param_names
        self._stages = {"traced": graph}

    def ir(self, stage: str = "traced") -> "ir.Graph":
        if stage not in self._stages:
            if stage == "autodiff":
                from .passes.autodiff import autodiff

                self._stages[stage] = autodiff(self.graph)
                _dump(self._stages[stage], stage)
            else:
                raise KeyError(f"unknown IR stage {stage!r}; available: traced, autodiff")
        return self._stages[stage]

    def __repr__(self):
        return f"<gradc.Traced {self.graph.name}>"


def trace(fn, *example_inputs, name=None) -> Traced:
    """Record `fn(*example_inputs)` as an IR graph (see the module docstring)."""
    gname = name or getattr(fn, "__name__", None) or type(fn).__name__.lower()
    tr = _Tracer(fn, gname)
    tr.collect_params()
    try:
        sym_args = tr.bind_inputs(example_inputs)
        with tr.builder:
            result = fn(*sym_args)
            tr.finish(result)
    finally:
        tr.restore()
    ir.check(tr.graph)
    _dump(tr.graph, "traced")
    t = Traced(fn, tr.graph, tr)
    return t


def _dump(graph, stage):
    import os

    d = os.environ.get("GRADC_DUMP")
    if not d:
        return
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, f"{graph.name}.{stage}")
    with open(base + ".ir", "w") as f:
        f.write(str(graph))
    with open(base + ".dot", "w") as f:
        f.write(graph.to_dot())
