"""`gradc.save` / `gradc.load`: state dicts as `.npz` files, never pickled code.

A state dict maps names to tensors; optimizer state dicts nest dicts and
lists of numbers. Nested keys are flattened with a `/` path and a small JSON
header records the structure, so loading needs no unpickling (allow_pickle is
off).
"""
from __future__ import annotations

import json

import numpy as np

from .tensor import Tensor

_META = "__gradc_structure__"


def _flatten(obj, path, arrays):
    if isinstance(obj, Tensor):
        key = f"a{len(arrays)}"
        arrays[key] = obj.detach().numpy()
        return {"tensor": key}
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"ndarray": key}
    if isinstance(obj, dict):
        return {"dict": [[_flatten(k, path, arrays), _flatten(v, path, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list" if isinstance(obj, list) else "tuple": [_flatten(v, path, arrays) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"gradc.save can store tensors, arrays, numbers, strings, lists and dicts, not {type(obj).__name__}")


def _unflatten(node, arrays):
    (kind, v), = node.items()
    if kind == "tensor":
        return Tensor._wrap(np.array(arrays[v]))
    if kind == "ndarray":
        return np.array(arrays[v])
    if kind == "dict":
        return {_unflatten(k, arrays): _unflatten(x, arrays) for k, x in v}
    if kind == "list":
        return [_unflatten(x, arrays) for x in v]
    if kind == "tuple":
        return tuple(_unflatten(x, arrays) for x in v)
    return v


def save(obj, f):
    """Save tensors (and nested dicts/lists of them) to an `.npz` file."""
    arrays = {}
    structure = _flatten(obj, "", arrays)
    arrays[_META] = np.frombuffer(json.dumps(structure).encode(), dtype=np.uint8)
    if isinstance(f, str) and not f.endswith(".npz"):
        with open(f, "wb") as fh:
            np.savez(fh, **arrays)
    else:
        np.savez(f, **arrays)


def load(f, map_location=None, weights_only=True):
    """Load what `save` wrote. Never unpickles."""
    with np.load(f, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    structure = json.loads(arrays.pop(_META).tobytes().decode())
    return _unflatten(structure, arrays)
