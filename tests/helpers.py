"""Shared helpers for the differential tests: run one computation in gradc and
in PyTorch on the same data, and compare outputs, dtypes and gradients."""
import numpy as np

import gradc

# forward and gradient tolerances per dtype: (rtol, atol)
TOL = {np.dtype(np.float64): (1e-10, 1e-12), np.dtype(np.float32): (1e-5, 1e-6)}


def as_numpy(x):
    """A gradc or torch tensor (or a Python value) as a NumPy array."""
    if isinstance(x, gradc.Tensor):
        return np.asarray(x.detach()._data)
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        return x.detach().numpy()
    return np.asarray(x)


def assert_same(g, t, rtol=None, atol=None, what="output"):
    """gradc value `g` equals torch value `t`: same dtype name, shape and values."""
    if isinstance(t, (tuple, list)):
        assert isinstance(g, (tuple, list)), f"{what}: gradc gave {type(g).__name__}, torch a sequence"
        assert len(g) == len(t), f"{what}: {len(g)} results vs torch's {len(t)}"
        for i, (a, b) in enumerate(zip(g, t)):
            assert_same(a, b, rtol, atol, what=f"{what}[{i}]")
        return
    if hasattr(t, "dtype") and hasattr(t, "shape") and not isinstance(t, np.ndarray):
        assert isinstance(g, gradc.Tensor), f"{what}: gradc gave {type(g).__name__}, torch a tensor"
        assert str(g.dtype).split(".")[-1] == str(t.dtype).split(".")[-1], f"{what}: dtype {g.dtype} vs {t.dtype}"
        assert tuple(g.shape) == tuple(t.shape), f"{what}: shape {tuple(g.shape)} vs {tuple(t.shape)}"
    a, b = as_numpy(g), as_numpy(t)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    if b.dtype.kind == "f":
        r, at = TOL.get(b.dtype, TOL[np.dtype(np.float32)])
        np.testing.assert_allclose(a, b, rtol=rtol or r, atol=atol or at, err_msg=what)
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def pair(torch, arr, requires_grad=None):
    """The same data as a gradc tensor and a torch tensor (floats require grad by default)."""
    arr = np.asarray(arr)
    if requires_grad is None:
        requires_grad = arr.dtype.kind == "f"
    g = gradc.tensor(arr.copy(), requires_grad=requires_grad)
    t = torch.tensor(arr.copy(), requires_grad=requires_grad)
    return g, t


def _float_leaves(outs):
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    return [o for o in outs if hasattr(o, "dtype") and o.dtype.is_floating_point and o.requires_grad]


def compare(torch, fn_g, fn_t, *arrays, rtol=None, atol=None, grad=True, seed=0, requires_grad=None):
    """Run fn_g on gradc tensors and fn_t on torch tensors made from `arrays`;
    compare outputs, then gradients of a random weighted sum of the float outputs."""
    if rtol is None and any(np.asarray(a).dtype == np.float32 for a in arrays):
        rtol, atol = TOL[np.dtype(np.float32)]  # float64 results computed from float32 values
    pairs = [pair(torch, a, requires_grad) for a in arrays]
    gs, ts = [p[0] for p in pairs], [p[1] for p in pairs]
    out_t = fn_t(*ts)
    out_g = fn_g(*gs)
    assert_same(out_g, out_t, rtol, atol)
    if not grad:
        return out_g, out_t
    lt, lg = _float_leaves(out_t), _float_leaves(out_g)
    assert len(lt) == len(lg), f"{len(lg)} differentiable outputs in gradc vs {len(lt)} in torch"
    if not lt:
        return out_g, out_t
    rng = np.random.default_rng(seed)
    loss_t, loss_g = 0, 0
    for ot, og in zip(lt, lg):
        w = rng.uniform(0.5, 1.5, size=tuple(ot.shape)) * rng.choice([-1, 1], size=tuple(ot.shape))
        w = np.asarray(w, dtype=as_numpy(ot).dtype)
        loss_t = loss_t + (ot * torch.tensor(w)).sum()
        loss_g = loss_g + (og * gradc.tensor(w)).sum()
    loss_t.backward()
    loss_g.backward()
    for i, (g, t) in enumerate(zip(gs, ts)):
        if not t.requires_grad:
            continue
        if t.grad is None:
            assert g.grad is None or not as_numpy(g.grad).any(), f"grad of input {i}: torch has none"
            continue
        assert g.grad is not None, f"grad of input {i}: gradc has none, torch {t.grad}"
        assert_same(g.grad, t.grad, rtol, atol, what=f"grad of input {i}")
    return out_g, out_t


def rand_array(rng, shape, dtype="float64", kind="normal", ties=False):
    """Random test data of a dtype; `kind` picks a domain, `ties` draws from few values."""
    shape = tuple(shape)
    if dtype == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    if dtype in ("int64", "int32"):
        a = rng.integers(1 if kind in ("positive", "nonzero") else -5, 6, size=shape)
        if kind == "nonzero":
            a = a * rng.choice([-1, 1], size=shape)
        return np.asarray(a, dtype=dtype)
    if ties:
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
        if kind == "positive":
            a = np.abs(a) + 1
    elif kind == "positive":
        a = rng.uniform(0.5, 2.0, size=shape)
    elif kind == "unit":
        a = rng.uniform(-0.9, 0.9, size=shape)
    elif kind == "nonzero":
        a = rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape)
    else:
        a = rng.standard_normal(shape)
    return np.asarray(a, dtype=dtype)
