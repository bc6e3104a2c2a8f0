"""Per-element semantics: one registry op applied to register values.

These follow the NumPy impls in `gradc.prims` (the spec), including NaN
behaviour: `maximum`/`minimum` propagate NaN, `ne` is true for NaN,
truthiness of NaN is true, `sign(nan)` is 0, float -> int conversion gives INT_MIN for NaN and
out-of-range values (what NumPy does on x86). Elementwise math carries no
fast-math flags: NaN and inf must come out as NumPy computes them.
"""
from __future__ import annotations

from .. import dtypes
from . import vmath
from .emitter import FunctionBuilder, const, mem_type, reg_type


def load(fb: FunctionBuilder, ptr: str, d) -> str:
    v = fb.op(f"load {mem_type(d)}, ptr {ptr}", "v")
    return fb.op(f"icmp ne i8 {v}, 0") if d is dtypes.bool_ else v


def store(fb: FunctionBuilder, val: str, ptr: str, d) -> None:
    if d is dtypes.bool_:
        val = fb.op(f"zext i1 {val} to i8")
    fb.emit(f"store {mem_type(d)} {val}, ptr {ptr}")


def _sfx(d) -> str:
    return "f32" if d is dtypes.float32 else "f64"


def _intrinsic(fb, name, d, *args):
    t = reg_type(d)
    return fb.call(t, f"llvm.{name}.{_sfx(d)}", [(t, a) for a in args])


def truth(fb, x, d) -> str:
    """x != 0 as an i1 (NaN is true, as in NumPy)."""
    if d is dtypes.bool_:
        return x
    if d.is_floating_point:
        return fb.op(f"fcmp une {reg_type(d)} {x}, {const(0, d)}")
    return fb.op(f"icmp ne {reg_type(d)} {x}, 0")


# ---------------------------------------------------------------- unary
def _sign(fb, x, d):
    t = reg_type(d)
    if d is dtypes.bool_:
        return x
    if d.is_floating_point:  # zero and NaN give 0, as in PyTorch
        lt = fb.op(f"select i1 {fb.op(f'fcmp olt {t} {x}, {const(0, d)}')}, {t} {const(-1, d)}, {t} {const(0, d)}")
        return fb.op(f"select i1 {fb.op(f'fcmp ogt {t} {x}, {const(0, d)}')}, {t} {const(1, d)}, {t} {lt}")
    gt = fb.op(f"zext i1 {fb.op(f'icmp sgt {t} {x}, 0')} to {t}")
    lt = fb.op(f"zext i1 {fb.op(f'icmp slt {t} {x}, 0')} to {t}")
    return fb.op(f"sub {t} {gt}, {lt}")


def _neg(fb, x, d):
    t = reg_type(d)
    if d.is_floating_point:
        return fb.op(f"fneg {t} {x}")
    if d is dtypes.bool_:
        raise NotImplementedError("neg of a bool tensor is not supported (use logical_not)")
    return fb.op(f"sub {t} 0, {x}")


def _abs(fb, x, d):
    if d.is_floating_point:
        return _intrinsic(fb, "fabs", d, x)
    if d is dtypes.bool_:
        return x
    t = reg_type(d)
    return fb.call(t, f"llvm.abs.{t}", [(t, x), ("i1", "false")])


_FLOAT_UNARY = {
    "sqrt": lambda fb, x, d: _intrinsic(fb, "sqrt", d, x),
    "sin": lambda fb, x, d: _intrinsic(fb, "sin", d, x),
    "cos": lambda fb, x, d: _intrinsic(fb, "cos", d, x),
}


def unary(fb: FunctionBuilder, op: str, x: str, d) -> str:
    if op in vmath.FUNCTIONS:  # inlined polynomial code that vectorizes
        return vmath.call(fb, op, x, d)
    if op in _FLOAT_UNARY:
        return _FLOAT_UNARY[op](fb, x, d)
    if op == "neg":
        return _neg(fb, x, d)
    if op == "abs":
        return _abs(fb, x, d)
    if op == "sign":
        return _sign(fb, x, d)
    if op == "logical_not":
        return fb.op(f"xor i1 {truth(fb, x, d)}, true")
    raise NotImplementedError(f"codegen: no lowering for unary op {op!r}")


# ---------------------------------------------------------------- binary
_FCMP = {"eq": "oeq", "ne": "une", "lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge"}
_ICMP = {"eq": "eq", "ne": "ne", "lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge"}
_UCMP = {"eq": "eq", "ne": "ne", "lt": "ult", "le": "ule", "gt": "ugt", "ge": "uge"}
_FARITH = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
_IARITH = {"add": "add", "sub": "sub", "mul": "mul"}
_BARITH = {"add": "or", "mul": "and", "maximum": "or", "minimum": "and", "sub": "xor"}  # NumPy's bool algebra


def binary(fb: FunctionBuilder, op: str, x: str, y: str, d, flags: str = "") -> str:
    """`op` on two registers of dtype `d`; `flags` are fast-math flags for float arithmetic."""
    t = reg_type(d)
    f = flags + " " if flags else ""
    if op in ("logical_and", "logical_or"):
        return fb.op(f"{op[8:]} i1 {truth(fb, x, d)}, {truth(fb, y, d)}")
    if op in _FCMP:
        cmp = "fcmp " + _FCMP[op] if d.is_floating_point else "icmp " + (_UCMP if d is dtypes.bool_ else _ICMP)[op]
        return fb.op(f"{cmp} {t} {x}, {y}")
    if d.is_floating_point:
        if op in _FARITH:
            return fb.op(f"{_FARITH[op]} {f}{t} {x}, {y}")
        if op in ("maximum", "minimum", "pow"):
            return _intrinsic(fb, op, d, x, y)
    elif d is dtypes.bool_:
        if op in _BARITH:
            return fb.op(f"{_BARITH[op]} i1 {x}, {y}")
    else:
        if op in _IARITH:
            return fb.op(f"{_IARITH[op]} {t} {x}, {y}")
        if op in ("maximum", "minimum"):
            return fb.call(t, f"llvm.s{op[:3]}.{t}", [(t, x), (t, y)])
        if op == "pow":
            return fb.op(f"call {t} @gradc.ipow.{t}({t} {x}, {t} {y})")
    raise NotImplementedError(f"codegen: no lowering for {op} on {d.name}")


def ipow_helpers() -> str:
    """Integer power by squaring (negative exponents give 1; NumPy raises for them)."""
    out = []
    for t in ("i64", "i32"):
        out.append(f"""define internal {t} @gradc.ipow.{t}({t} %b, {t} %e) alwaysinline nounwind {{
entry:
  br label %head
head:
  %r = phi {t} [ 1, %entry ], [ %r2, %body ]
  %x = phi {t} [ %b, %entry ], [ %x2, %body ]
  %n = phi {t} [ %e, %entry ], [ %n2, %body ]
  %more = icmp sgt {t} %n, 0
  br i1 %more, label %body, label %done
body:
  %bit = and {t} %n, 1
  %odd = icmp ne {t} %bit, 0
  %rx = mul {t} %r, %x
  %r2 = select i1 %odd, {t} %rx, {t} %r
  %x2 = mul {t} %x, %x
  %n2 = lshr {t} %n, 1
  br label %head
done:
  ret {t} %r
}}""")
    return "\n\n".join(out)


# ---------------------------------------------------------------- convert
def convert(fb: FunctionBuilder, x: str, src, dst) -> str:
    if src is dst:
        return x
    s, t = reg_type(src), reg_type(dst)
    if dst is dtypes.bool_:
        return truth(fb, x, src)
    if src.is_floating_point and dst.is_floating_point:
        return fb.op(f"{'fpext' if dst.itemsize > src.itemsize else 'fptrunc'} {s} {x} to {t}")
    if src.is_floating_point:
        # NumPy (x86): NaN and out-of-range give the minimum integer; fptosi alone would give poison
        bits = dst.itemsize * 8 - 1
        lo = fb.op(f"fcmp oge {s} {x}, {const(-(2.0 ** bits), src)}")
        hi = fb.op(f"fcmp olt {s} {x}, {const(2.0 ** bits, src)}")
        ok = fb.op(f"and i1 {lo}, {hi}")
        return fb.op(f"select i1 {ok}, {t} {fb.op(f'fptosi {s} {x} to {t}')}, {t} {-(2 ** bits)}")
    if dst.is_floating_point:
        return fb.op(f"{'uitofp' if src is dtypes.bool_ else 'sitofp'} {s} {x} to {t}")
    if src is dtypes.bool_:
        return fb.op(f"zext i1 {x} to {t}")
    if dst.itemsize == src.itemsize:
        return x
    return fb.op(f"{'sext' if dst.itemsize > src.itemsize else 'trunc'} {s} {x} to {t}")
