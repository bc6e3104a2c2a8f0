"""exp, log, log1p, tanh, sigmoid and erf as straight-line LLVM IR that vectorizes.

LLVM lowers `llvm.exp.*` and friends to scalar libm calls, which keep a
loop from vectorizing (about 0.4 G exp/s, 0.03 G tanh/s here). These are
written instead with float and integer arithmetic and selects only: range
reduction, a minimax polynomial, a rescale by building the power of two in
the exponent bits, and selects for the special cases. No branches and no
calls, so a loop over them becomes vector code.

Each function is an `alwaysinline` helper `@gradc.<name>.<f32|f64>` added to
the module the first time a kernel calls it. No fast-math flags: NaN, inf,
signed zeros and denormals come out as NumPy gives them. Accuracy (measured
by tests/test_vmath.py against float64/mpmath references): within a few ulp
over the whole float range.

The polynomial coefficients were fitted by a Remez exchange in 40-digit
arithmetic (weights noted per table) and rounded to the target precision.
"""
from __future__ import annotations

import functools

from .. import dtypes
from .emitter import FunctionBuilder, const

_h = float.fromhex

# e^r = 1 + r + r^2 Q(r) on |r| <= ln2/2; Q fitted relative to expm1(r)
_EXPM1_Q = {
    32: [_h(c) for c in ("0x1.fffffep-2", "0x1.5554b0p-3", "0x1.555674p-5", "0x1.1227f6p-7", "0x1.6bebf4p-10")],
    64: [_h(c) for c in (
        "0x1.0000000000005p-1", "0x1.5555555555539p-3", "0x1.555555555225ap-5", "0x1.1111111119099p-7",
        "0x1.6c16c17ef5a43p-10", "0x1.a01a0174d779fp-13", "0x1.a019a71c184a3p-16", "0x1.71de8852d028cp-19",
        "0x1.28a2370fdf0edp-22", "0x1.ae6ba43279a79p-26")],
}
# log((1+s)/(1-s)) = 2s + s z T(z), z = s^2 <= (0.1716 * 1.01)^2; fitted relative to the log
_LOG_T = {
    32: [_h(c) for c in ("0x1.55557cp-1", "0x1.995c48p-2", "0x1.3229e0p-2")],
    64: [_h(c) for c in (
        "0x1.555555555559cp-1", "0x1.999999997c86cp-2", "0x1.2492494516134p-2", "0x1.c71c4f559486bp-3",
        "0x1.7466d3fa09930p-3", "0x1.3992093ab7d68p-3", "0x1.2fa9cc42fcee1p-3")],
}
# erf(x) = x P(x^2) for |x| < ERF_SPLIT (relative error); beyond, erf(a) = 1 - exp(-a^2) G(a - mid)
# for a up to ERF_ONE where erf rounds to 1 (absolute error)
_ERF_SPLIT, _ERF_MID, _ERF_ONE = {32: 1.25, 64: 1.5}, {32: 2.625, 64: 3.75}, {32: 4.0, 64: 6.0}
_ERF_P = {
    32: [_h(c) for c in ("0x1.20dd74p+0", "-0x1.812740p-2", "0x1.ce2de8p-4", "-0x1.b8140cp-6", "0x1.5560cap-8",
                         "-0x1.b53bd2p-11", "0x1.b3f372p-14", "-0x1.fc36aep-18")],
    64: [_h(c) for c in (
        "0x1.20dd750429b6dp+0", "-0x1.812746b0379d6p-2", "0x1.ce2f21a042390p-4", "-0x1.b82ce3126e0d6p-6",
        "0x1.565bcd0b9b6acp-8", "-0x1.c02db3a4a9784p-11", "0x1.f9a31f547dce8p-14", "-0x1.f4d1ebc529841p-17",
        "0x1.b9e233898eebbp-20", "-0x1.5f519a98127d9p-23", "0x1.fb4ac4c379348p-27", "-0x1.4bfbb02ad01cbp-30",
        "0x1.7d6c2af7ca512p-34", "-0x1.58327d8d91330p-38", "0x1.6323517203576p-43")],
}
_ERF_G = {
    32: [_h(c) for c in ("0x1.9d708ep-3", "-0x1.18d88cp-4", "0x1.69c654p-6", "-0x1.986b4ep-8", "0x1.ec1080p-9",
                         "0x1.18016ap-10", "0x1.aecf0cp-11")],
    64: [_h(c) for c in (
        "0x1.2a2af19c064d6p-3", "-0x1.2aa6502ff2673p-5", "0x1.22f067d2ab7c5p-7", "-0x1.1434a191c9ebdp-9",
        "0x1.ffef61fff3d6ep-12", "-0x1.cfe1202a84b58p-14", "0x1.9ad83f772edf5p-16", "-0x1.65c73250fae56p-18",
        "0x1.3cf7ac3763223p-20", "-0x1.66ed26d37ce2dp-23", "0x1.89c06eb940a0ep-24", "-0x1.d4e1012f5b9f3p-27",
        "-0x1.a5bde7d4a9674p-26", "-0x1.7f2d8269f41dfp-26", "-0x1.516f665f54a17p-27", "-0x1.77068530f1c89p-29",
        "-0x1.d848567869484p-32", "-0x1.1bef0d9158e3cp-35")],
}
# ln 2 = HI + LO, HI with few enough bits that k * HI is exact for every exponent k
_LN2 = {32: (_h("0x1.62e4p-1"), _h("0x1.7f7d1cp-20")), 64: (_h("0x1.62e42fefa38p-1"), _h("0x1.ef35793c7673p-45"))}
_LOG2E = _h("0x1.71547652b82fep+0")
_SQRT_HALF_BITS = {32: 0x3F3504F3, 64: 0x3FE6A09E667F3BCD}
# exp's argument is clamped to where the result is already inf / rounds to 0
_EXP_RANGE = {32: (-104.0, 89.0), 64: (-746.0, 710.0)}
# tanh(x) rounds to 1 beyond this
_TANH_ONE = {32: 10.0, 64: 20.0}

FUNCTIONS = ("exp", "log", "log1p", "tanh", "sigmoid", "erf")


def call(fb: FunctionBuilder, name: str, x: str, d) -> str:
    """Emit `name(x)` for float dtype `d`, defining its helper in the module on first use."""
    t = "float" if d is dtypes.float32 else "double"
    fb.decls.update(_definition(name, d))
    return fb.op(f"call {t} @gradc.{name}.{_bits(d)}({t} {x})")


def _bits(d) -> str:
    return "f32" if d is dtypes.float32 else "f64"


@functools.lru_cache(maxsize=None)
def _definition(name: str, d) -> frozenset:
    """The helper's text and the intrinsic declarations it needs: module-level lines."""
    t = "float" if d is dtypes.float32 else "double"
    decls: set = set()
    fb = FunctionBuilder(f"define internal {t} @gradc.{name}.{_bits(d)}({t} %x) alwaysinline nounwind "
                         "willreturn memory(none)", decls)
    fb.emit(f"ret {t} {getattr(_Math(fb, d), name)('%x')}")
    return frozenset(decls | {fb.text()})


class _Math:
    """Float arithmetic on one dtype, emitted into `fb`; each method returns an SSA name."""

    def __init__(self, fb: FunctionBuilder, d):
        self.fb, self.d = fb, d
        self.w = 32 if d is dtypes.float32 else 64
        self.t = "float" if self.w == 32 else "double"
        self.it = f"i{self.w}"
        self.mant = 23 if self.w == 32 else 52
        self.bias = 127 if self.w == 32 else 1023

    # ------------------------------------------------------------ primitives
    def c(self, v) -> str:
        return const(v, self.d)

    def op(self, code: str, a, b) -> str:
        return self.fb.op(f"{code} {self.t} {a}, {b}")

    def add(self, a, b):
        return self.op("fadd", a, b)

    def sub(self, a, b):
        return self.op("fsub", a, b)

    def mul(self, a, b):
        return self.op("fmul", a, b)

    def div(self, a, b):
        return self.op("fdiv", a, b)

    def fma(self, a, b, c) -> str:
        """a*b + c, fused where the target has FMA."""
        return self._intrinsic("fmuladd", a, b, c)

    def _intrinsic(self, name, *args) -> str:
        sfx = "f32" if self.w == 32 else "f64"
        return self.fb.call(self.t, f"llvm.{name}.{sfx}", [(self.t, a) for a in args])

    def cmp(self, pred, a, b) -> str:
        return self.fb.op(f"fcmp {pred} {self.t} {a}, {b}")

    def select(self, cond, a, b) -> str:
        return self.fb.op(f"select i1 {cond}, {self.t} {a}, {self.t} {b}")

    def isnan(self, x) -> str:
        return self.cmp("uno", x, x)

    def min_(self, x, hi) -> str:
        """min(x, hi); NaN stays NaN."""
        return self.select(self.cmp("ogt", x, hi), hi, x)

    def poly(self, x, coeffs) -> str:
        """c0 + c1 x + c2 x^2 + ... by Horner's rule."""
        acc = self.c(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, self.c(c))
        return acc

    def pow2(self, k: str) -> str:
        """2^k as a float for an i32 k in the normal exponent range."""
        fb = self.fb
        if self.w == 64:
            k = fb.op(f"sext i32 {k} to i64")
        e = fb.op(f"add {self.it} {k}, {self.bias}")
        return fb.op(f"bitcast {self.it} {fb.op(f'shl {self.it} {e}, {self.mant}')} to {self.t}")

    # ------------------------------------------------------------ exp family
    def _reduce(self, x):
        """x = k ln2 + r with |r| <= ln2/2: returns (k as i32, expm1(r))."""
        fb = self.fb
        hi, lo = _LN2[self.w]
        kf = self._intrinsic("rint", self.mul(x, self.c(_LOG2E)))
        r = self.sub(self.sub(x, self.mul(kf, self.c(hi))), self.mul(kf, self.c(lo)))
        p = self.fma(self.mul(r, r), self.poly(r, _EXPM1_Q[self.w]), r)
        return fb.op(f"fptosi {self.t} {kf} to i32"), p

    def exp(self, x):
        lo, hi = _EXP_RANGE[self.w]
        xc = self.min_(x, self.c(hi))
        xc = self.select(self.cmp("olt", xc, self.c(lo)), self.c(lo), xc)
        xc = self.select(self.isnan(x), self.c(0), xc)
        k, p = self._reduce(xc)
        # 2^k in two factors, so a result in the denormal range is rounded once and k = 128 (1024) overflows
        k1 = self.fb.op(f"ashr i32 {k}, 1")
        k2 = self.fb.op(f"sub i32 {k}, {k1}")
        y = self.mul(self.mul(self.add(self.c(1), p), self.pow2(k1)), self.pow2(k2))
        return self.select(self.isnan(x), x, y)

    def tanh(self, x):
        """tanh|x| = e / (e + 2) with e = expm1(2|x|): no cancellation anywhere."""
        a = self.min_(self._intrinsic("fabs", x), self.c(_TANH_ONE[self.w]))
        a = self.select(self.isnan(x), self.c(0), a)
        k, p = self._reduce(self.add(a, a))
        s = self.pow2(k)
        e = self.fma(s, p, self.sub(s, self.c(1)))
        y = self._intrinsic("copysign", self.div(e, self.add(e, self.c(2))), x)
        return self.select(self.isnan(x), x, y)

    def sigmoid(self, x):
        """As the NumPy impl: e = exp(-|x|), then 1/(1+e) for x >= 0 and e/(1+e) below."""
        e = self.exp(self.fb.op(f"fneg {self.t} {self._intrinsic('fabs', x)}"))
        num = self.select(self.cmp("oge", x, self.c(0)), self.c(1), e)
        return self.div(num, self.add(self.c(1), e))

    # ------------------------------------------------------------ log family
    def _split(self, u):
        """u = 2^k m with m in [sqrt(1/2), sqrt(2)) for a positive normal u: returns (k as i32, m)."""
        fb, it = self.fb, self.it
        sh = _SQRT_HALF_BITS[self.w]
        ix = fb.op(f"sub {it} {fb.op(f'bitcast {self.t} {u} to {it}')}, {sh}")
        k = fb.op(f"ashr {it} {ix}, {self.mant}")
        if self.w == 64:
            k = fb.op(f"trunc i64 {k} to i32")
        mbits = fb.op(f"add {it} {fb.op(f'and {it} {ix}, {(1 << self.mant) - 1}')}, {sh}")
        return k, fb.op(f"bitcast {it} {mbits} to {self.t}")

    def _log_core(self, f, kf):
        """k ln2 + log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1], with s = f / (2 + f)."""
        hi, lo = _LN2[self.w]
        s = self.div(f, self.add(self.c(2), f))
        z = self.mul(s, s)
        r = self.mul(z, self.poly(z, _LOG_T[self.w]))
        hfsq = self.mul(self.mul(self.c(0.5), f), f)
        # log(1+f) = f - hfsq + s (hfsq + R): the small terms are summed first
        small = self.fma(s, self.add(hfsq, r), self.mul(kf, self.c(lo)))
        return self.sub(self.mul(kf, self.c(hi)), self.sub(self.sub(hfsq, small), f))

    def log(self, x):
        tiny = self.cmp("olt", x, self.c(2.0 ** (1 - self.bias)))  # denormals: scale into the normal range
        scale = 32 if self.w == 32 else 64
        u = self.select(tiny, self.mul(x, self.c(2.0 ** scale)), x)
        k, m = self._split(u)
        kf = self.sub(self.fb.op(f"sitofp i32 {k} to {self.t}"), self.select(tiny, self.c(scale), self.c(0)))
        y = self._log_core(self.sub(m, self.c(1)), kf)
        y = self.select(self.cmp("oeq", x, self.c(float("inf"))), x, y)
        y = self.select(self.cmp("oeq", x, self.c(0)), self.c(-float("inf")), y)
        return self.select(self.cmp("ult", x, self.c(0)), self.c(float("nan")), y)

    def log1p(self, x):
        """log(u) for u = 1 + x, with the rounding error of that sum added back into m."""
        fb = self.fb
        u = self.add(self.c(1), x)
        # the exact error of 1 + x (Fast2Sum, larger operand first)
        err = self.select(self.cmp("ogt", x, self.c(1)), self.sub(self.c(1), self.sub(u, x)),
                          self.sub(x, self.sub(u, self.c(1))))
        k, m = self._split(u)
        cap = 100 if self.w == 32 else 1000  # beyond, err * 2^-k is far below an ulp of m
        kc = fb.op(f"select i1 {fb.op(f'icmp sgt i32 {k}, {cap}')}, i32 {cap}, i32 {k}")
        f = self.fma(err, self.pow2(fb.op(f"sub i32 0, {kc}")), self.sub(m, self.c(1)))
        y = self._log_core(f, fb.op(f"sitofp i32 {k} to {self.t}"))
        y = self.select(self.cmp("oeq", x, self.c(float("inf"))), x, y)
        y = self.select(self.cmp("oeq", x, self.c(-1)), self.c(-float("inf")), y)
        y = self.select(self.cmp("oeq", x, self.c(0)), x, y)  # keeps -0
        return self.select(self.cmp("ult", x, self.c(-1)), self.c(float("nan")), y)

    # ------------------------------------------------------------ erf
    def erf(self, x):
        near = self.mul(x, self.poly(self.mul(x, x), _ERF_P[self.w]))
        a = self.min_(self._intrinsic("fabs", x), self.c(_ERF_ONE[self.w]))
        g = self.poly(self.sub(a, self.c(_ERF_MID[self.w])), _ERF_G[self.w])
        e = self.exp(self.fb.op(f"fneg {self.t} {self.mul(a, a)}"))
        far = self._intrinsic("copysign", self.sub(self.c(1), self.mul(e, g)), x)
        return self.select(self.cmp("olt", self._intrinsic("fabs", x), self.c(_ERF_SPLIT[self.w])), near, far)
