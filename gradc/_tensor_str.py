"""Printing tensors exactly as PyTorch does (with `gradc.` where it says `torch.`).

Users compare printed tensors with PyTorch's output and paste them into bug
reports, so the layout rules are PyTorch's, character for character: one
element format chosen per tensor (integer-valued floats print as `2.`,
fixed point with `precision` digits, or scientific notation when magnitudes
span more than three decades or leave [1e-4, 1e8]); every element padded to
the widest; rows wrapped to `linewidth`; tensors with more than `threshold`
elements shown by their first and last `edgeitems` entries along each
dimension; then suffixes for a non-default dtype, an empty tensor's size and
the autograd state.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np

from . import dtypes as _dt

_PREFIX = "tensor("


@dataclasses.dataclass
class _PrintOptions:
    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: bool | None = None  # None: chosen per tensor from its values


_OPTS = _PrintOptions()
_PROFILES = {
    "default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
    "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
    "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80),
}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """Set how tensors print (torch.set_printoptions); `sci_mode` is reset on every call, as in PyTorch."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"Unknown print profile {profile!r}; use one of {', '.join(map(repr, _PROFILES))}")
        for k, v in _PROFILES[profile].items():
            setattr(_OPTS, k, v)
    for k, v in dict(precision=precision, threshold=threshold, edgeitems=edgeitems, linewidth=linewidth).items():
        if v is not None:
            setattr(_OPTS, k, v)
    _OPTS.sci_mode = sci_mode


def get_printoptions() -> dict:
    """The current options, as keyword arguments for `set_printoptions`."""
    return dataclasses.asdict(_OPTS)


@contextlib.contextmanager
def printoptions(**kwargs):
    """Temporarily change the print options (`with printoptions(precision=2): ...`)."""
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


class _ElementFormat:
    """One format for every element of a tensor, chosen from a sample of its values."""

    def __init__(self, sample: np.ndarray):
        self.floating = sample.dtype.kind == "f"
        self.int_mode = True  # floats that are all integers print as `2.`
        self.sci_mode = False
        self.width = 1
        if not self.floating:
            self.width = max([1, *(len(str(v)) for v in sample.ravel().tolist())])
            return
        finite = sample[np.isfinite(sample) & (sample != 0)]
        if finite.size == 0:
            return
        mags = np.abs(finite).astype(np.float64)
        lo, hi = float(mags.min()), float(mags.max())  # Python floats: a ratio past 1e308 is inf, silently
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        if _OPTS.sci_mode is None:
            self.sci_mode = hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4
        else:
            self.sci_mode = bool(_OPTS.sci_mode)
        p = _OPTS.precision
        if self.sci_mode:
            widths = (len(f"{v:.{p}e}") for v in finite.tolist())
        elif self.int_mode:
            widths = (len(f"{v:.0f}") + 1 for v in finite.tolist())  # + 1 for the trailing "."
        else:
            widths = (len(f"{v:.{p}f}") for v in finite.tolist())
        self.width = max(self.width, *widths)

    def __call__(self, v) -> str:
        if not self.floating:
            s = str(v)
        elif self.sci_mode:
            s = f"{v:{self.width}.{_OPTS.precision}e}"
        elif self.int_mode:
            s = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            s = f"{v:.{_OPTS.precision}f}"
        return s.rjust(self.width)


def _summarized(a: np.ndarray) -> np.ndarray:
    """The entries a summarized print shows: the first and last `edgeitems` along each long axis."""
    e = _OPTS.edgeitems
    for axis, n in enumerate(a.shape):
        if n > 2 * e:
            a = np.take(a, np.r_[0:e, n - e : n], axis=axis)
    return a


def _body(a: np.ndarray, indent: int, summarize: bool, fmt: _ElementFormat) -> str:
    """The bracketed text of `a`, whose first line starts at column `indent`."""
    if a.ndim == 0:
        return fmt(a.item())
    e = _OPTS.edgeitems
    long_axis = summarize and a.shape[0] > 2 * e
    if a.ndim == 1:
        if summarize and not e:
            items = ["..."]
        elif long_axis:
            items = [*map(fmt, a[:e].tolist()), " ...", *map(fmt, a[-e:].tolist())]
        else:
            items = [fmt(v) for v in a.tolist()]
        per_line = max(1, math.floor((_OPTS.linewidth - indent) / (fmt.width + 2)))
        lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = range(a.shape[0])
    if long_axis:
        rows = [*range(e), None, *range(a.shape[0] - e, a.shape[0])]
    parts = ["..." if i is None else _body(a[i], indent + 1, summarize, fmt) for i in rows]
    # sub-blocks are separated by as many blank lines as they have dimensions beyond one
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def _join_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    """Append `, suffix` items, moving one to a new line when it would pass `linewidth`."""
    out = [text]
    line_len = len(text) - text.rfind("\n") + 1
    for s in suffixes:
        if line_len + len(s) + 2 > _OPTS.linewidth:
            out.append(",\n" + " " * indent + s)
            line_len = indent + len(s)
        else:
            out.append(", " + s)
            line_len += len(s) + 2
    return "".join(out) + ")"


def format_tensor(t) -> str:
    """`repr(t)`: the values, then dtype / size / autograd suffixes, as PyTorch prints them."""
    indent = len(_PREFIX)
    data = t._data
    dtype = t.dtype
    default = _dt.get_default_dtype()
    suffixes = []
    if not isinstance(data, np.ndarray):  # symbolic while tracing: no values to show
        body = f"<symbolic {dtype.short}[{', '.join(map(str, t.shape))}]>"
    elif data.size == 0:
        if data.ndim != 1:
            suffixes.append(f"size={tuple(data.shape)}")
        if dtype is not default:  # nothing to infer an integer dtype from, so always named
            suffixes.append(f"dtype={dtype!r}")
        body = "[]"
    else:
        if not _OPTS.edgeitems:
            suffixes.append(f"size={tuple(data.shape)}")
        if dtype not in (default, _dt.int64, _dt.bool_):
            suffixes.append(f"dtype={dtype!r}")
        summarize = data.size > _OPTS.threshold
        fmt = _ElementFormat(_summarized(data) if summarize else data)
        body = _body(data, indent, summarize, fmt)
    if t.grad_fn is not None:
        suffixes.append(f"grad_fn=<{t.grad_fn.name}>")
    elif t.requires_grad:
        suffixes.append("requires_grad=True")
    return _join_suffixes(_PREFIX + body, suffixes, indent)
