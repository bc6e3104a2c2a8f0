"""Tensor creation: `tensor`, `zeros`, `ones`, `full`, `arange`, `linspace`, `eye`,
random tensors, `*_like`, `from_numpy`."""
from __future__ import annotations

import builtins

import numpy as np

from . import dtypes as _dt
from . import random as _random
from .tensor import Tensor


def _infer_dtype(arr: np.ndarray) -> _dt.DType:
    k = arr.dtype.kind
    if k == "b":
        return _dt.bool_
    if k in "iu":
        return _dt.int64
    if k == "f":
        return _dt.get_default_dtype()
    raise TypeError(
        f"gradc cannot make a tensor from data of NumPy dtype {arr.dtype} (complex, object and string data "
        "are not supported)"
    )


def _as_array(data, dtype=None) -> np.ndarray:
    """Data (nested lists, scalars, arrays, tensors) -> a fresh array of a gradc dtype."""
    if isinstance(data, Tensor):
        data = data._concrete("gradc.tensor(t)")
    if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in _flat(data)):
        data = _nested_tensors(data)
    src_is_numpy = isinstance(data, (np.ndarray, np.generic))
    arr = np.array(data)
    if dtype is None:
        supported = arr.dtype in (np.float32, np.float64, np.int64, np.int32, np.bool_)
        dtype = _dt.as_dtype(arr.dtype) if src_is_numpy and supported else _infer_dtype(arr)
    else:
        dtype = _dt.as_dtype(dtype)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"gradc cannot make a tensor from data of NumPy dtype {arr.dtype}")
    return np.asarray(arr, dtype=dtype.np, order="C")  # ascontiguousarray would make 0-d data 1-d


def _flat(xs):
    for x in xs:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        else:
            yield x


def _nested_tensors(xs):
    return [_nested_tensors(x) if isinstance(x, (list, tuple)) else (x.item() if isinstance(x, Tensor) and x.numel() == 1 and x.ndim == 0 else np.asarray(x)) for x in xs]


def tensor(data, dtype=None, device=None, requires_grad=False):
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


as_tensor = tensor


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing memory with `arr` (as torch.from_numpy)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(arr).__name__})")
    _dt.as_dtype(arr.dtype)
    return Tensor._wrap(arr)


def _size(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(builtins.int(s) for s in size)


def _make(arr, requires_grad):
    t = Tensor._wrap(arr)
    return t.requires_grad_(True) if requires_grad else t


def _dtype(dtype, default=None):
    return _dt.as_dtype(dtype) if dtype is not None else (default or _dt.get_default_dtype())


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _make(np.zeros(_size(size), _dtype(dtype).np), requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _make(np.ones(_size(size), _dtype(dtype).np), requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = _dt.scalar_dtype(fill_value)
    return _make(np.full(_size((size,)), fill_value, _dtype(dtype).np), requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    vals = [start, end, step]
    if dtype is None:
        dtype = _dt.get_default_dtype() if any(isinstance(v, float) for v in vals) else _dt.int64
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(
            f"upper bound and lower bound inconsistent with step sign: arange({start}, {end}, {step}) "
            "is empty; use a negative step to count down"
        )
    n = builtins.max(0, int(np.ceil((end - start) / step)))
    arr = (start + np.arange(n, dtype=np.float64) * step) if _dt.as_dtype(dtype).is_floating_point else np.arange(start, end, step)
    return _make(arr.astype(_dtype(dtype).np), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    return _make(np.linspace(start, end, int(steps)).astype(_dtype(dtype).np), requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _make(np.eye(n, m, dtype=_dtype(dtype).np), requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None):
    return _make(_random.uniform(_size(size), 0.0, 1.0, _dtype(dtype)), requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None):
    return _make(_random.normal(_size(size), 0.0, 1.0, _dtype(dtype)), requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, requires_grad=False):
    if size is None:
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    arr = _random.generator().integers(low, high, size=_size((size,)))
    return _make(arr.astype(_dtype(dtype, _dt.int64).np), requires_grad)


def randperm(n, dtype=None, device=None):
    return Tensor._wrap(_random.generator().permutation(n).astype(_dtype(dtype, _dt.int64).np))


def normal(mean, std, size, dtype=None):
    return Tensor._wrap(_random.normal(_size((size,)), mean, std, _dtype(dtype)))


def _like(fn):
    def like(x, dtype=None, device=None, requires_grad=False, **kw):
        return fn(*x.shape, dtype=dtype or x.dtype, requires_grad=requires_grad, **kw)

    like.__name__ = fn.__name__ + "_like"
    return like


zeros_like, ones_like, empty_like, rand_like, randn_like = map(_like, (zeros, ones, empty, rand, randn))


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False):
    return full(tuple(x.shape), fill_value, dtype=dtype or x.dtype, requires_grad=requires_grad)


def randint_like(x, low, high=None, dtype=None):
    return randint(low, high, tuple(x.shape), dtype=dtype or x.dtype)
