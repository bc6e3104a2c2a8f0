"""Writing LLVM IR as text: types, exact constants and a function builder.

Text (parsed by `llvm.parse_assembly`) rather than `llvmlite.ir` because it
can carry every attribute LLVM knows. Mutable locals (loop counters are
phis; accumulators are `alloca`s in the entry block) are left to `mem2reg`,
as clang does.
"""
from __future__ import annotations

import struct
from contextlib import contextmanager

import numpy as np

from .. import dtypes

# In memory a bool is NumPy's byte; in registers it is an i1.
_MEM = {dtypes.float32: "float", dtypes.float64: "double", dtypes.int64: "i64", dtypes.int32: "i32",
        dtypes.bool_: "i8"}
_REG = dict(_MEM)
_REG[dtypes.bool_] = "i1"


def mem_type(d) -> str:
    """LLVM type of one element of a buffer of dtype `d`."""
    return _MEM[d]


def reg_type(d) -> str:
    """LLVM type of one element held in a register."""
    return _REG[d]


def const(value, d) -> str:
    """An exact LLVM constant of dtype `d` (floats as the hex of their double)."""
    if d.is_floating_point:
        v = float(np.asarray(value).astype(d.np))
        return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]
    if d is dtypes.bool_:
        return "true" if bool(value) else "false"
    return str(int(value))


def quote(name: str) -> str:
    """An LLVM global name for any string."""
    safe = name.replace("\\", "\\5C").replace('"', "\\22")
    return f'@"{safe}"'


class FunctionBuilder:
    """Builds one function's body: fresh SSA names, blocks, counted loops."""

    def __init__(self, header: str, decls: set):
        self.header = header  # "define ... @f(...) attrs"
        self.decls = decls  # the module's `declare` lines, shared by its functions
        self.allocas: list[str] = []
        self.lines: list[str] = []
        self.block = "%entry"
        self._n = 0

    def fresh(self, hint: str = "t") -> str:
        self._n += 1
        return f"%{hint}{self._n}"

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def op(self, text: str, hint: str = "t") -> str:
        """Emit `%new = text` and return `%new`."""
        name = self.fresh(hint)
        self.emit(f"{name} = {text}")
        return name

    def label(self, name: str) -> None:
        self.lines.append(f"{name[1:]}:")
        self.block = name

    def local(self, ty: str, init: str | None = None, at_entry: bool = False) -> str:
        """A mutable local (an entry-block alloca), initialised here or on function entry."""
        p = self.fresh("acc")
        self.allocas.append(f"  {p} = alloca {ty}")
        if init is not None:
            if at_entry:
                self.allocas.append(f"  store {ty} {init}, ptr {p}")
            else:
                self.emit(f"store {ty} {init}, ptr {p}")
        return p

    @contextmanager
    def loop(self, n, hint: str = "i"):
        """`for i in range(n)`, n a constant or an i64 value; yields the i64 index."""
        if n == 1:
            yield "0"
            return
        head, body, latch, done = (self.fresh(hint + s) for s in (".head", ".body", ".latch", ".end"))
        pre = self.block
        i, nxt = self.fresh(hint), self.fresh(hint + ".next")
        self.emit(f"br label {head}")
        self.label(head)
        self.emit(f"{i} = phi i64 [ 0, {pre} ], [ {nxt}, {latch} ]")
        c = self.op(f"icmp ult i64 {i}, {n}")
        self.emit(f"br i1 {c}, label {body}, label {done}")
        self.label(body)
        yield i
        self.emit(f"br label {latch}")
        self.label(latch)
        self.emit(f"{nxt} = add nuw nsw i64 {i}, 1")
        self.emit(f"br label {head}")
        self.label(done)

    def call(self, ret: str, fn: str, args) -> str:
        """Call an intrinsic or C function `ret fn(args)`, declaring it once per module."""
        self.decls.add(f"declare {ret} @{fn}({', '.join(t for t, _ in args)})")
        text = f"call {ret} @{fn}({', '.join(f'{t} {v}' for t, v in args)})"
        if ret == "void":
            self.emit(text)
            return ""
        return self.op(text)

    def memcpy(self, dst: str, src: str, nbytes: int) -> None:
        if nbytes:
            self.call("void", "llvm.memcpy.p0.p0.i64", [("ptr", dst), ("ptr", src), ("i64", nbytes), ("i1", "false")])

    def memzero(self, dst: str, nbytes: int) -> None:
        if nbytes:
            self.call("void", "llvm.memset.p0.i64", [("ptr", dst), ("i8", 0), ("i64", nbytes), ("i1", "false")])

    def gep(self, ty: str, base: str, off) -> str:
        if off == 0 or off == "0":
            return base
        return self.op(f"getelementptr inbounds {ty}, ptr {base}, i64 {off}", "p")

    def mad(self, acc, i, stride: int):
        """acc + i * stride as an i64 expression, folding constants (`i` may be an int: an unrolled index)."""
        if stride == 0 or i in (0, "0"):
            return acc
        if isinstance(i, int):
            if isinstance(acc, int):
                return acc + i * stride
            term = i * stride
        else:
            term = i if stride == 1 else self.op(f"mul nsw i64 {i}, {stride}")
        if acc in (0, "0"):
            return term
        return self.op(f"add nsw i64 {acc}, {term}")

    def text(self) -> str:
        return "\n".join([self.header + " {", "entry:", *self.allocas, *self.lines, "}"])
