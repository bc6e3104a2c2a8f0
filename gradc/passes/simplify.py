"""`simplify`: algebraic rewrites that hold exactly in floating point.

The rewrites are data: `RULES` is a table of `Rule(name, pattern,
replacement, when, fast_math)`. A pattern is a tree of `Op(name, *operands,
**attrs)` with leaves `Var(name)` (any operand; a name used twice must be
the same operand) and `Splat(name, test)` (a constant whose elements all
equal one value that passes `test`: a literal, or a const node, also
through reshape and broadcast). The replacement names a variable or is a
function `(m, rw) -> value` of the bindings `m` (which also hold the
matched node's result as `m.out`). The pass applies the first matching
rule to each node, sweeping the graph until nothing changes; a replacement
always keeps the type of the value it replaces (see `Rewriter.conform`).

Exactness is bit for bit, signed zeros included: `x - 0.0` and `x + (-0.0)`
are `x`, but `x + 0.0` is not (it turns -0.0 into 0.0) and a sum over
size-1 axes is `x + 0.0`, not `x`. Rules marked `fast_math` (`x + 0.0`,
`x * 0`) assume no NaN, no infinity and no care for the sign of zero; they
run only with `simplify<fast-math>`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import dtypes
from ..ir.graph import Graph, Value
from .cse import key
from .manager import Match, Rewriter, register_pass

MAX_SWEEPS = 32


# ---------------------------------------------------------------- patterns
class Var(NamedTuple):
    name: str


class Splat(NamedTuple):
    name: str
    test: Callable  # test(value, dtype of the matched node's result) -> bool


class Op:
    def __init__(self, op, *operands, **attrs):
        self.op, self.operands, self.attrs = op, operands, attrs


class Rule(NamedTuple):
    name: str
    pattern: Op
    replace: object  # a variable name or a function (m, rw) -> value or literal
    when: Callable | None = None
    fast_math: bool = False


def splat(o):
    """The one value every element of a constant operand has, else None."""
    while isinstance(o, Value):
        p = o.producer
        if p is None:
            return None
        if p.op in ("reshape", "broadcast"):
            o = p.operands[0]
            continue
        if p.op != "const" or p.attrs["value"].size == 0:
            return None
        a = p.attrs["value"].ravel()
        first = a[0]
        same = a.view(np.uint8).reshape(a.size, -1) == a[:1].view(np.uint8)  # bitwise: -0.0 is not 0.0
        return first if same.all() else None
    return o


def _match(pat, o, m, dtype) -> bool:
    if isinstance(pat, Var):
        if pat.name in m:
            return key(m[pat.name]) == key(o)
        m[pat.name] = o
        return True
    if isinstance(pat, Splat):
        v = splat(o)
        if v is None or not pat.test(v, dtype):
            return False
        m[pat.name] = v
        return True
    p = o.producer if isinstance(o, Value) else None
    if p is None or p.op != pat.op or len(p.operands) != len(pat.operands):
        return False
    for k, want in pat.attrs.items():
        if isinstance(want, Var):
            m[want.name] = p.attrs[k]
        elif p.attrs.get(k) != want:
            return False
    return all(_match(q, a, m, dtype) for q, a in zip(pat.operands, p.operands))


# ---------------------------------------------------------------- constants the rules look for
def _float(d):
    return d.is_floating_point


def one(v, d):
    return v == 1


def pos_zero(v, d):  # x - 0 == x exactly; for floats only +0.0
    return v == 0 and not np.signbit(v)


def add_identity(v, d):  # x + 0 == x exactly; for floats only -0.0
    return v == 0 and (np.signbit(v) or not _float(d))


def zero(v, d):
    return v == 0


def true(v, d):
    return bool(v)


def false(v, d):
    return not bool(v)


# converting through a type that holds every value of the first is converting directly
WIDENS = {
    (dtypes.float32, dtypes.float64), (dtypes.int32, dtypes.int64), (dtypes.int32, dtypes.float64),
    (dtypes.bool_, dtypes.int32), (dtypes.bool_, dtypes.int64), (dtypes.bool_, dtypes.float32),
    (dtypes.bool_, dtypes.float64),
}


def _compose_transposes(m, rw):
    perm = tuple(m.p1[i] for i in m.p2)
    return m.x if perm == tuple(range(len(perm))) else rw.emit("transpose", [m.x], {"perm": perm})


def _convert_direct(m, rw):
    return m.x if m.x.dtype is m.out.dtype else rw.emit("convert", [m.x], {"dtype": m.out.dtype})


def _unit_axes(m):
    return all(m.x.shape[a] == 1 for a in m.axes) and m.x.dtype is m.out.dtype


def _sum_unit_axes(m, rw):
    # a sum starts from +0.0, so one element x gives x + 0.0 (-0.0 becomes 0.0)
    x = rw.conform(m.x, m.out)
    return rw.emit("add", [x, 0.0]) if _float(m.out.dtype) else x


X, Y, C = Var("x"), Var("y"), Var("c")
RULES = [
    # name                  pattern                                            replacement   condition / flag
    Rule("mul-one",         Op("mul", X, Splat("k", one)),                     "x"),
    Rule("one-mul",         Op("mul", Splat("k", one), X),                     "x"),
    Rule("div-one",         Op("div", X, Splat("k", one)),                     "x"),
    Rule("sub-zero",        Op("sub", X, Splat("k", pos_zero)),                "x"),
    Rule("add-neg-zero",    Op("add", X, Splat("k", add_identity)),            "x"),
    Rule("neg-zero-add",    Op("add", Splat("k", add_identity), X),            "x"),
    Rule("neg-neg",         Op("neg", Op("neg", X)),                           "x"),
    Rule("transpose-id",    Op("transpose", X, perm=Var("p")),                 "x",
         when=lambda m: m.p == tuple(range(len(m.p)))),
    Rule("transpose-transpose", Op("transpose", Op("transpose", X, perm=Var("p1")), perm=Var("p2")),
         _compose_transposes),
    Rule("reshape-same",    Op("reshape", X),                                  "x",
         when=lambda m: m.x.shape == m.out.shape),
    Rule("reshape-reshape", Op("reshape", Op("reshape", X)),                   "x"),  # conform reshapes once
    Rule("broadcast-same",  Op("broadcast", X),                                "x",
         when=lambda m: m.x.shape == m.out.shape),
    Rule("broadcast-broadcast", Op("broadcast", Op("broadcast", X)),           "x"),  # conform broadcasts once
    Rule("convert-same",    Op("convert", X),                                  "x",
         when=lambda m: m.x.dtype is m.out.dtype),
    Rule("convert-widened", Op("convert", Op("convert", X, dtype=Var("mid"))), _convert_direct,
         when=lambda m: (m.x.dtype, m.mid) in WIDENS),
    Rule("sum-unit-axes",   Op("sum", X, axes=Var("axes")),                    _sum_unit_axes, when=_unit_axes),
    Rule("max-unit-axes",   Op("max", X, axes=Var("axes")),                    "x", when=_unit_axes),
    Rule("prod-unit-axes",  Op("prod", X, axes=Var("axes")),                   "x", when=_unit_axes),
    Rule("where-same",      Op("where", C, X, X),                              "x"),
    Rule("where-true",      Op("where", Splat("k", true), X, Y),               "x"),
    Rule("where-false",     Op("where", Splat("k", false), X, Y),              "y"),
    Rule("mul-zero-int",    Op("mul", X, Splat("k", zero)),                    lambda m, rw: 0,
         when=lambda m: not _float(m.out.dtype)),
    Rule("zero-mul-int",    Op("mul", Splat("k", zero), X),                    lambda m, rw: 0,
         when=lambda m: not _float(m.out.dtype)),
    # assume finite values and ignore the sign of zero
    Rule("add-zero",        Op("add", X, Splat("k", zero)),                    "x", fast_math=True),
    Rule("zero-add",        Op("add", Splat("k", zero), X),                    "x", fast_math=True),
    Rule("sub-any-zero",    Op("sub", X, Splat("k", zero)),                    "x", fast_math=True),
    Rule("mul-zero",        Op("mul", X, Splat("k", zero)),                    lambda m, rw: 0, fast_math=True),
    Rule("zero-mul",        Op("mul", Splat("k", zero), X),                    lambda m, rw: 0, fast_math=True),
]


def _apply(rules, rw, n):
    for rule in rules.get(n.op, ()):
        m = Match(out=n.out)
        if not _match(rule.pattern, n.out, m, n.out.dtype) or rule.when is not None and not rule.when(m):
            continue
        return m[rule.replace] if isinstance(rule.replace, str) else rule.replace(m, rw)
    return None


@register_pass("simplify")
def simplify(graph: Graph, fast_math: bool = False) -> Graph:
    """Apply the rewrite rules of RULES until none matches (fast-math rules only with fast_math)."""
    rules = {}
    for r in RULES:
        if fast_math or not r.fast_math:
            rules.setdefault(r.pattern.op, []).append(r)
    g = graph
    for _ in range(MAX_SWEEPS):
        rw = Rewriter(g)
        g = rw.run(lambda rw, n: _apply(rules, rw, n))
        if not rw.changed:
            break
    return g
