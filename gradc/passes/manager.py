"""The pass manager: named passes, pipeline strings, and what each pass did.

A pass is a function `pass(graph, **options) -> graph` registered under a
name with `@register_pass(name)`. It never changes the graph it is given:
it returns a new one (most passes build it with `Rewriter`). A pipeline is a
comma-separated string of pass names run in order, LLVM-style options in
angle brackets: `"simplify<fast-math>,fold,cse,dce"`; the name `default`
stands for `DEFAULT_PIPELINE`.

`run_pipeline` can print the IR after every pass (or after some), a unified
diff of the IR text per pass, verify after each pass, and keeps one
`PassRecord` per pass: the graph's statistics before and after (the metrics
of `STATS`: nodes, estimated FLOPs, bytes of buffers; computed when first
read), the time spent, and the diff. `report(records)` prints them as a table.

A pipeline of gradc's own passes is cached on disk (the code generator's
cache directory, see gradc/codegen/__init__.py) by the input graph's text,
the pipeline and gradc's source: a process that runs it again loads the
result instead (a training step's passes take tens of milliseconds; the
result is pickled, which loads several times faster than its text parses),
and runs the passes only if their records are asked for. Not while anything is
printed or verified per pass, nor with GRADC_CHECK_IR set (the test suite).
"""
from __future__ import annotations

import ast
import copyreg
import difflib
import functools
import hashlib
import inspect
import io
import itertools
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import GRAD, Graph, Node, Value, ancestors
from ..ir.verify import VerifyError, check
from ..prims import REGISTRY, Aval, make_const_value

PASSES: dict = {}

# simplify first: reshape/transpose chains and identities collapse, which
# exposes constants and duplicates; fold then evaluates constant subgraphs,
# cse merges identical computations, and dce drops what reaches no output or
# update. fuse then groups what is left into kernels, and plan gives their
# buffers arena offsets (both last: a rewrite after them drops their work).
DEFAULT_PIPELINE = "simplify,fold,cse,dce,fuse,plan"


def register_pass(name: str):
    """Decorator: make `fn(graph, **options) -> graph` available to pipelines as `name`."""

    def deco(fn):
        if name in PASSES and PASSES[name] is not fn:
            raise ValueError(f"pass {name!r} registered twice")
        PASSES[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------- pipelines
def parse_pipeline(pipeline: str | None) -> list[tuple[str, dict]]:
    """`"simplify<fast-math>,cse"` -> `[("simplify", {"fast_math": True}), ("cse", {})]`.

    Unknown passes and options are reported before anything runs."""
    text = DEFAULT_PIPELINE if pipeline is None else pipeline
    steps = []
    for item in _split(text):
        name, _, rest = item.partition("<")
        name = name.strip()
        if name == "default" and not rest:
            steps.extend(parse_pipeline(DEFAULT_PIPELINE))
            continue
        if name not in PASSES:
            raise ValueError(
                f"unknown pass {name!r} in pipeline {text!r}; known passes: {', '.join(sorted(PASSES))} "
                "(a pipeline is a comma-separated list such as 'simplify,fold,cse,dce')"
            )
        if rest and not rest.rstrip().endswith(">"):
            raise ValueError(f"pipeline {text!r}: options of {name!r} must end with '>', as in 'simplify<fast-math>'")
        opts = {}
        for opt in filter(None, (o.strip() for o in rest.rstrip()[:-1].split(";"))) if rest else ():
            key, eq, value = opt.partition("=")
            opts[key.strip().replace("-", "_")] = _option_value(value.strip()) if eq else True
        params = inspect.signature(PASSES[name]).parameters
        for key in opts:
            if key not in params or key == next(iter(params)):
                known = [p.replace("_", "-") for p in list(params)[1:]]
                raise ValueError(
                    f"pass {name!r} has no option {key.replace('_', '-')!r}; its options: {', '.join(known) or 'none'}"
                )
        steps.append((name, opts))
    return steps


def _split(text):
    out, depth, cur = [], 0, ""
    for c in text:
        depth += (c == "<") - (c == ">")
        if c == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
    out.append(cur)
    return [p.strip() for p in out if p.strip()]


def _option_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _label(name, opts):
    if not opts:
        return name
    return name + "<" + ";".join(k.replace("_", "-") + ("" if v is True else f"={v}") for k, v in opts.items()) + ">"


# ---------------------------------------------------------------- statistics
def _numel(v) -> int:
    return math.prod(v.shape)


def _flops(n: Node) -> int:
    """Estimated floating-point operations of one node, from shapes."""
    prim = REGISTRY.get(n.op)
    kind = prim.kind if prim is not None else None
    if kind in ("unary", "binary", "compare", "select"):
        return _numel(n.out)
    if kind == "reduce":
        return _numel(n.inputs[0])
    if n.op == "matmul":
        return 2 * _numel(n.out) * n.inputs[0].shape[-1]
    if n.op in ("scatter_add", "scatter_index"):
        return _numel(n.inputs[0])
    return 0


def _arena(g: Graph) -> int:
    from .plan import arena_bytes

    return arena_bytes(g)


# metric name -> function of a graph. kernels: the functions the code generator
# emits (one per node before fuse; constants need none); arena: the bytes of
# buffers it allocates (after plan, with reuse)
STATS = {
    "nodes": lambda g: len(g.nodes),
    "kernels": lambda g: len(g.kernels) or sum(n.op not in ("const", GRAD) for n in g.nodes),
    "flops": lambda g: sum(_flops(n) for n in g.nodes),
    "bytes": lambda g: sum(_numel(n.out) * n.out.dtype.itemsize for n in g.nodes),
    "arena": _arena,
}


def graph_stats(g: Graph) -> dict:
    return {k: f(g) for k, f in STATS.items()}


@dataclass
class PassRecord:
    """What one pass of a pipeline did."""

    name: str  # with options, e.g. "simplify<fast-math>"
    seconds: float
    graph_before: Graph = field(repr=False)
    graph_after: Graph = field(repr=False)
    # graph_stats by id(graph), shared by a pipeline's records and filled when first read
    # (they cost a third of a training step's pass time); None when stats are off
    memo: dict | None = field(default=None, repr=False)

    @property
    def before(self) -> dict:
        """graph_stats of its input ({} when stats were off)."""
        return self._stats(self.graph_before)

    @property
    def after(self) -> dict:
        """graph_stats of its result."""
        return self._stats(self.graph_after)

    def _stats(self, g: Graph) -> dict:
        if self.memo is None:
            return {}
        if id(g) not in self.memo:
            self.memo[id(g)] = graph_stats(g)
        return self.memo[id(g)]

    @property
    def diff(self) -> str:
        """Unified diff of the IR text, '' when the pass changed nothing."""
        a, b = str(self.graph_before), str(self.graph_after)
        return "".join(difflib.unified_diff(
            a.splitlines(True), b.splitlines(True), f"before {self.name}", f"after {self.name}"
        ))


class PipelineResult(dict):
    """`{"optimized": final graph}` (the compiler merges it into its stages),
    with the per-pass `records` and the `pipeline` string."""

    def __init__(self, graph, records, pipeline, rerun=None):
        super().__init__(optimized=graph)
        self.graph, self._records, self.pipeline, self._rerun = graph, records, pipeline, rerun

    @property
    def records(self) -> list:
        """One PassRecord per pass (a result from the disk cache runs its pipeline again for them)."""
        if self._records is None:
            self._records = self._rerun().records
        return self._records

    def report(self, file=None):
        report(self.records, file)


def run_pipeline(graph: Graph, pipeline: str | None = None, *, print_after_all=False, print_after=None,
                 diff=False, verify_each=None, stats=True, file=None, cache=True) -> PipelineResult:
    """Run the passes of `pipeline` (default `DEFAULT_PIPELINE`) on `graph`, which is not changed.

    `print_after_all` / `print_after` (a pass name or a list of names) print
    the IR after those passes, `diff` prints each pass's unified diff, all to
    `file` (default stdout). `verify_each` runs the verifier after every pass
    and names the pass that broke the graph; by default it does so where
    GRADC_CHECK_IR is set (the test suite): elsewhere the code generator
    verifies the graph it is given, which saves a third of a step's pass time.
    `cache=False` runs the passes even where their result is on disk."""
    steps = parse_pipeline(pipeline)
    if isinstance(print_after, str):
        print_after = [p.strip() for p in print_after.split(",")]
    if verify_each is None:
        verify_each = bool(os.environ.get("GRADC_CHECK_IR"))
    wanted = set(print_after or ())
    whole = ",".join(_label(n, o) for n, o in steps)
    quiet = not (print_after_all or wanted or diff or verify_each)
    key = _cache_key(graph, whole) if cache and quiet and _cacheable(steps) else None
    hit = key and _load(key, whole, lambda: run_pipeline(graph, pipeline, stats=stats, cache=False))
    if hit:
        return hit
    out = file or sys.stdout
    g, records, memo = graph, [], {} if stats else None
    for name, opts in steps:
        label = _label(name, opts)
        t0 = time.perf_counter()
        new = PASSES[name](g, **opts)
        seconds = time.perf_counter() - t0
        if verify_each:
            try:
                check(new)
            except VerifyError as e:
                raise VerifyError(f"after pass {label}: {e}") from None
        rec = PassRecord(label, seconds, g, new, memo)
        records.append(rec)
        if print_after_all or name in wanted or label in wanted:
            print(f"// *** IR after {label} ***", file=out)
            print(new, file=out, end="")
        if diff:
            print(rec.diff or f"// {label}: no change\n", file=out, end="")
        g = new
    if not steps:
        g = graph.copy()
    if key is not None:
        _store(key, g)
    return PipelineResult(g, records, whole)


def _store(key: str, g: Graph) -> None:
    """Cache a pipeline's result: pickled, or as text where the graph cannot be pickled."""
    try:
        _cache().cache_store(key, "", _pickle(g), ".passes")
    except (pickle.PicklingError, TypeError, ValueError, RecursionError):
        _cache().cache_store(key, str(g), b"", ".passes")


def _pickle(g: Graph) -> bytes:
    """`g` pickled, its name counter (an itertools.count, which Python 3.12 deprecated
    pickling) as the next number it gives."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, itertools.count: _reduce_count}
    pickler.dump(g)
    return out.getvalue()


def _reduce_count(counter):
    text = repr(counter)  # "count(7)"
    if not (text.startswith("count(") and text[6:-1].isdigit()):
        raise ValueError(f"cannot pickle {text}")
    return itertools.count, (int(text[6:-1]),)


def _load(key: str, whole: str, rerun) -> PipelineResult | None:
    """The result stored under `key` (its records made by `rerun` when asked for), or None."""
    cached = _cache().cache_load(key, ".passes")
    if cached is None:
        return None
    text, blob = cached
    from ..ir.parser import parse

    try:
        g = pickle.loads(blob) if blob else parse(text)
    except Exception:  # damaged, or not a graph: run the passes (and overwrite it)
        return None
    return PipelineResult(g, None, whole, rerun) if isinstance(g, Graph) else None


def _cacheable(steps) -> bool:
    """Whether a pipeline's result may come from the disk cache: gradc's own passes only
    (the source stamp covers their code, not a pass registered by a user)."""
    return (bool(steps) and not os.environ.get("GRADC_CHECK_IR") and _cache().cache_dir() is not None
            and all(PASSES[name].__module__.startswith(__package__ + ".") for name, _ in steps))


def _cache():
    from ..codegen import jit

    return jit


def _cache_key(graph: Graph, label: str) -> str:
    return hashlib.sha256(b"\0".join([source_stamp(), label.encode(), str(graph).encode()])).hexdigest()


@functools.lru_cache(maxsize=None)
def source_stamp() -> bytes:
    """The path, size and modification time of every gradc source file: a changed or
    upgraded gradc never reuses a result its passes or lowering made before."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.digest()


def format_report(records) -> str:
    """The statistics table: one row per pass, each metric after the pass and its change."""
    metrics = list(records[0].after) if records and records[0].after else []
    rows = [["pass"] + metrics + ["ms"]]
    if metrics:
        rows.append(["(input)"] + [f"{records[0].before[m]:,}" for m in metrics] + [""])
    for r in records:
        cells = []
        for m in metrics:
            a, d = r.after[m], r.after[m] - r.before[m]
            cells.append(f"{a:,}" + (f" ({d:+,})" if d else ""))
        rows.append([r.name] + cells + [f"{r.seconds * 1e3:.2f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def report(records, file=None) -> None:
    print(format_report(records), file=file or sys.stdout, end="")


# ---------------------------------------------------------------- rewriting
class Match(dict):
    """Bindings of a rewrite: `m.x` for `m["x"]`."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Rewriter:
    """Build a new graph from `src`, node by node; `src` is not changed.

    `run(visit)` offers every node (its operands already mapped into the new
    graph) to `visit(rw, node)`, which returns None to keep it, or the value or
    literal that replaces it; `rw.emit` adds the nodes a replacement needs.
    The replacement is given the replaced value's exact type (a literal
    becomes a const; a reshape or broadcast is added where only the shape
    differs), and a node made for it takes over the replaced value's name.
    Nodes the rewrites leave unused are dropped (dead code that was there
    before is dce's business). `grad` markers are kept as they are.
    """

    def __init__(self, src: Graph):
        self.src = src
        self.graph = Graph(src.name)
        self.env = {v.name: self.graph.add_input(v.name, v.dtype, v.shape, v.kind) for v in src.inputs}
        self.nodes: list[Node] = []
        self.names = {v.name for v in src.values()}
        self.counter = itertools.count(1)
        self.free: list[str] = []  # fresh names given back (their node took over another name)
        self.changed = 0  # number of nodes replaced
        self.loc = ("", "")

    def fresh(self) -> str:
        if self.free:
            return self.free.pop()
        while True:
            name = str(next(self.counter))
            if name not in self.names:
                self.names.add(name)
                return name

    def emit(self, op, operands, attrs=None) -> Value:
        """Add a node (typed by its op's shape rule) at the current position."""
        attrs = dict(attrs or {})
        avals = [Aval(o.shape, o.dtype) if isinstance(o, Value) else Aval((), None) for o in operands]
        t = REGISTRY[op].shape(*avals, **attrs)
        v = Value(self.fresh(), t.dtype, t.shape)
        self.nodes.append(Node(op, operands, attrs, v, *self.loc))
        return v

    def conform(self, r, like: Value) -> Value:
        """`r` with the type of `like`: the same values, reshaped or broadcast."""
        if not isinstance(r, Value):
            r = self.emit("const", [], {"value": make_const_value(np.array(r, like.dtype.np))})
        if r.dtype is not like.dtype:
            raise AssertionError(f"a rewrite of %{like.name} ({like.type_str}) changed its dtype: {r.type_str}")
        if r.shape == like.shape:
            return r
        if _numel(r) == _numel(like):
            return self.emit("reshape", [r], {"shape": like.shape})
        return self.emit("broadcast", [r], {"shape": like.shape})

    def run(self, visit) -> Graph:
        for n in self.src.nodes:
            out = Value(n.out.name, n.out.dtype, n.out.shape)
            operands = [self.env[o.name] if isinstance(o, Value) else o for o in n.operands]
            node = Node(n.op, operands, n.attrs, out, n.loc, n.source)
            self.loc = (n.loc, n.source)
            mark = len(self.nodes)
            r = None if n.op == GRAD else visit(self, node)
            if r is None or r is out:
                self.nodes.append(node)
                self.env[out.name] = out
                continue
            self.changed += 1
            v = self.conform(r, out)
            if any(m.out is v for m in self.nodes[mark:]):  # a new node takes over the replaced name
                self.free.append(v.name)
                v.name = out.name
            self.env[out.name] = v
        g = self.graph
        g.outputs = [self.env[v.name] for v in self.src.outputs]
        g.updates = [(self.env[t.name], self.env[v.name]) for t, v in self.src.updates]
        dead_before = {n.out.name for n in self.src.nodes} - ancestors(self.src.roots())
        keep = ancestors(g.roots() + [m.out for m in self.nodes if m.out.name in dead_before])
        g.rebuild([m for m in self.nodes if m.out.name in keep])
        return g
