"""Parse IR text (as `printer` writes it, or by hand) back into a `Graph`.

`str(parse(text)) == text` for every printed graph; hand-written text may
omit the alignment and location comments. Errors name the line. A kernel
header's op list is informational (it is printed from the members); the
node lines indented deeper than the header are its members.
"""
from __future__ import annotations

import ast
import re

import numpy as np

from .. import dtypes
from ..prims import REGISTRY, Arg, Slice
from .graph import GRAD, INPUT_KINDS, Graph, Kernel

_NAME = r"[A-Za-z0-9_.\-]+"
_TYPE = r"(?P<dtype>\w+)\[(?P<shape>[0-9,]*)\]"
_HEADER = re.compile(rf"^graph (?P<name>{_NAME})\((?P<rest>.*)$")
_INPUT = re.compile(rf"^\s*%(?P<name>{_NAME}): {_TYPE} (?P<kind>\w+),?\s*$")
_NODE = re.compile(rf"^\s*%(?P<name>{_NAME}): {_TYPE} = (?P<op>\w+)(?P<rest>.*)$")
_UPDATE = re.compile(rf"^\s*%(?P<target>{_NAME}) <- %(?P<value>{_NAME})\s*$")
_RETURN = re.compile(r"^\s*return(?P<rest>.*)$")
_KERNEL = re.compile(
    rf"^(?P<indent>\s*)kernel (?P<name>{_NAME}) \[[^\]]*\](?: -> (?P<stores>[^;]*))?"
    r"(?:; temps (?P<temps>[^;]*))?(?:; scratch @(?P<scratch>\d+))?\s*$"
)
_PLACED = re.compile(rf"^%(?P<name>{_NAME})(?: @(?:(?P<offset>\d+)|%(?P<param>{_NAME})))?$")


class IRParseError(ValueError):
    pass


def _type(m):
    shape = tuple(int(s) for s in m.group("shape").split(",") if s)
    return dtypes.as_dtype(m.group("dtype")), shape


def parse_literal(tok: str):
    tok = tok.strip()
    if tok in ("True", "False"):
        return tok == "True"
    if tok in ("nan", "inf", "-inf") or any(c in tok for c in ".e"):
        return float(tok)
    return int(tok)


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    out, depth, cur = [], 0, ""
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out]


def _spec_entry(tok):
    if tok == "None":
        return None
    if tok.startswith("$"):
        return Arg(int(tok[1:]))
    if ":" in tok:
        parts = [int(p) for p in tok.split(":")]
        return Slice(parts[0], parts[1], parts[2] if len(parts) == 3 else 1)
    return int(tok)


def _attr(key, text, out_dtype, out_shape):
    if key == "dtype":
        return dtypes.as_dtype(text)
    if key == "value":
        vals = [parse_literal(t) for t in text.strip("[]").split(",") if t.strip()]
        return np.array(vals, dtype=out_dtype.np).reshape(out_shape)
    if key == "spec":
        return tuple(_spec_entry(t) for t in _split_top(text[1:-1]))
    return ast.literal_eval(text)


def _split_comment(s):
    if "  # " in s:
        body, comment = s.split("  # ", 1)
        loc, _, source = comment.partition("  ")
        return body, loc.strip(), source.strip()
    return s, "", ""


def _kernel(m, where) -> Kernel:
    k = Kernel(m.group("name"))
    for field in ("stores", "temps"):
        for tok in _split_top(m.group(field) or ""):
            pm = _PLACED.match(tok)
            if not pm:
                raise IRParseError(f"{where}: expected '%name' or '%name @offset' in a kernel header, got {tok!r}")
            getattr(k, field).append(pm.group("name"))
            if pm.group("offset") is not None:
                k.offsets[pm.group("name")] = int(pm.group("offset"))
            elif pm.group("param") is not None:
                k.offsets[pm.group("name")] = pm.group("param")
    if m.group("scratch") is not None:
        k.scratch = int(m.group("scratch"))
    return k


def parse(text: str) -> Graph:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("//")]
    if not lines:
        raise IRParseError("empty IR text")
    m = _HEADER.match(lines[0].strip())
    if not m:
        raise IRParseError(f"line 1: expected 'graph NAME(', got {lines[0]!r}")
    g = Graph(m.group("name"))
    env = {}
    i = 1
    if m.group("rest").strip() != ") {":
        while i < len(lines) and lines[i].strip() != ") {":
            im = _INPUT.match(lines[i])
            if not im or im.group("kind") not in INPUT_KINDS:
                raise IRParseError(f"line {i + 1}: expected an input '%name: f32[2,3] param|state|input|scalar', got {lines[i]!r}")
            d, shape = _type(im)
            env[im.group("name")] = g.add_input(im.group("name"), d, shape, im.group("kind"))
            i += 1
        i += 1
    kernel, depth = None, 0  # the kernel whose members are being read, and its header's indentation
    for ln_no in range(i, len(lines)):
        line = lines[ln_no]
        where = f"line {ln_no + 1}"
        if line.strip() == "}":
            break
        if km := _KERNEL.match(line):
            kernel, depth = _kernel(km, where), len(km.group("indent"))
            if kernel.name in g.kernels:
                raise IRParseError(f"{where}: kernel {kernel.name} is defined twice")
            g.kernels[kernel.name] = kernel
            continue
        if kernel is not None and len(line) - len(line.lstrip()) <= depth:
            kernel = None

        def val(tok):
            tok = tok.strip()
            if tok.startswith("%"):
                if tok[1:] not in env:
                    raise IRParseError(f"{where}: %{tok[1:]} is used before it is defined")
                return env[tok[1:]]
            return parse_literal(tok)

        if um := _UPDATE.match(line):
            g.updates.append((val("%" + um.group("target")), val("%" + um.group("value"))))
            continue
        if rm := _RETURN.match(line):
            g.outputs = [val(t) for t in _split_top(rm.group("rest")) if t]
            continue
        nm = _NODE.match(line)
        if not nm:
            raise IRParseError(f"{where}: cannot parse {line.strip()!r}")
        d, shape = _type(nm)
        op = nm.group("op")
        body, loc, source = _split_comment(nm.group("rest"))
        attrs = {}
        if "{" in body:
            body, attr_text = body.split("{", 1)
            for part in _split_top(attr_text.rstrip().rstrip("}")):
                k, _, v = part.partition("=")
                attrs[k.strip()] = _attr(k.strip(), v.strip(), d, shape)
        if op == GRAD:
            loss, _, wrt = body.partition(" wrt ")
            operands = [val(loss), val(wrt)]
        else:
            if op not in REGISTRY:
                raise IRParseError(f"{where}: unknown op {op!r}")
            operands = [val(t) for t in _split_top(body)]
        env[nm.group("name")] = g.add_node(op, operands, attrs, d, shape, name=nm.group("name"), loc=loc, source=source)
        if kernel is not None:
            g.nodes[-1].kernel = kernel.name
    g._counter = _counter_after(g)
    return g


def _counter_after(g):
    import itertools

    nums = [int(n) for n in g._names if n.isdigit()]
    return itertools.count(max(nums, default=0) + 1)
