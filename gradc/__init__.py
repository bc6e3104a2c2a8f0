"""gradc: a compiler-style deep-learning framework with PyTorch's API.

`import gradc as torch` runs PyTorch-style training code eagerly on NumPy;
`gradc.compile` turns a model or a whole training step into native code.
"""
from . import dtypes
from .dtypes import (
    DType as dtype, bool_ as bool, double, float, float32, float64, get_default_dtype, int, int32, int64,
    long, set_default_dtype,
)
from . import dispatch as _dispatch  # installs primitive binding
from .prims import ShapeError
from .errors import TraceError
from .tensor import Size, Tensor
from . import autograd
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .creation import (
    arange, as_tensor, empty, empty_like, eye, from_numpy, full, full_like, linspace, normal, ones, ones_like,
    rand, rand_like, randint, randint_like, randn, randn_like, randperm, tensor, zeros, zeros_like,
)
from .random import manual_seed, seed
from .ops import (
    abs, absolute, add, all, amax, amin, any, argmax, argmin, bitwise_and, bitwise_not, bitwise_or, bmm,
    broadcast_to, cat, chunk, clamp, clip,
    clone, concat, concatenate, cos, cumsum, div, divide, dot, eq, equal, erf, exp, expand, flatten,
    floor_divide, gather, ge, greater, gt, isfinite, isinf, isnan, le, less, log, log1p, log_softmax,
    logical_and, logical_not, logical_or, logsumexp, lt, masked_fill, matmul, max, maximum, mean, min,
    minimum, mm, movedim, mul, multiply, ne, neg, negative, nonzero, outer, permute, pow, prod, relu,
    remainder, reshape, rsqrt, sigmoid, sign, sin, softmax, split, sqrt, square, squeeze, stack, std, sub, subtract,
    sum, swapaxes, t, take_along_dim, tanh, transpose, true_divide, unbind, unsqueeze, var, where,
)
from .serialization import load, save
from ._tensor_str import set_printoptions
from . import optim  # `gradc.optim.SGD` works after `import gradc`, as `torch.optim` does
from . import nn  # `gradc.nn.Linear` works after `import gradc`, as `torch.nn` does

__version__ = "0.1.0"
from .tracing import trace
from .compiler import compile
