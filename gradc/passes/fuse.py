"""`fuse`: group nodes into kernels, each one function of the code generator.

A kernel computes its members in registers and writes to memory only the
values used after it (by other kernels, outputs or updates: its `stores`)
and the few it needs in memory itself (its `temps`). What one kernel can
hold is what `analyze` can lay out as loop nests, in this order:

- a *pre* stage: one-element values (a learning rate converted once);
- for a matmul: the GEMM into a buffer, reading transposed operands
  through strides (integer matmuls copy them first), and writing its
  result transposed when that is all the kernel uses of it (a weight's
  gradient, whose update then runs in the weight's layout);
- for reductions (sum, max, prod, and a float matmul whose matrices have
  one element: a dot product): one loop over their common index space
  that computes the elementwise producers in registers and accumulates
  each (a loss and the gradients of a tiny layer in one pass over a batch);
  none may need another's result;
- without either: one loop over the shape of what it stores;
- then an *epilogue* loop over the matmul's or a reduction's result that
  computes the elementwise consumers (bias add, ReLU and its mask, log of a
  softmax's sum, a bias's optimizer update) and the values they combine it
  with; a GEMM's epilogue also folds sums over the rows of its values (a
  bias's gradient, on each column panel while it is in cache), whose
  consumers go to a later kernel.

A float matmul over a contraction of one element is a product of its
operands (elementwise): no GEMM for an outer product such as a Linear(1, n)
layer's forward.

Elementwise ops (unary, binary, compare, where, convert) and views
(broadcast, transpose, reshape) fuse; index ops, concat and argmax keep a
kernel of their own. Inside a loop every value is read at a *view*: per
dimension of the value, its index as a linear function of the loop indices.
Broadcasts and transposes only change views, so they cost nothing. A value
stored by a loop must cover it one to one (the same dimensions, size-1 dims
aside), which is what stops fusion at shape changes.

The pass is greedy, in graph order: each node joins the kernels of its
operands when the union can still be laid out and no kernel would end up
depending on itself. Where fusion stopped, the reason is kept in
`graph.fusion_notes` for `explain`. Nodes are reordered so each kernel's
members are contiguous; the interpreter still runs them node by node.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..ir.graph import GRAD, Graph, Kernel, Node, Value
from ..prims import REGISTRY
from .manager import register_pass

ELEMENTWISE = ("unary", "binary", "compare", "select")
VIEWS = ("broadcast", "reshape", "transpose")
REDUCTIONS = ("sum", "max", "prod")


class Unfusable(Exception):
    """Why a group of nodes cannot be one kernel (the text `explain` prints)."""


def role(n: Node) -> str | None:
    """'elementwise', 'view', 'reduce', 'matmul', or None for ops lowered on their own."""
    if n.op in VIEWS:
        return "view"
    if n.op in REDUCTIONS:
        return "reduce"
    if n.op == "matmul":
        return _matmul_role(n)
    prim = REGISTRY.get(n.op)
    return "elementwise" if prim is not None and prim.kind in ELEMENTWISE else None


def _matmul_role(n: Node) -> str:
    """A float matmul that contracts one element is an elementwise product, one whose
    matrices have one element a reduction (a dot product): too small for a GEMM."""
    a, b = n.operands
    if not n.out.dtype.is_floating_point:
        return "matmul"
    if a.shape[-1] == 1:
        return "elementwise"
    return "reduce" if a.shape[-2] == 1 and b.shape[-1] == 1 else "matmul"


def space(r: Node) -> tuple:
    """The index space a reduction's loop runs over: its operand's shape; for a matmul
    its batch dims, then rows, contraction and columns."""
    if r.op == "matmul":
        a, b = r.operands
        return r.out.shape[:-2] + (a.shape[-2], a.shape[-1], b.shape[-1])
    return r.operands[0].shape


def dom(shape) -> tuple:
    """The dims a loop runs over: size-1 dims are not loops."""
    return tuple(s for s in shape if s != 1)


def _contiguous(shape) -> tuple:
    out, s = [], 1
    for n in reversed(shape):
        out.append(s)
        s *= n
    return tuple(reversed(out))


# ---------------------------------------------------------------- kernel layout
class Stage(NamedTuple):
    """One loop nest (or one GEMM, or one node's own lowering) of a kernel.

    A loop's body is `steps`, run at every index of `dims`; step i defines
    register i: `("load", access)`, `("op", node, regs)` (regs: the registers
    of the node's value operands; its literals are constants);
    `("store", i, access)` writes register i, and `("acc", i, access, node)`
    folds it into the result of reduction `node` (a reduce stage has one per
    reduction it runs).
    `accesses` are `(value, strides, written)`: element strides per loop dim
    into the value's buffer.
    """

    kind: str  # "pre", "copy", "loop", "reduce", "epilogue", "matmul" or "node"
    dims: tuple
    steps: tuple
    accesses: tuple
    node: Node | None = None  # the matmul or singly lowered node
    views: tuple = ()  # matmul: its operands that are transposes, read through strides
    result: Value | None = None  # matmul: the value the GEMM writes (its output, or a transpose of it)


class KernelSpec(NamedTuple):
    members: list
    stores: list  # Values used after the kernel
    temps: list  # Values only this kernel needs in memory
    stages: list

    def reads(self) -> list:
        """(value, strides or None for "any element") of every buffer the kernel reads that it does not write."""
        own = {v.name for v in self.stores + self.temps}
        out = []
        for st in self.stages:
            if st.kind in ("matmul", "node"):
                out += [(o, None) for o in operands(st) if o.name not in own]
            else:
                out += [(v, s) for v, s, w in st.accesses if not w and v.name not in own]
        return out


def operands(st: Stage) -> list:
    """The buffers a matmul or node stage reads (for a transposed operand: its source)."""
    out = {}
    for o in st.node.inputs:
        src = o.producer.operands[0] if o in st.views else o
        out.setdefault(src.name, src)
    return list(out.values())


class _Loop:
    """Builds one loop stage's body by evaluating values at views (see `Stage`)."""

    def __init__(self, kind, dims, members: dict, available: set):
        self.kind, self.dims, self.members, self.available = kind, tuple(dims), members, available
        self.steps, self.accesses, self._at, self._memo = [], [], {}, {}
        self._zero = (0,) * len(self.dims)

    def identity(self, shape) -> tuple:
        rows, j = [], 0
        for s in shape:
            if s == 1:
                rows.append(self._zero)
            else:
                rows.append(tuple(int(i == j) for i in range(len(self.dims))))
                j += 1
        return tuple(rows)

    def flat(self, shape, view) -> tuple:
        cs = _contiguous(shape)
        return tuple(sum(c * row[l] for c, row in zip(cs, view)) for l in range(len(self.dims)))

    def access(self, v: Value, strides, written=False) -> int:
        key = (v.name, strides, written)
        if key not in self._at:
            self._at[key] = len(self.accesses)
            self.accesses.append((v, strides, written))
        return self._at[key]

    def _reg(self, step) -> int:
        self.steps.append(step)
        return len(self.steps) - 1

    def value(self, v: Value, view) -> int:
        key = (v.name, view)
        if key not in self._memo:
            self._memo[key] = self._compute(v, view)
        return self._memo[key]

    def _load(self, v, strides) -> int:
        """One load per element of a buffer per iteration, whatever view reaches it."""
        at = self.access(v, strides)
        if ("load", at) not in self._memo:
            self._memo["load", at] = self._reg(("load", at))
        return self._memo["load", at]

    def _compute(self, v: Value, view) -> int:
        if v.name not in self.members or v.name in self.available:
            return self._load(v, self.flat(v.shape, view))
        n = v.producer
        if n.op == "transpose":
            rows = [None] * len(view)
            for d, p in enumerate(n.attrs["perm"]):
                rows[p] = view[d]
            return self.value(n.operands[0], tuple(rows))
        if n.op == "reshape":
            x = n.operands[0]
            if x.name not in self.members or x.name in self.available:  # a buffer: same flat offsets
                return self._load(x, self.flat(v.shape, view))
            if dom(x.shape) != dom(v.shape):
                raise Unfusable(f"the reshape %{v.name} regroups the dims of %{x.name}, computed in the same kernel")
            big = iter(row for s, row in zip(v.shape, view) if s != 1)
            return self.value(x, tuple(self._zero if s == 1 else next(big) for s in x.shape))
        if n.op == "matmul":  # contracting one element: a product
            return self._product(n, view[:-1] + (self._zero, view[-1]))
        regs = []
        for o in n.inputs:  # broadcasting: o's dims align with v's last ones; its size-1 dims stay put
            lead = len(v.shape) - len(o.shape)
            regs.append(self.value(o, tuple(self._zero if s == 1 else view[lead + d] for d, s in enumerate(o.shape))))
        if n.op == "broadcast":
            return regs[0]
        return self._reg(("op", n, tuple(regs)))

    def _product(self, n: Node, view) -> int:
        """Matmul `n`'s product term at `view`, a view of its index space (see `space`)."""
        batch, (i, k, j) = view[:-3], view[-3:]
        regs = []
        for o, rows in zip(n.operands, ((i, k), (k, j))):  # batch dims broadcast; size-1 ones stay put
            lead = len(batch) - (o.ndim - 2)
            front = tuple(self._zero if s == 1 else batch[lead + d] for d, s in enumerate(o.shape[:-2]))
            regs.append(self.value(o, front + tuple(self._zero if s == 1 else r for s, r in zip(o.shape[-2:], rows))))
        return self._reg(("op", n, tuple(regs)))

    def store(self, v: Value) -> None:
        view = self.identity(v.shape)
        reg = self.value(v, view)
        self._reg(("store", reg, self.access(v, self.flat(v.shape, view), True)))

    def accumulate(self, r: Node) -> None:
        """Reduction `r`'s term at this loop's index, folded into r's buffer."""
        view = self.identity(space(r))
        if r.op == "matmul":
            reg, kept = self._product(r, view), view[:-3] + (view[-3], view[-1])
        else:
            reg = self.value(r.operands[0], view)
            kept = tuple(row for d, row in enumerate(view) if d not in r.attrs["axes"])
        self._reg(("acc", reg, self.access(r.out, self.flat(r.out.shape, kept), True), r))

    def stage(self) -> Stage:
        return Stage(self.kind, self.dims, tuple(self.steps), tuple(self.accesses))


def _after(members, cores) -> dict:
    """Names of the members that depend on a core (through members) -> the first such core."""
    out: dict = {}
    for core in cores:
        hit = {core.out.name}
        for m in members:
            if any(o.name in hit for o in m.inputs):
                hit.add(m.out.name)
        hit.discard(core.out.name)
        for name in hit:
            out.setdefault(name, core)
    return out


def _numel(v) -> int:
    return math.prod(v.shape)


def _desc(v: Value) -> str:
    return f"%{v.name} {v.type_str}"


def _core_desc(n: Node) -> str:
    return f"{n.op} %{n.out.name} {n.out.type_str}"


def analyze(members: list, materialize: set) -> KernelSpec:
    """Lay out `members` (in graph order) as one kernel whose values named in
    `materialize` are stored; raise `Unfusable` saying why it cannot be done."""
    if len(members) == 1 and (members[0].op != "matmul" or role(members[0]) == "matmul"):
        n = members[0]  # lowered by its op's rule (a tiny matmul takes a loop instead)
        return KernelSpec(members, [n.out], [], [Stage("node", (), (), (), n)])
    for m in members:
        if role(m) is None:
            raise Unfusable(f"{m.op} is lowered on its own (%{m.out.name})")
    cores = [m for m in members if role(m) in ("reduce", "matmul")]
    gemm = next((m for m in cores if role(m) == "matmul"), None)
    after = _after(members, cores)
    if gemm is not None:
        _column_sums(members, gemm, [m for m in cores if m is not gemm], after)
    by_name = {m.out.name: m for m in members}
    flip = _flipped(members, gemm, materialize)
    stored = [m.out for m in members if m.out.name in materialize and m not in cores]
    for v in stored:
        if v.producer.op in ("transpose", "broadcast") and v is not flip:
            raise Unfusable(f"{_desc(v)} is needed after the kernel: a {v.producer.op} fuses into its consumers, "
                            "it is not stored")
    temps, stages, available = [], [], set()

    def loop(kind, shape, values, reductions=()):
        if not values and not reductions:
            return
        lp = _Loop(kind, dom(shape), by_name, available)
        for v in values:
            lp.store(v)
        for r in reductions:
            lp.accumulate(r)
        stages.append(lp.stage())
        available.update(v.name for v in values)

    if not cores:  # loop over what is stored (values it does not store are computed at any view)
        main = max([v for v in stored if _numel(v) > 1] or [m.out for m in members], key=_numel).shape
        pre = [v for v in stored if dom(v.shape) != dom(main) and _numel(v) == 1]
        _require(stored, pre, main)
        loop("pre", (), pre)
        loop("loop", main, [v for v in stored if v not in pre])
    elif gemm is not None:
        front = _matmul_prologue(members, gemm)
        views = front if gemm.out.dtype.is_floating_point else ()
        copies = [v for v in front if v not in views]
        temps += [v for v in copies if v.name not in materialize]
        for v in copies:
            loop("copy", v.shape, [v])
        result = flip or gemm.out
        if result.name not in materialize:
            temps.append(result)
        pre = [v for v in stored if v.name not in after and _numel(v) == 1 and dom(result.shape)]
        loop("pre", (), pre)
        stages.append(Stage("matmul", (), (), (), gemm, views, result))
        available.add(result.name)
        epi = [v for v in stored if v not in front and v is not result and v not in pre]
        _require(epi, [], result.shape, after)
        sums = [r for r in cores if r is not gemm]
        _require([r.operands[0] for r in sums], [], result.shape, after)
        loop("epilogue", result.shape, epi, sums)
    else:
        over = _common_space(cores, after)
        temps += [r.out for r in cores if r.out.name not in materialize]
        main = [v for v in stored if v.name not in after and dom(v.shape) == dom(over)]
        pre = [v for v in stored if v.name not in after and v not in main and _numel(v) == 1]
        epi = [v for v in stored if v not in main and v not in pre]
        result = _epilogue_shape(cores, epi, after)
        _require(stored, main + pre, result, after, over)
        loop("pre", (), pre)
        loop("reduce", over, main, cores)
        available.update(r.out.name for r in cores)
        loop("epilogue", result, epi)
    return KernelSpec(members, [m.out for m in members if m.out.name in materialize], temps, stages)


def _column_sums(members, gemm, reductions, after) -> None:
    """The reductions a GEMM's kernel may hold: sums (or max, prod) over the rows of a value of
    its epilogue (a bias's gradient), folded in the epilogue's loop, so on each column panel
    by the thread that computed it, and needed whole by no other member."""
    for r in reductions:
        if role(r) != "reduce" or r.op == "matmul" or after.get(r.out.name) is not gemm:
            a, b = (gemm, r) if members.index(gemm) < members.index(r) else (r, gemm)
            raise Unfusable(f"a GEMM's kernel holds no other matmul or reduction: %{a.out.name} is a {a.op}, "
                            f"%{b.out.name} a {b.op}")
        x = r.operands[0]
        if x.ndim != 2 or min(x.shape) < 2 or tuple(r.attrs["axes"]) != (0,):
            raise Unfusable(f"a GEMM's kernel holds only reductions over the rows of its result: the "
                            f"{_core_desc(r)} reduces axes {list(r.attrs['axes'])} of {_desc(x)}")
        hit = {r.out.name}
        for m in members:
            if any(o.name in hit for o in m.inputs):
                raise Unfusable(f"{_desc(m.out)} needs the {_core_desc(r)} whole: it would take a loop after "
                                f"the GEMM %{gemm.out.name}")


def _common_space(cores, after) -> tuple:
    """The index space of the one loop that runs every reduction; none may need another's result."""
    over = space(cores[0])
    for r in cores:
        if r.out.name in after:
            raise Unfusable(f"{_desc(r.out)} needs the {_core_desc(after[r.out.name])} whole: it would take a "
                            f"second loop over {list(space(r))}")
        if dom(space(r)) != dom(over):
            raise Unfusable(f"reductions in one kernel share one loop: the {_core_desc(cores[0])} runs over "
                            f"{list(over)}, the {_core_desc(r)} over {list(space(r))}")
    return over


def _epilogue_shape(cores, epi, after) -> tuple:
    """The result shape the epilogue loop runs over: a reduction's whose dims the epilogue's values have."""
    if not epi:
        return cores[0].out.shape
    want = dom(epi[0].shape)
    r = next((r for r in cores if dom(r.out.shape) == want), after.get(epi[0].name, cores[0]))
    return r.out.shape


def _require(stored, placed, shape, after=None, main=None):
    """Every stored value not `placed` elsewhere must cover the loop over `shape` one to one
    (`after`: the values computed from a reduction or matmul, by name, and that core)."""
    after = after or {}
    for v in stored:
        if v in placed or dom(v.shape) == dom(shape):
            continue
        core = after.get(v.name)
        if core is not None and sorted(dom(v.shape)) == sorted(dom(shape)):
            raise Unfusable(f"{_desc(v)} reads the {_core_desc(core)} transposed: "
                            f"its loop would run over {list(v.shape)}, the epilogue's runs over {list(shape)}")
        if core is not None and dom(v.shape) == dom(core.out.shape):
            raise Unfusable(f"{_desc(v)} would take a second epilogue loop: the kernel's runs over {list(shape)}")
        if core is not None:
            raise Unfusable(f"{_desc(v)} needs the {_core_desc(core)} whole: it would "
                            f"take a second loop over {list(v.shape)}")
        over = list(main if main is not None else shape)
        raise Unfusable(f"shape mismatch: {_desc(v)} is needed after the kernel, whose loop runs over {over}")


def _flipped(members, gemm, materialize) -> Value | None:
    """The transpose (of the last two dims) of a float matmul's result that the GEMM
    can write instead of the result itself: the result's only use."""
    if gemm is None or gemm.out.name in materialize or not gemm.out.dtype.is_floating_point:
        return None
    users = [m for m in members if gemm.out in m.operands]
    swap = tuple(range(gemm.out.ndim - 2)) + (gemm.out.ndim - 1, gemm.out.ndim - 2)
    if len(users) == 1 and users[0].op == "transpose" and users[0].attrs["perm"] == swap:
        return users[0].out
    return None


def _matmul_prologue(members, core) -> tuple:
    """The members a matmul needs before it runs: only transposes of its operands,
    of values in memory (the other members are computed in its epilogue)."""
    names = {m.out.name for m in members}
    need = {o.name for o in core.inputs}
    front = []
    for m in reversed(members[:members.index(core)]):
        if m.out.name not in need:
            continue
        if m.op != "transpose" or m.out not in core.operands or m.operands[0].name in names:
            raise Unfusable(f"matmul operands must be in memory: {_desc(m.out)} ({m.op}) would be computed in "
                            f"front of the matmul %{core.out.name}")
        front.append(m.out)
    return tuple(reversed(front))


# ---------------------------------------------------------------- kernels of a graph
def materialized(members, users: dict, roots: set) -> set:
    """Names of the members a kernel must store: used after it, results, or unused."""
    names = {m.out.name for m in members}
    out = set()
    for m in members:
        us = users.get(m.out.name, [])
        if m.out.name in roots or not us or any(u.out.name not in names for u in us):
            out.add(m.out.name)
    return out


def kernels(g: Graph) -> list:
    """`(Kernel header, KernelSpec)` per kernel in schedule order; an unfused graph
    gives one kernel per node (constants live in the constants blob: none)."""
    if not g.kernels:
        return [(Kernel(f"k{i}", [n.out.name]), analyze([n], {n.out.name}))
                for i, n in enumerate((n for n in g.nodes if n.op != "const"), 1)]
    groups: dict = {name: [] for name in g.kernels}
    for n in g.nodes:
        if n.kernel is not None:
            groups[n.kernel].append(n)
    return [(g.kernels[name], analyze(ms, set(g.kernels[name].stores))) for name, ms in groups.items()]


def check_kernels(g: Graph) -> None:
    """The verifier's kernel checks: contiguous members, headers that match what
    `analyze` derives, kernels the code generator can emit."""
    from ..ir.verify import VerifyError

    seen, prev = set(), None
    for n in g.nodes:
        k = n.kernel
        if k is not None and k not in g.kernels:
            raise VerifyError(f"node %{n.out.name}: kernel {k} has no header")
        if k is not None and k != prev:
            if k in seen:
                raise VerifyError(f"kernel {k}: its nodes are not contiguous (%{n.out.name})")
            seen.add(k)
        if k is None and n.op not in ("const", GRAD) and g.kernels:
            raise VerifyError(f"node %{n.out.name} = {n.op} belongs to no kernel (only constants may)")
        if k is not None and n.op in ("const", GRAD):
            raise VerifyError(f"node %{n.out.name}: a {n.op} cannot be in a kernel")
        prev = k
    for name in g.kernels:
        if name not in seen:
            raise VerifyError(f"kernel {name} has no nodes")
    if not g.kernels:
        return
    users, roots = g.users(), {v.name for v in g.roots()}
    for k, spec in _specs_or_error(g, VerifyError):
        want = materialized(spec.members, users, roots)
        if set(k.stores) != want:
            raise VerifyError(f"kernel {k.name}: header stores {_names(k.stores)}, but the values used after it are "
                              f"{_names(m.out.name for m in spec.members if m.out.name in want)}")
        stores, temps = [v.name for v in spec.stores], [v.name for v in spec.temps]
        if stores != k.stores or temps != k.temps:
            raise VerifyError(f"kernel {k.name}: header lists stores {_names(k.stores)} and temps {_names(k.temps)}, "
                              f"expected {_names(stores)} and {_names(temps)}")


def _specs_or_error(g, error):
    try:
        return kernels(g)
    except Unfusable as e:
        raise error(f"a kernel cannot be generated: {e}") from None


def _names(names) -> str:
    return ", ".join("%" + n for n in names) or "nothing"


# ---------------------------------------------------------------- the pass
@register_pass("fuse")
def fuse(graph: Graph) -> Graph:
    """Group nodes into kernels: elementwise chains, reductions with their producers
    and consumers, matmuls with their epilogues, each optimizer update in one loop."""
    if any(n.op == GRAD for n in graph.nodes):
        raise ValueError("fuse needs a differentiated graph: run the autodiff pass first (it holds grad markers)")
    g = graph.copy()
    g.kernels, g.fusion_notes = {}, {}
    for n in g.nodes:
        n.kernel = None
    users, roots = g.users(), {v.name for v in g.roots()}
    index = {n.out.name: i for i, n in enumerate(g.nodes)}
    groups: dict[int, list] = {}  # group id -> members in graph order
    group_of: dict[str, int] = {}
    notes: dict = {}
    for n in g.nodes:
        if n.op == "const":
            continue
        group, taken = [n], []
        for gid in _candidates(n, groups, group_of, index):
            if gid not in groups:  # merged already
                continue
            trial = sorted(groups[gid] + group, key=lambda m: index[m.out.name])
            reason = _why_not(trial, set(taken) | {gid}, groups, group_of, users, roots)
            if reason is None:
                group, taken = trial, taken + [gid]
                continue
            for u in group:  # the latest attempt says best why a boundary stays
                for o in u.inputs:
                    if group_of.get(o.name) == gid:
                        notes[(o.name, u.out.name)] = reason
        for t in taken:
            del groups[t]
        gid = index[n.out.name]
        groups[gid] = group
        for m in group:
            group_of[m.out.name] = gid
    _schedule(g, groups, index, users, roots)
    kernel_of = {n.out.name: n.kernel for n in g.nodes}
    g.fusion_notes = {(v, u): r for (v, u), r in notes.items() if kernel_of[v] != kernel_of[u]}
    return g


def _candidates(n, groups, group_of, index) -> list:
    """Kernels `n` may join: its operands', most recent first, each followed by the
    kernels feeding it if it holds only views (a broadcast waits for its consumer)."""
    def recent(gids):
        return sorted(dict.fromkeys(gids), key=lambda gid: -index[groups[gid][-1].out.name])

    out = []
    for gid in recent(group_of[o.name] for o in n.inputs if o.name in group_of):
        out.append(gid)
        if all(role(m) == "view" for m in groups[gid]):
            out += recent(group_of[o.name] for m in groups[gid] for o in m.inputs if o.name in group_of)
    return list(dict.fromkeys(out))


def _schedule(g: Graph, groups: dict, index: dict, users: dict, roots: set) -> None:
    """Order the kernels (and constants) topologically, by their first node where
    free to; name them k1, k2, ...; make each one's members contiguous and write
    its header."""
    unit_of = {m.out.name: gid for gid, ms in groups.items() for m in ms}
    units = {gid: ms for gid, ms in groups.items()}
    for n in g.nodes:
        if n.op == "const":
            unit_of[n.out.name] = index[n.out.name]
            units[index[n.out.name]] = [n]
    needs = {u: {unit_of[o.name] for m in ms for o in m.inputs if o.name in unit_of} - {u} for u, ms in units.items()}
    first = {u: index[ms[0].out.name] for u, ms in units.items()}
    ready = sorted((u for u, d in needs.items() if not d), key=first.get)
    done, order = set(), []
    while ready:
        u = ready.pop(0)
        order.append(u)
        done.add(u)
        for v, d in needs.items():
            if v not in done and v not in ready and u in d and d <= done:
                ready.append(v)
        ready.sort(key=first.get)
    assert len(order) == len(units), "fuse: the kernels form a cycle"
    nodes, k = [], 0
    for u in order:
        ms = units[u]
        if ms[0].op != "const":
            k += 1
            name = f"k{k}"
            spec = analyze(ms, materialized(ms, users, roots))
            g.kernels[name] = Kernel(name, [v.name for v in spec.stores], [v.name for v in spec.temps])
            for m in ms:
                m.kernel = name
        nodes.extend(ms)
    g.nodes = nodes


def _why_not(trial, merging: set, groups, group_of, users, roots) -> str | None:
    for m in trial:
        if role(m) is None:
            return f"{m.op} is lowered on its own"
    cycle = _cycle(trial, merging, groups, group_of)
    if cycle is not None:
        return (f"fusing would form a cycle: %{cycle} is computed in another kernel from this kernel's results, "
                "and is needed here")
    try:
        analyze(trial, materialized(trial, users, roots))
    except Unfusable as e:
        return str(e)
    return None


def _cycle(trial, merging, groups, group_of) -> str | None:
    """A value outside the merged kernels that the merge needs and that depends on them."""
    def deps(members):
        return {(group_of[o.name], o.name) for m in members for o in m.inputs if o.name in group_of}

    for gid, via in sorted(deps(trial)):
        if gid in merging:
            continue
        stack, seen = [gid], {gid}
        while stack:
            for d, _ in deps(groups[stack.pop()]):
                if d in merging:
                    return via
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
    return None
