"""`gradc.nn.functional`: layers and losses as compositions of `gradc.ops`.

Nothing here is a primitive or computes on raw NumPy arrays: every function
binds registry primitives through `gradc.ops`, so the same code runs eagerly,
differentiates on the tape and records IR while a step is traced. Checks that
need values (class-index ranges, probabilities in [0, 1]) run only on concrete
tensors and are skipped while tracing.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import autograd
from .. import dtypes as _dt
from .. import ops
from .. import random as _random
from ..ops import _named, _tensor
from ..tensor import Tensor

__all__ = [
    "linear", "relu", "leaky_relu", "gelu", "silu", "elu", "softplus", "sigmoid", "tanh", "softmax",
    "log_softmax", "dropout", "mse_loss", "l1_loss", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "one_hot",
]


def _concrete(t: Tensor) -> bool:
    return isinstance(t._data, np.ndarray)


def _sz(t) -> str:
    return f"gradc.Size({list(t.shape)})"


# ---------------------------------------------------------------- layers
def linear(input, weight, bias=None):  # noqa: A002
    """y = input @ weight.T + bias, checked the way PyTorch checks its GEMM."""
    input, weight = _tensor(input), _tensor(weight)
    if input.dtype is not weight.dtype:
        raise RuntimeError(
            f"mat1 and mat2 must have the same dtype, but got {_legacy_name(input.dtype)} and "
            f"{_legacy_name(weight.dtype)}. Convert the input (e.g. x.float()) or the model (e.g. model.double()) "
            "so that both match."
        )
    in_features = weight.shape[-1] if weight.ndim else 1
    if input.ndim == 0 or input.shape[-1] != in_features:
        rows = math.prod(input.shape[:-1]) if input.ndim > 1 else 1
        cols = input.shape[-1] if input.ndim else 1
        out_features = weight.shape[0] if weight.ndim == 2 else 1
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{cols} and {in_features}x{out_features}). "
            f"The layer expects inputs whose last dimension is in_features={in_features}, but got input of shape "
            f"{list(input.shape)}."
        )
    out = ops.matmul(input, ops.t(weight))
    if bias is None:
        return out
    out = ops.add(out, bias)
    return _named(out, "AddmmBackward0") if input.ndim == 2 else out


def _legacy_name(d) -> str:
    return {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int", "bool": "Bool"}[d.name]


def relu(input, inplace=False):  # noqa: A002
    return _inplace(input, ops.relu(input), inplace)


def _inplace(input, result, inplace):  # noqa: A002
    """The `inplace=True` flavour: write the out-of-place result into `input`."""
    return input._assign(result) if inplace else result


def leaky_relu(input, negative_slope=0.01, inplace=False):  # noqa: A002
    input = _tensor(input)
    # at 0 the gradient is negative_slope, as in PyTorch
    out = ops.where(ops.gt(input, 0.0), input, ops.mul(input, negative_slope))
    return _inplace(input, _named(out, "LeakyReluBackward0"), inplace)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(input, approximate="none"):  # noqa: A002
    input = _tensor(input)
    if approximate == "none":
        cdf = ops.add(ops.mul(ops.erf(ops.mul(input, math.sqrt(0.5))), 0.5), 0.5)
    elif approximate == "tanh":
        inner = ops.mul(ops.add(input, ops.mul(ops.mul(ops.mul(input, input), input), 0.044715)), _SQRT_2_OVER_PI)
        cdf = ops.add(ops.mul(ops.tanh(inner), 0.5), 0.5)
    else:
        raise RuntimeError(f"approximate argument must be either none or tanh. Got {approximate!r}.")
    return _named(ops.mul(input, cdf), "GeluBackward0")


def silu(input, inplace=False):  # noqa: A002
    input = _tensor(input)
    return _inplace(input, _named(ops.mul(input, ops.sigmoid(input)), "SiluBackward0"), inplace)


def elu(input, alpha=1.0, inplace=False):  # noqa: A002
    input = _tensor(input)
    pos = ops.gt(input, 0.0)
    # exp only of the non-positive part, so the unused branch cannot overflow into a NaN gradient
    neg = ops.mul(ops.sub(ops.exp(ops.where(pos, 0.0, input)), 1.0), alpha)
    return _inplace(input, _named(ops.where(pos, input, neg), "EluBackward0"), inplace)


def softplus(input, beta=1.0, threshold=20.0):  # noqa: A002
    input = _tensor(input)
    scaled = ops.mul(input, beta)
    linear_part = ops.gt(scaled, threshold)
    safe = ops.where(linear_part, 0.0, scaled)  # keeps exp finite where the linear branch is taken
    soft = ops.div(ops.log1p(ops.exp(safe)), beta)
    return _named(ops.where(linear_part, input, soft), "SoftplusBackward0")


def sigmoid(input):  # noqa: A002
    return ops.sigmoid(input)


def tanh(input):  # noqa: A002
    return ops.tanh(input)


def _softmax_dim(name, ndim, stacklevel):
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an "
        "argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None, _stacklevel=3, dtype=None):  # noqa: A002
    input = _tensor(input)
    if dim is None:
        dim = _softmax_dim("softmax", input.ndim, _stacklevel)
    return ops.softmax(input, dim, dtype=dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):  # noqa: A002
    input = _tensor(input)
    if dim is None:
        dim = _softmax_dim("log_softmax", input.ndim, _stacklevel)
    return ops.log_softmax(input, dim, dtype=dtype)


def dropout(input, p=0.5, training=True, inplace=False):  # noqa: A002
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    The mask comes from gradc's generator. The IR has no random primitive yet,
    so tracing a training-mode dropout raises instead of freezing one mask.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    input = _tensor(input)
    if not training or p == 0.0:
        return input
    if not isinstance(input._data, np.ndarray):
        from ..errors import TraceError

        raise TraceError(
            "dropout in training mode cannot be compiled yet (the IR has no random numbers, and a traced mask "
            "would be the same at every step). Call model.eval() before compiling, or run this step eagerly."
        )
    if p == 1.0:
        mask = ops.zeros_like(input)
    else:
        keep = _random.generator().random(tuple(input.shape)) >= p
        mask = Tensor._wrap((keep / (1.0 - p)).astype(input.dtype.np))
    return _inplace(input, _named(ops.mul(input, mask), "NativeDropoutBackward0"), inplace)


# ---------------------------------------------------------------- losses: helpers
def _reduction(reduction, size_average=None, reduce=None):
    """Resolve the deprecated size_average/reduce pair, then validate `reduction`."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "none" if not reduce else ("mean" if size_average else "sum")
        warnings.warn(
            f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
            stacklevel=3,
        )
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def _reduce(loss, reduction):
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    return loss


def _broadcast_pair(input, target, stacklevel=3):  # noqa: A002
    """PyTorch warns, then broadcasts, when a regression target's shape differs from the input's."""
    input, target = _tensor(input), _tensor(target)
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(
            f"Using a target size ({_sz(target)}) that is different to the input size ({_sz(input)}). This will "
            "likely lead to incorrect results due to broadcasting. Please ensure they have the same size.",
            stacklevel=stacklevel,
        )
    return input, target


# ---------------------------------------------------------------- regression losses
def _pointwise_loss(per_element, input, target, size_average, reduce, reduction, weight):  # noqa: A002
    """Shared by mse/l1: broadcast (with PyTorch's warning), optional element weights whose
    'mean' is the weighted mean sum(w * l) / sum(w), as in PyTorch."""
    reduction = _reduction(reduction, size_average, reduce)
    input, target = _broadcast_pair(input, target, stacklevel=4)
    loss = per_element(ops.sub(input, target))
    if weight is None:
        return _reduce(loss, reduction)
    weight = _tensor(weight)
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError("Weights and input must have the same size.")
    loss = ops.mul(loss, weight)
    return ops.div(ops.sum(loss), ops.sum(weight)) if reduction == "mean" else _reduce(loss, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):  # noqa: A002
    out = _pointwise_loss(lambda d: ops.mul(d, d), input, target, size_average, reduce, reduction, weight)
    return _named(out, "MseLossBackward0")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):  # noqa: A002
    return _pointwise_loss(ops.abs, input, target, size_average, reduce, reduction, weight)


# ---------------------------------------------------------------- classification losses
def _check_class_targets(input, target, ignore_index):  # noqa: A002
    """Validate class-index targets against (N, C, d1, ...) or (C,) input, as PyTorch does."""
    if target.dtype is not _dt.int64:
        hint = (
            " Class-index targets must be integers: pass target.long()."
            if target.dtype.is_floating_point
            else " Convert it with target.long()."
        )
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {_legacy_name(target.dtype)}.{hint}")
    if input.ndim < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.ndim})")
    if input.ndim == 1:
        if target.ndim != 0:
            raise RuntimeError(
                f"0D target tensor expected for 1D input, got target of shape {list(target.shape)}. "
                "For a batch, give the input shape (N, C) and the target shape (N,)."
            )
    elif input.ndim == 2:
        if target.ndim != 1:
            raise RuntimeError(
                "0D or 1D target tensor expected, multi-target not supported. "
                f"Got target of shape {list(target.shape)} for input of shape {list(input.shape)}; pass class "
                "indices of shape (N,), e.g. target.view(-1)."
            )
        if target.shape[0] != input.shape[0]:
            raise ValueError(
                f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({target.shape[0]})."
            )
    else:
        expected = [input.shape[0]] + list(input.shape[2:])
        if list(target.shape) != expected:
            raise RuntimeError(
                f"Expected target size {expected}, got {list(target.shape)}. For input (N, C, d1, ...) the target "
                "holds one class index per position: (N, d1, ...)."
            )
    n_classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    if _concrete(target) and target.numel():
        t = target._data
        bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
        if bad.any():
            raise IndexError(
                f"Target {int(t[bad].flat[0])} is out of bounds. Class indices must lie in [0, {n_classes - 1}] "
                f"for an input with {n_classes} classes (or equal ignore_index={ignore_index}); check the labels "
                "or the model's number of outputs."
            )
    return n_classes


def _class_weights(target, weight, ignore_index, dtype):
    """Per-target weights (weight[target], or 1), zero where the target is ignored; and the ignore mask."""
    ignored = ops.eq(target, ignore_index)
    safe = ops.where(ignored, 0, target)
    w = ops.ones_like(target, dtype=dtype) if weight is None else ops.getitem(weight, safe)
    return ops.where(ignored, 0.0, w), ignored, safe


def _check_weight(weight, n_classes):
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != n_classes):
        raise RuntimeError(
            f"weight tensor should be defined either for all {n_classes} classes or no classes but got weight "
            f"tensor of shape: {list(weight.shape)}"
        )


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,  # noqa: A002
             reduction="mean"):
    reduction = _reduction(reduction, size_average, reduce)
    input, target = _tensor(input), _tensor(target)
    n_classes = _check_class_targets(input, target, ignore_index)
    _check_weight(weight, n_classes)
    return _named(_nll(input, target, weight, ignore_index, reduction), "NllLossBackward0")


def _nll(logp, target, weight, ignore_index, reduction):
    if logp.ndim == 1:  # (C,) with a 0-d target: a batch of one
        loss = _nll(ops.unsqueeze(logp, 0), ops.unsqueeze(target, 0), weight, ignore_index, reduction)
        return ops.squeeze(loss, 0) if reduction == "none" else loss
    w, _, safe = _class_weights(target, weight, ignore_index, logp.dtype)
    picked = ops.squeeze(ops.gather(logp, 1, ops.unsqueeze(safe, 1)), 1)
    loss = ops.neg(ops.mul(picked, w))
    if reduction == "mean":
        return _weighted_mean(ops.sum(loss), ops.sum(w))
    return _reduce(loss, reduction)


def _weighted_mean(total, total_weight):
    """total / total_weight; when every target is ignored (weight 0) the value is NaN, as in PyTorch,
    but the gradient is 0 rather than NaN, which PyTorch's kernel also gives."""
    empty = ops.eq(total_weight, 0.0)
    nan_if_empty = ops.where(empty, math.nan, ops.zeros_like(total))
    return ops.add(ops.div(total, ops.where(empty, 1.0, total_weight)), nan_if_empty)


def _class_dim_weight(weight, ndim):
    """weight (C,) shaped to broadcast against an input (N, C, d1, ...) or (C,)."""
    return weight if ndim == 1 else ops.reshape(weight, (1, weight.shape[0]) + (1,) * (ndim - 2))


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,  # noqa: A002
                  reduction="mean", label_smoothing=0.0):
    """log_softmax over the class dimension (1, or 0 for unbatched input), then NLL.

    Targets are class indices (integer, shape (N, d1, ...)) or class
    probabilities (float, the input's shape). Label smoothing mixes the target
    with the uniform distribution, as PyTorch defines it.
    """
    reduction = _reduction(reduction, size_average, reduce)
    input, target = _tensor(input), _tensor(target)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    class_dim = 0 if input.ndim == 1 else 1
    logp = ops.log_softmax(input, class_dim)
    if tuple(target.shape) == tuple(input.shape) and input.ndim:
        return _cross_entropy_probs(logp, target, weight, ignore_index, reduction, label_smoothing, class_dim)
    n_classes = _check_class_targets(input, target, ignore_index)
    _check_weight(weight, n_classes)
    nll = _named(_nll(logp, target, weight, ignore_index, reduction), "NllLossBackward0")
    if label_smoothing == 0.0:
        return nll
    if input.ndim == 1:
        logp, target = ops.unsqueeze(logp, 0), ops.unsqueeze(target, 0)
    w, ignored, _ = _class_weights(target, weight, ignore_index, logp.dtype)
    per_class = logp if weight is None else ops.mul(logp, _class_dim_weight(weight, logp.ndim))
    smooth = ops.where(ignored, 0.0, ops.neg(ops.sum(per_class, 1)))
    if reduction == "mean":
        smooth = _weighted_mean(ops.sum(smooth), ops.sum(w))
    elif reduction == "sum":
        smooth = ops.sum(smooth)
    elif input.ndim == 1:
        smooth = ops.squeeze(smooth, 0)
    return ops.add(ops.mul(nll, 1.0 - label_smoothing), ops.mul(smooth, label_smoothing / n_classes))


def _cross_entropy_probs(logp, target, weight, ignore_index, reduction, label_smoothing, class_dim):
    if not target.dtype.is_floating_point:
        raise RuntimeError(
            f"Expected floating point type for target with class probabilities, got {_legacy_name(target.dtype)}"
        )
    if ignore_index >= 0:
        raise RuntimeError("ignore_index is not supported for floating point target")
    n_classes = logp.shape[class_dim]
    _check_weight(weight, n_classes)
    if label_smoothing > 0.0:
        target = ops.add(ops.mul(target, 1.0 - label_smoothing), label_smoothing / n_classes)
    prod = ops.mul(logp, target)
    if weight is not None:
        prod = ops.mul(prod, _class_dim_weight(weight, logp.ndim))
    loss = ops.neg(ops.sum(prod, class_dim))
    if reduction == "mean":
        return _named(ops.div(ops.sum(loss), float(logp.numel() // n_classes)), "DivBackward0")
    return _reduce(loss, reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,  # noqa: A002
                         reduction="mean"):
    """-w * (y log x + (1 - y) log(1 - x)), with each log clamped at -100 as PyTorch does."""
    reduction = _reduction(reduction, size_average, reduce)
    input, target = _tensor(input), _tensor(target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Using a target size ({_sz(target)}) that is different to the input size ({_sz(input)}) is "
            "deprecated. Please ensure they have the same size."
        )
    if _concrete(input) and input.numel() and ((input._data < 0) | (input._data > 1)).any():
        raise RuntimeError(
            "all elements of input should be between 0 and 1. binary_cross_entropy takes probabilities: apply "
            "sigmoid first, or use binary_cross_entropy_with_logits (nn.BCEWithLogitsLoss) on raw scores."
        )
    log_x = ops.clamp(ops.log(input), min=-100.0)
    log_1mx = ops.clamp(ops.log(ops.sub(1.0, input)), min=-100.0)
    loss = ops.neg(ops.add(ops.mul(target, log_x), ops.mul(ops.sub(1.0, target), log_1mx)))
    if weight is not None:
        loss = ops.mul(loss, weight)
    return _named(_reduce(loss, reduction), "BinaryCrossEntropyBackward0")


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,  # noqa: A002
                                     reduction="mean", pos_weight=None):
    """The stable form: (1 - y) x + l (log1p(exp(-|x|)) + max(-x, 0)), with l = 1 + (pos_weight - 1) y."""
    reduction = _reduction(reduction, size_average, reduce)
    input, target = _tensor(input), _tensor(target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Target size ({_sz(target)}) must be the same as input size ({_sz(input)})")
    # maximum splits the gradient at 0 evenly, which gives exactly sigmoid(0) there
    softplus_neg = ops.add(ops.log1p(ops.exp(ops.neg(ops.abs(input)))), ops.maximum(ops.neg(input), 0.0))
    if pos_weight is not None:
        softplus_neg = ops.mul(ops.add(ops.mul(ops.sub(pos_weight, 1.0), target), 1.0), softplus_neg)
    loss = ops.add(ops.mul(ops.sub(1.0, target), input), softplus_neg)
    if weight is not None:
        loss = ops.mul(loss, weight)
    return _named(_reduce(loss, reduction), "BinaryCrossEntropyWithLogitsBackward0")


def one_hot(tensor, num_classes=-1):
    """Class indices -> int64 one-hot vectors along a new last dimension."""
    tensor = _tensor(tensor)
    if tensor.dtype is not _dt.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor. Convert it with .long().")
    if _concrete(tensor) and tensor.numel():
        a = tensor._data
        if a.min() < 0:
            raise RuntimeError("Class values must be non-negative.")
        if num_classes == -1:
            num_classes = int(a.max()) + 1
        elif a.max() >= num_classes:
            raise RuntimeError("Class values must be smaller than num_classes.")
    elif num_classes == -1:
        if _concrete(tensor):
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        raise RuntimeError("one_hot needs num_classes while tracing (it cannot be inferred from symbolic values).")
    classes = Tensor._wrap(np.arange(num_classes, dtype=np.int64))
    with autograd.no_grad():
        return ops.to_dtype(ops.eq(ops.unsqueeze(tensor, -1), classes), _dt.int64)
