"""Losses (functional and modules) against torch.nn: values and gradients, in
float64 (1e-10 relative) and float32 (1e-5), over shapes, reductions, class
weights, ignore_index, label smoothing and target layouts; and their errors."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradc
import gradc.nn as nn
import gradc.nn.functional as F
from helpers import assert_same

torch = pytest.importorskip("torch")
TF = torch.nn.functional

FLOATS = ("float64", "float32")
REDUCTIONS = ("mean", "sum", "none")


def both(arr, requires_grad=False):
    """The same data as a gradc tensor and a torch tensor."""
    arr = np.asarray(arr)
    g = gradc.tensor(arr.copy(), requires_grad=requires_grad)
    t = torch.tensor(arr.copy(), requires_grad=requires_grad)
    return g, t


def check(g_fn, t_fn, x, target, dtype, extra=(), grad_target=False, seed=1):
    """Compare g_fn(x, target, *extra) with t_fn(...): values, then gradients of x (and target)
    through a random weighted sum of the loss."""
    xg, xt = both(x.astype(dtype), requires_grad=True)
    tg, tt = both(target.astype(dtype) if target.dtype.kind == "f" else target, requires_grad=grad_target)
    eg = [gradc.tensor(e.astype(dtype)) if e is not None else None for e in extra]
    et = [torch.tensor(e.astype(dtype)) if e is not None else None for e in extra]
    out_t = t_fn(xt, tt, *et)
    out_g = g_fn(xg, tg, *eg)
    assert_same(out_g, out_t)
    w = np.random.default_rng(seed).uniform(0.5, 1.5, size=tuple(out_t.shape)).astype(dtype)
    (out_t * torch.tensor(w)).sum().backward()
    (out_g * gradc.tensor(w)).sum().backward()
    assert_same(xg.grad, xt.grad, what="grad of input")
    if grad_target:
        assert_same(tg.grad, tt.grad, what="grad of target")
    return out_g


rng = np.random.default_rng(0)


# ---------------------------------------------------------------- regression losses
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), ()])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_regression_losses(name, shape, reduction, dtype):
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    check(lambda a, b: getattr(F, name)(a, b, reduction=reduction),
          lambda a, b: getattr(TF, name)(a, b, reduction=reduction), x, y, dtype, grad_target=True)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_regression_loss_element_weight(name):
    x, y, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.uniform(0.1, 2, (3, 4))
    check(lambda a, b, c: getattr(F, name)(a, b, weight=c), lambda a, b, c: getattr(TF, name)(a, b, weight=c),
          x, y, "float64", extra=(w,))


def test_mse_loss_broadcast_warns_like_torch():
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    with pytest.warns(UserWarning, match=r"target size \(gradc.Size\(\[4\]\)\) that is different to the input size"):
        g = F.mse_loss(gradc.tensor(x), gradc.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = TF.mse_loss(torch.tensor(x), torch.tensor(y))
    assert_same(g, t)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_modules_match_torch(reduction, dtype):
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    for g_cls, t_cls in [(nn.MSELoss, torch.nn.MSELoss), (nn.L1Loss, torch.nn.L1Loss)]:
        check(g_cls(reduction=reduction), t_cls(reduction=reduction), x, y, dtype)


def test_legacy_size_average_and_reduce():
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    for kw in [dict(size_average=False), dict(reduce=False), dict(size_average=True, reduce=True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check(lambda a, b: F.mse_loss(a, b, **kw), lambda a, b: TF.mse_loss(a, b, **kw), x, y, "float64")
            assert nn.MSELoss(**kw).reduction == torch.nn.MSELoss(**kw).reduction


def test_invalid_reduction():
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        F.mse_loss(gradc.zeros(2), gradc.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        nn.CrossEntropyLoss(reduction="avg")


# ---------------------------------------------------------------- cross entropy / nll
def _ce(kw):
    return (lambda a, b, w=None: F.cross_entropy(a, b, weight=w, **kw),
            lambda a, b, w=None: TF.cross_entropy(a, b, weight=w, **kw))


def _targets(shape, n_classes, ignore_index=None, rng=rng):
    t = rng.integers(0, n_classes, size=shape)
    if ignore_index is not None and t.size:
        t.flat[:: 3] = ignore_index
    return t.astype(np.int64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.7])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2])
def test_cross_entropy_class_indices(dtype, reduction, smoothing, weighted, ignore_index):
    n, c = 6, 5
    x = rng.standard_normal((n, c)) * 3
    t = _targets((n,), c, ignore_index)
    w = rng.uniform(0.2, 2.0, c) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore_index is not None:
        kw["ignore_index"] = ignore_index
    g_fn, t_fn = _ce(kw)
    check(g_fn, t_fn, x, t, dtype, extra=(w,))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 4, 3, 2)])
def test_cross_entropy_spatial_layout(dtype, reduction, smoothing, shape):
    """(N, C, d1, ...) inputs with (N, d1, ...) targets, with weights and ignored positions."""
    x = rng.standard_normal(shape)
    c = shape[1]
    t = _targets((shape[0],) + shape[2:], c, ignore_index=-100)
    w = rng.uniform(0.2, 2.0, c)
    g_fn, t_fn = _ce(dict(reduction=reduction, label_smoothing=smoothing))
    check(g_fn, t_fn, x, t, dtype, extra=(w,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_unbatched(reduction, smoothing):
    x = rng.standard_normal(4)
    t = np.array(2, dtype=np.int64)
    for w in (None, rng.uniform(0.2, 2.0, 4)):
        g_fn, t_fn = _ce(dict(reduction=reduction, label_smoothing=smoothing))
        check(g_fn, t_fn, x, t, "float64", extra=(w,))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets(dtype, reduction, smoothing, weighted):
    x = rng.standard_normal((5, 4))
    p = rng.uniform(0, 1, (5, 4))
    p /= p.sum(1, keepdims=True)
    w = rng.uniform(0.2, 2.0, 4) if weighted else None
    g_fn, t_fn = _ce(dict(reduction=reduction, label_smoothing=smoothing))
    check(g_fn, t_fn, x, p, dtype, extra=(w,))


def test_cross_entropy_all_targets_ignored_gives_nan_and_zero_grad_like_torch():
    x = rng.standard_normal((3, 4))
    t = np.full(3, -100, np.int64)
    for smoothing in (0.0, 0.2):
        out = check(*_ce(dict(label_smoothing=smoothing)), x, t, "float64")
        assert np.isnan(out.item())


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 5), c=st.integers(1, 6), extra=st.lists(st.integers(1, 3), max_size=2),
    reduction=st.sampled_from(REDUCTIONS), smoothing=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    weighted=st.booleans(), ignore=st.booleans(), seed=st.integers(0, 2**16),
)
def test_cross_entropy_random_cases(n, c, extra, reduction, smoothing, weighted, ignore, seed):
    r = np.random.default_rng(seed)
    shape = (n, c) + tuple(extra)
    x = r.standard_normal(shape) * 2
    t = r.integers(0, c, size=(n,) + tuple(extra)).astype(np.int64)
    if ignore:
        t.flat[0] = -100
    w = r.uniform(0.2, 2.0, c) if weighted else None
    g_fn, t_fn = _ce(dict(reduction=reduction, label_smoothing=smoothing))
    check(g_fn, t_fn, x, t, "float64", extra=(w,), seed=seed)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3), (5,)])
def test_nll_loss(reduction, shape):
    x = rng.standard_normal(shape)
    tshape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    c = shape[1] if len(shape) > 1 else shape[0]
    t = _targets(tshape, c, ignore_index=1 if tshape else None)
    for w in (None, rng.uniform(0.2, 2.0, c)):
        check(lambda a, b, ww=None: F.nll_loss(a, b, weight=ww, ignore_index=1, reduction=reduction),
              lambda a, b, ww=None: TF.nll_loss(a, b, weight=ww, ignore_index=1, reduction=reduction),
              x, t, "float64", extra=(w,))


def test_classification_modules_match_torch():
    x = rng.standard_normal((6, 4))
    t = _targets((6,), 4, ignore_index=3)
    w = rng.uniform(0.5, 1.5, 4)
    for dtype in FLOATS:
        g = nn.CrossEntropyLoss(weight=gradc.tensor(w.astype(dtype)), ignore_index=3, label_smoothing=0.1)
        tm = torch.nn.CrossEntropyLoss(weight=torch.tensor(w.astype(dtype)), ignore_index=3, label_smoothing=0.1)
        check(g, tm, x, t, dtype)
        g = nn.NLLLoss(weight=gradc.tensor(w.astype(dtype)), reduction="sum")
        tm = torch.nn.NLLLoss(weight=torch.tensor(w.astype(dtype)), reduction="sum")
        check(g, tm, x, t.clip(0, 3), dtype)
    assert list(nn.CrossEntropyLoss(weight=gradc.ones(3)).state_dict()) == ["weight"]
    assert list(nn.CrossEntropyLoss().state_dict()) == []


def test_cross_entropy_grad_fn_name():
    x = gradc.randn(3, 4, requires_grad=True)
    assert F.cross_entropy(x, gradc.tensor([0, 1, 2])).grad_fn.name == "NllLossBackward0"


def test_cross_entropy_out_of_range_target_names_value_and_classes():
    x = gradc.randn(3, 4)
    with pytest.raises(IndexError, match=r"Target 7 is out of bounds\..*4 classes"):
        F.cross_entropy(x, gradc.tensor([1, 2, 7]))
    with pytest.raises(IndexError, match=r"Target -1 is out of bounds\."):
        nn.CrossEntropyLoss()(x, gradc.tensor([1, -1, 0]))
    with pytest.raises(IndexError, match=r"Target 4 is out of bounds\."):
        F.nll_loss(x, gradc.tensor([4, 0, 0]))
    with pytest.raises(torch_error(lambda: TF.cross_entropy(torch.randn(3, 4), torch.tensor([1, 2, 7])))):
        F.cross_entropy(x, gradc.tensor([1, 2, 7]))


def torch_error(fn):
    """The exception class torch raises for fn()."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we want whatever torch raises
        return type(e)
    raise AssertionError("torch did not raise")


@pytest.mark.parametrize("x_shape,t,exc,msg", [
    ((3, 4), np.array([1, 2, 3, 1]), ValueError, r"Expected input batch_size \(3\) to match target batch_size \(4\)\."),
    ((3, 4), np.array([[1], [2], [3]]), RuntimeError, r"0D or 1D target tensor expected, multi-target not supported"),
    ((2, 3, 5), np.zeros((2, 4), np.int64), RuntimeError, r"Expected target size \[2, 5\], got \[2, 4\]"),
    ((3, 4), np.array([1.0, 2.0, 3.0]), RuntimeError, r"expected target dtype to be Long or Byte, but got Double.*long\(\)"),
    ((3, 4), np.array([1, 2, 3], np.int32), RuntimeError, r"expected target dtype to be Long or Byte, but got Int"),
])
def test_cross_entropy_target_errors_match_torch(x_shape, t, exc, msg):
    x = rng.standard_normal(x_shape)
    assert torch_error(lambda: TF.cross_entropy(torch.tensor(x), torch.tensor(t))) is exc
    with pytest.raises(exc, match=msg):
        F.cross_entropy(gradc.tensor(x), gradc.tensor(t))


def test_cross_entropy_probability_target_with_ignore_index_refused_like_torch():
    x, p = rng.standard_normal((3, 4)), np.full((3, 4), 0.25)
    assert torch_error(lambda: TF.cross_entropy(torch.tensor(x), torch.tensor(p), ignore_index=1)) is RuntimeError
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
        F.cross_entropy(gradc.tensor(x), gradc.tensor(p), ignore_index=1)


def test_cross_entropy_wrong_weight_size():
    with pytest.raises(RuntimeError, match="weight tensor should be defined either for all 4 classes"):
        F.cross_entropy(gradc.randn(3, 4), gradc.tensor([0, 1, 2]), weight=gradc.ones(3))


# ---------------------------------------------------------------- binary cross entropy
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_binary_cross_entropy(dtype, reduction, shape):
    x = rng.uniform(0.05, 0.95, shape)
    y = rng.uniform(0, 1, shape)
    for w in (None, rng.uniform(0.2, 2.0, shape)):
        check(lambda a, b, ww=None: F.binary_cross_entropy(a, b, weight=ww, reduction=reduction),
              lambda a, b, ww=None: TF.binary_cross_entropy(a, b, weight=ww, reduction=reduction),
              x, y, dtype, extra=(w,))


def test_binary_cross_entropy_clamps_log_at_minus_100():
    x, y = np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])
    g = F.binary_cross_entropy(gradc.tensor(x), gradc.tensor(y), reduction="none")
    assert_same(g, TF.binary_cross_entropy(torch.tensor(x), torch.tensor(y), reduction="none"))


def test_binary_cross_entropy_errors():
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1.*sigmoid"):
        F.binary_cross_entropy(gradc.tensor([0.5, 1.5]), gradc.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"Using a target size \(gradc.Size\(\[4\]\)\) that is different"):
        nn.BCELoss()(gradc.tensor([0.5, 0.5, 0.5]), gradc.ones(4))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_binary_cross_entropy_with_logits(dtype, reduction, shape):
    x = rng.standard_normal(shape) * 4
    x.flat[0] = 0.0  # the kink of max(-x, 0): the gradient there must still be sigmoid(0) - y
    x.flat[-1] = 60.0  # exp(-|x|) form stays finite for large logits
    y = rng.uniform(0, 1, shape)
    pw = rng.uniform(0.2, 3.0, shape[-1:])
    for w, p in [(None, None), (rng.uniform(0.2, 2.0, shape), None), (None, pw), (rng.uniform(0.2, 2.0, shape), pw)]:
        check(lambda a, b, ww=None, pp=None: F.binary_cross_entropy_with_logits(a, b, ww, reduction=reduction, pos_weight=pp),
              lambda a, b, ww=None, pp=None: TF.binary_cross_entropy_with_logits(a, b, ww, reduction=reduction, pos_weight=pp),
              x, y, dtype, extra=(w, p), grad_target=True)


def test_bce_modules_match_torch():
    x, y = rng.standard_normal((4, 3)), rng.uniform(0, 1, (4, 3))
    pw = rng.uniform(0.5, 2.0, 3)
    g = nn.BCEWithLogitsLoss(pos_weight=gradc.tensor(pw))
    check(g, torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw)), x, y, "float64")
    assert list(g.state_dict()) == ["pos_weight"]
    check(nn.BCELoss(reduction="sum"), torch.nn.BCELoss(reduction="sum"), 1 / (1 + np.exp(-x)), y, "float64")


def test_bce_with_logits_shape_error():
    with pytest.raises(ValueError, match=r"Target size \(gradc.Size\(\[4\]\)\) must be the same as input size"):
        F.binary_cross_entropy_with_logits(gradc.zeros(3, 4), gradc.zeros(4))


def test_loss_module_reprs_match_torch():
    for name in ["MSELoss", "L1Loss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss"]:
        assert repr(getattr(nn, name)()) == repr(getattr(torch.nn, name)())
