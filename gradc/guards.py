"""What a compiled step's guard key reads, and the generated fast path that checks it.

`World` collects the modules, optimizers, parameters and state a step reads
(under the names tracing gives them) and computes the guard key by value;
`Guard` turns the same facts into one generated Python function per version:
`is` checks on every object the key depends on, then the call itself. See
gradc/compiler.py for how versions use them.
"""
from __future__ import annotations

import builtins
import operator
import textwrap
import weakref

import numpy as np

from . import tracing
from .ir.graph import type_str
from .nn.module import Registry, changes as module_changes
from .tensor import Tensor

_MODULE_INTERNALS = {"training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}
# param-group entries outside the key: lr is a runtime scalar, the rest are never read by a step
_GROUP_RUNTIME = {"params", "lr", "initial_lr", "param_names"}
_SCALARS = (bool, int, float, complex, str)


def _describe(a) -> str:
    """An argument as the key sees it: tensors by type, other values by value (they are traced as constants)."""
    if isinstance(a, Tensor):
        return type_str(a.dtype, a.shape)
    return f"{type(a).__name__} {a!r}"


def _hashable(v) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False


class World:
    """The modules, optimizers, parameters and state a step reads now, under the
    names tracing gives them (computed only when the per-call check fails)."""

    def __init__(self, fn):
        from .nn import Module

        tr = tracing._Tracer(fn, "world")
        tr.collect_params()
        self.fn, self.names = fn, Names(fn)
        self.roots = tracing._find(fn, Module)  # (name in the step, module)
        self.modules = list({id(m): m for _, root in self.roots for m in root.modules()}.values())
        self.optimizers = tr.optimizers
        self.groups = [g for opt in self.optimizers for g in opt.param_groups]
        self.params = dict(tr.params)
        self.param_names = tr.param_names  # id(param) -> name
        self.state = {}  # name -> tensor: module buffers, then optimizer state (`<param>.<key>`)
        seen = {id(p) for p in self.params.values()}
        for m in tr.modules:
            for name, t in m.named_buffers():
                if id(t) not in seen:
                    seen.add(id(t))
                    self.state[name] = t
        for opt in self.optimizers:
            for p, st in opt.state.items():
                pname = self.param_names.get(id(p), f"p{id(p)}")
                self.state.update((f"{pname}.{k}", t) for k, t in st.items() if isinstance(t, Tensor))

    def key(self, args) -> dict:
        """Everything that decides the traced graph, by value, as printable strings."""
        key = {n: _describe(a) for n, a in zip(tracing._arg_names(self.fn, len(args)), args)}
        key.update(self.names.constants())
        for name, p in self.params.items():
            key[f"param {name}"] = type_str(p.dtype, p.shape) + ("" if p.requires_grad else " (no grad)")
        for name, t in self.state.items():
            key[f"state {name}"] = type_str(t.dtype, t.shape)
        for root, top in self.roots:
            for path, m in top.named_modules(prefix=root):
                attrs = ", ".join(f"{k}={v!r}" for k, v in vars(m).items() if k not in _MODULE_INTERNALS and _hashable(v))
                key[f"module {path}"] = f"{type(m).__qualname__}({attrs}) {'train' if m.training else 'eval'}"
        for i, opt in enumerate(self.optimizers):
            for j, g in enumerate(opt.param_groups):
                hyper = ", ".join(f"{k}={v!r}" for k, v in g.items() if k not in _GROUP_RUNTIME and _hashable(v))
                names = ", ".join(self.param_names.get(id(p), "?") for p in g["params"])
                key[f"optimizer {i} group {j}"] = f"{type(opt).__qualname__}({hyper}) params [{names}]"
            baked = [f"{self.param_names.get(id(p), '?')}.{k}={v!r}" for p, st in opt.state.items()
                     for k, v in st.items() if not isinstance(v, Tensor)]  # non-tensor state is traced as a constant
            if baked:
                key[f"optimizer {i} state values"] = ", ".join(baked)
        return key

    def owner(self, name: str):
        """(optimizer, param, key) of the optimizer state a step creates, from its input name `<param>.<key>[.n]`."""
        best = None
        for opt in self.optimizers:
            for p in (p for g in opt.param_groups for p in g["params"]):
                pname = self.param_names.get(id(p), "")
                if pname and name.startswith(pname + ".") and (best is None or len(pname) > len(best[0])):
                    best = (pname, opt, p)
        if best is None:
            raise RuntimeError(f"gradc.compile: cannot tell which parameter the new state %{name} belongs to")
        pname, opt, p = best
        return opt, p, name[len(pname) + 1:].split(".")[0]


class Names:
    """The global names and closure cells a step reads that hold its modules and
    optimizers, or scalars the trace bakes in as constants (a script may rebind
    `model = ...` or `scale = 0.5` between calls); unbound global names too."""

    def __init__(self, fn):
        import dis
        import inspect

        from .nn import Module
        from .optim import Optimizer

        kinds = (Module, Optimizer, *_SCALARS)
        f = getattr(fn, "__func__", fn)
        self.globals = getattr(f, "__globals__", {})
        names, codes = set(), [f.__code__] if hasattr(f, "__code__") else []
        while codes:
            code = codes.pop()
            names.update(i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME"))
            codes += [c for c in code.co_consts if inspect.iscode(c)]
        self.names = sorted(n for n in names if n not in self.globals or isinstance(self.globals[n], kinds))
        cells = zip(f.__code__.co_freevars, f.__closure__ or ()) if hasattr(f, "__code__") else ()
        self.cells = [(n, c) for n, c in cells if tracing._cell_ok(c) and isinstance(c.cell_contents, kinds)]

    def constants(self) -> dict:
        """The scalars among them, by value (part of the key)."""
        out = {f"global {n}": repr(v) for n in self.names if isinstance(v := self.globals.get(n), _SCALARS)}
        out.update((f"closure {n}", repr(c.cell_contents)) for n, c in self.cells if isinstance(c.cell_contents, _SCALARS))
        return out


class Guard:
    """The fast path of the version chosen last time, generated as Python source
    (`source` shows it) when the version was chosen. Two functions share its
    straight-line checks (20-50 ns each): the arguments' types, shapes and
    dtypes, then `is` on every object the key depends on, as they were then
    (plain scalar attributes and hyper-parameters compared by value in one
    tuple per dict, which is what the key does; an empty container by `not`).
    The modules' attributes and registries are one check: `nn.module.changes`,
    which counts every change to a module a guard watches (a module whose
    registries are not `nn.module.Registry`, e.g. unpickled from an older
    gradc, is checked entry by entry).

    `call(step, *args)` (the step's `__call__`) is the whole call under `lock`: when a check fails or raises
    (another number of arguments, an entry or closure cell that was deleted, a
    hyper-parameter now an object that cannot compare) it returns `slow()(args)`, before
    touching anything; otherwise it feeds the arguments (an argument's own
    array when it is the one bound last time, else a copy into the private
    input buffer), writes the learning rates, makes the native call and
    returns the result as new tensors. `check(args)` only checks (for `run`,
    which holds the lock), and may raise as the checks in `call` do."""

    def __init__(self, version, args, world: World, lock, slow: weakref.WeakMethod):
        self._names: dict[int, str] = {}
        self._objects: list = []  # held, so the ids behind `_names` stay unique
        head, conds, state, feeds = self._arguments(version, args)
        conds += self._world(world)
        test = "(" + "\n        and ".join(conds or ["True"]) + ")"
        check = [head, f"return {test}"]
        call = [*(["nonlocal " + ", ".join(state)] if state else []), f"{self._ref(lock.acquire)}()", "try:", *_indented([
            "try:", f"    {head}", f"    same = {test}",
            "except Exception:  # the checks touch nothing: the slow path finds out (and raises) properly",
            "    same = False",
            "if not same:", f"    return {self._ref(slow)}()(args)", *feeds, *self._finish(version)]),
            "finally:", f"    {self._ref(lock.release)}()"]
        body = [f"    {line}" for line in state.values()]
        for name, params, lines in (("check", "args", check), ("call", "step, *args", call)):
            body += [f"    def {name}({params}):", *_indented(lines, 2)]
        self.source = "\n".join([f"def make({', '.join(self._names.values())}):", *body, "    return check, call", ""])
        namespace: dict = {}
        exec(builtins.compile(self.source, f"<gradc guard of {version.name}>", "exec"), namespace)
        self.check, self.call = namespace["make"](*self._objects)

    def _ref(self, obj) -> str:
        """The name of `obj` in the generated function."""
        name = self._names.get(id(obj))
        if name is None:
            name = self._names[id(obj)] = f"o{len(self._objects)}"
            self._objects.append(obj)
        return name

    def _is(self, expr: str, obj) -> str:
        return f"{expr} is {obj}" if obj is None or isinstance(obj, bool) else f"{expr} is {self._ref(obj)}"

    def _arguments(self, version, args):
        """The head (unpacking: a ValueError when the number of arguments differs), the conditions
        on each argument, and for `call` its state (the array each input slot reads now) and the
        lines that feed the slots."""
        head = "[" + ", ".join(f"a{i}" for i in range(len(args))) + "] = args"

        conds, state, feeds = [], {}, []
        for i, (a, (shape, want, buf)) in enumerate(zip(args, version.slots)):
            if shape is None:  # a constant of the graph
                conds.append(f"(a{i} is {self._ref(want)} or (type(a{i}) is {self._ref(type(want))} and a{i} == {self._ref(want)}))")
                continue
            data = a._data if isinstance(a, Tensor) else a  # copying into the buffer converts an array's dtype
            conds.append(f"type(d{i} := a{i}._data if type(a{i}) is {self._ref(Tensor)} else a{i}) is "
                         f"{self._ref(np.ndarray)} and d{i}.shape == {shape!r} and d{i}.dtype is {self._ref(data.dtype)}")
            if buf is not None:
                state[f"r{i}"] = f"r{i} = {self._ref(version.reads[i])}"
                b = self._ref(buf)
                feeds += [f"if d{i} is not r{i}:",  # not the array the slot reads: copy into the private buffer
                          f"    if r{i} is not {b}:",
                          f"        r{i} = {self._ref(version.unshare)}({i})",
                          f"    {b}[...] = d{i}"]
        return head, conds, state, feeds

    def _finish(self, version) -> list:
        """The lines after the feeds: learning rates, the native call, the result as new tensors."""
        if version._owners:  # creates optimizer state: the general path
            return [f"return {self._ref(version.run)}()"]
        lines = [f"{self._ref(cell)}.value = {self._ref(group)}['lr']" for cell, group in version._lr_cells]
        lines += version.executable.call_lines(self._ref, "o")
        n_out = len(version.graph.outputs)
        new, cls = self._ref(Tensor.__new__), self._ref(Tensor)  # Tensor._wrap, inline
        for j in range(n_out):
            lines += [f"t{j} = {new}({cls})", f"t{j}._init(o[{j}].copy())"]
        results = [f"t{j}" for j in range(n_out)]
        value = "None" if not results else results[0] if n_out == 1 else "(" + ", ".join(results) + ")"
        return lines + [f"return {value}"]

    def _world(self, world: World) -> list:
        names = world.names
        scope = self._ref(names.globals)
        # a bound name by subscript (a KeyError, once deleted, is a miss), an unbound one by `not in`
        conds = [self._is(f"{scope}[{n!r}]", names.globals[n]) if n in names.globals else f"{n!r} not in {scope}"
                 for n in names.names]
        conds += [self._is(f"{self._ref(c)}.cell_contents", c.cell_contents) for _, c in names.cells]
        counted = False
        for m in world.modules:
            regs = (m._parameters, m._buffers, m._modules)
            if all(type(r) is Registry for r in regs):  # from now on, any change to m changes the count
                for r in regs:
                    r.watched = True
                counted = True
                continue
            # registries not made by Module.__init__: entry by entry
            attrs = {k: v for k, v in vars(m).items() if k not in _MODULE_INTERNALS or k == "training"}
            conds += self._same_dict(self._ref(m.__dict__), m.__dict__, attrs, alone=("training",))
            for reg in regs:
                conds += self._same_dict(self._ref(reg), reg, reg)
        if counted:
            conds.append(f"{self._ref(module_changes)}[0] == {module_changes[0]}")
        for t in world.params.values():
            conds += [self._is(f"{self._ref(t)}._data", t._data), self._is(f"{self._ref(t)}.requires_grad", t.requires_grad)]
        conds += [self._is(f"{self._ref(t)}._data", t._data) for t in world.state.values()]
        for opt in world.optimizers:
            o = self._ref(opt)
            conds += [self._is(f"{o}.state", opt.state), self._is(f"{o}.param_groups", opt.param_groups)]
            conds += self._same_list(opt.param_groups)
            for g in opt.param_groups:
                conds += self._same_dict(self._ref(g), g, {k: v for k, v in g.items() if k != "lr"})
                conds += self._same_list(g["params"])
            conds += self._same_dict(self._ref(opt.state), opt.state, opt.state)
            for st in opt.state.values():
                conds += self._same_dict(self._ref(st), st, st)
        return conds

    def _same_dict(self, expr: str, d: dict, entries: dict, alone=()) -> list:
        """`d` (reached as `expr`) has as many entries as now, and these `entries` are the same
        objects, or (plain dicts) equal scalars, compared in one tuple unless named `alone`."""
        if not d:
            return [f"not {expr}"]
        lookup = "{}.get({})" if hasattr(type(d), "__missing__") else "{}[{}]"  # a defaultdict must not grow here
        out = [f"len({expr}) == {len(d)}"]
        scalars = [k for k, v in entries.items() if type(d) is dict and k not in alone and _is_scalar(v)]
        if len(scalars) > 1:
            getter = self._ref(operator.itemgetter(*scalars))
            out.append(f"{getter}({expr}) == {self._ref(tuple(entries[k] for k in scalars))}")
        else:
            scalars = []
        for k, v in entries.items():
            if k not in scalars:
                out.append(self._is(lookup.format(expr, repr(k) if type(k) in (str, int) else self._ref(k)), v))
        return out

    def _same_list(self, items: list) -> list:
        expr = self._ref(items)
        if not items:
            return [f"not {expr}"]
        return [f"len({expr}) == {len(items)}"] + [self._is(f"{expr}[{i}]", v) for i, v in enumerate(items)]


def _indented(lines: list, depth: int = 1) -> list:
    return [textwrap.indent(line, "    " * depth) for line in lines]


def _is_scalar(v) -> bool:
    """A value the key holds by its repr, compared by value by the guard: an equal value
    traces the same step (up to the type of a number: 1 and 1.0 pass alike)."""
    return v is None or type(v) in _SCALARS or type(v) is tuple and all(_is_scalar(x) for x in v)
