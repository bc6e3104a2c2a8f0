"""The Tensor: a NumPy array (or, while tracing, an IR value) plus autograd state.

Methods are thin: arithmetic and math go through `gradc.ops`, which binds
registry primitives; in-place methods compute out of place and write the
result into this tensor's memory, bumping its version counter so autograd can
tell when a saved tensor was changed.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import autograd
from . import dtypes as _dt


class Size(tuple):
    """A shape (torch.Size): a tuple that prints as `gradc.Size([2, 3])`."""

    def __repr__(self):
        return f"gradc.Size({list(self)})"

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n


_FLOAT_ONLY_HINT = (
    "Only Tensors of floating point and complex dtype can require gradients; this tensor has dtype "
    "{dtype}. Create it as floating point instead, e.g. gradc.tensor([1., 2., 3.], requires_grad=True) "
    "or gradc.tensor(data, dtype=gradc.float32, requires_grad=True), or convert with .float()."
)


class Tensor:
    __slots__ = ("_data", "requires_grad", "grad", "grad_fn", "_version", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # so `ndarray + tensor` gives a tensor

    def __init__(self, data=None, *, dtype=None, requires_grad=False):
        from .creation import _as_array

        arr = _as_array([] if data is None else data, dtype)
        self._init(arr)
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------ construction
    def _init(self, arr):
        self._data = arr
        self.requires_grad = False
        self.grad = None
        self.grad_fn = None
        self._version = [0]
        self._retains_grad = False

    @classmethod
    def _wrap(cls, arr):
        t = cls.__new__(cls)
        t._init(arr)
        return t

    def _init_alias(self, other):
        """Share other's memory and version counter, without autograd state."""
        self._init(other._data)
        self._version = other._version

    # ------------------------------------------------------------ metadata
    @property
    def shape(self):
        return Size(self._data.shape)

    def size(self, dim=None):
        if dim is None:
            return self.shape
        return self.shape[_dim(dim, self.ndim)]

    @property
    def dtype(self):
        return _dt.as_dtype(self._data.dtype)

    @property
    def ndim(self):
        return len(self._data.shape)

    def dim(self):
        return self.ndim

    ndimension = dim

    def numel(self):
        return int(np.prod(self.shape, dtype=np.int64))

    nelement = numel

    def element_size(self):
        return self.dtype.itemsize

    @property
    def device(self):
        return "cpu"

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def is_floating_point(self):
        return self.dtype.is_floating_point

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------ conversion to Python / NumPy
    def _concrete(self, what):
        if not isinstance(self._data, np.ndarray):
            from .errors import TraceError

            raise TraceError.concrete(what)
        return self._data

    def item(self):
        a = self._concrete(".item()")
        if a.size != 1:
            raise RuntimeError(f"a Tensor with {a.size} elements cannot be converted to Scalar")
        return a.reshape(()).item()

    def tolist(self):
        return self._concrete(".tolist()").tolist()

    def numpy(self, force=False):
        a = self._concrete(".numpy()")
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return a

    def __array__(self, dtype=None, copy=None):
        a = self._concrete("np.asarray(tensor)")
        return a if dtype is None else a.astype(dtype)

    def __bool__(self):
        a = self._concrete("bool(tensor) (a Python `if` or `while` on a tensor's value)")
        if a.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous")
        return bool(a.reshape(()))

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self):
        from ._tensor_str import format_tensor

        return format_tensor(self)

    def __format__(self, spec):
        if self.ndim == 0 and spec:
            return format(self.item(), spec)
        return repr(self) if not spec else format(repr(self), spec)

    # ------------------------------------------------------------ autograd
    def requires_grad_(self, requires_grad=True):
        if requires_grad and not self.dtype.is_floating_point:
            raise RuntimeError(_FLOAT_ONLY_HINT.format(dtype=self.dtype))
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a computed "
                "variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach()."
            )
        self.requires_grad = bool(requires_grad)
        return self

    def _edge(self):
        """Where this tensor's gradient flows: its node, or itself as a leaf."""
        return self.grad_fn if self.grad_fn is not None else self

    def detach(self):
        t = Tensor.__new__(Tensor)
        t._init_alias(self)
        return t

    def detach_(self):
        self.grad_fn = None
        self.requires_grad = False
        return self

    @property
    def data(self):
        return self.detach()

    @data.setter
    def data(self, value):
        self._data = value._data if isinstance(value, Tensor) else np.asarray(value)
        self._version = [0]

    def retain_grad(self):
        """Keep this non-leaf tensor's gradient in `.grad` on backward (leaves always do)."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            self.grad_fn.retained = weakref.ref(self)
        self._retains_grad = True

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        if not isinstance(self._data, np.ndarray):
            from .tracing import backward_symbolic

            return backward_symbolic(self)
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs: this tensor has shape "
                    f"{list(self.shape)}. Reduce it to a scalar first (e.g. `y.sum().backward()`), or pass "
                    f"the gradient of the result explicitly: `y.backward(gradient=gradc.ones_like(y))`."
                )
            gradient = _ones_like_for_backward(self)
        elif not isinstance(gradient, Tensor):
            gradient = Tensor(gradient, dtype=self.dtype)
        if tuple(gradient.shape) != tuple(self.shape):
            raise RuntimeError(
                f"Mismatch in shape: grad_output[0] has a shape of {gradient.shape} and output[0] has a "
                f"shape of {self.shape}."
            )
        retain = create_graph if retain_graph is None else retain_graph
        if inputs is not None:
            inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
            grads = autograd.run_backward([self], [gradient], retain, create_graph, inputs=inputs)
            for i, g in zip(inputs, grads):
                if g is not None:
                    i.grad = g.detach().clone() if i.grad is None else i.grad + g.detach()
            return
        autograd.run_backward([self], [gradient], retain, create_graph)

    def register_hook(self, hook):
        raise NotImplementedError("tensor hooks are not supported by gradc yet")

    # ------------------------------------------------------------ in place
    def _assign(self, result):
        """Write `result` (computed out of place) into this tensor's memory."""
        if autograd.is_grad_enabled():
            if self.requires_grad and self.grad_fn is None:
                raise RuntimeError(
                    "a leaf Variable that requires grad is being used in an in-place operation. Wrap the "
                    "update in `with gradc.no_grad():` (as optimizers do), or use an out-of-place op."
                )
        if not isinstance(self._data, np.ndarray) or not isinstance(result._data, np.ndarray):
            from .ir.builder import assign_symbolic

            return assign_symbolic(self, result)
        if result.dtype is not self.dtype and not _dt.can_cast(result.dtype, self.dtype):
            raise RuntimeError(f"result type {result.dtype.name} can't be cast to the desired output type {self.dtype.name}")
        if not self._data.flags.writeable:
            self._data = self._data.copy()
        if result.dtype is not self.dtype and result.grad_fn is not None:
            result = _ops.to_dtype(result, self.dtype)  # backward then sees self's dtype
        np.copyto(self._data, np.broadcast_to(result._data, self._data.shape), casting="unsafe")
        self._version[0] += 1
        if autograd.is_grad_enabled() and result.grad_fn is not None:
            self.grad_fn = result.grad_fn
            self.requires_grad = True
        return self

    def _old(self):
        """Self as an operand of an in-place op whose backward reads it: a snapshot when
        autograd records, so overwriting self leaves the saved value intact (PyTorch saves
        `original_self` the same way)."""
        if not (autograd.is_grad_enabled() and self.grad_fn is not None):
            return self
        t = Tensor._wrap(self._data.copy())
        t.grad_fn, t.requires_grad = self.grad_fn, True
        return t

    def _overwrite(self, value):
        """`value` in self's dtype and shape; when autograd records, an op of self with a zero
        gradient to self (and the gradient to `value`), as fill_ and copy_ are in PyTorch."""
        if _ops._is_scalar(value):
            value = _ops._literal(value, self.dtype)
        else:
            value = _ops.to_dtype(value, self.dtype)
        tracked = self.requires_grad or (isinstance(value, Tensor) and value.requires_grad)
        if not (autograd.is_grad_enabled() and tracked):
            return value if isinstance(value, Tensor) else _ops.full_like(self, value)
        return _ops.where(Tensor._wrap(np.ones(tuple(self.shape), np.bool_)), value, self)

    def zero_(self):
        return self._assign(self._overwrite(0))

    def fill_(self, value):
        return self._assign(self._overwrite(value))

    def copy_(self, src):
        return self._assign(self._overwrite(src))

    def add_(self, other, *, alpha=1):
        return self._assign(_ops.add(self, other, alpha=alpha))

    def sub_(self, other, *, alpha=1):
        return self._assign(_ops.sub(self, other, alpha=alpha))

    def mul_(self, other):
        return self._assign(_ops.mul(self._old(), other))

    def div_(self, other):
        return self._assign(_ops.div(self._old(), other))

    def clamp_(self, min=None, max=None):  # noqa: A002
        return self._assign(_ops.clamp(self, min, max))

    def addcmul_(self, t1, t2, value=1):
        return self._assign(_ops.add(self, _ops.mul(_ops.mul(t1, t2), value)))

    def addcdiv_(self, t1, t2, value=1):
        return self._assign(_ops.add(self, _ops.mul(_ops.div(t1, t2), value)))

    def lerp_(self, end, weight):
        return self._assign(_ops.add(self, _ops.mul(_ops.sub(end, self), weight)))

    def sqrt_(self):
        return self._assign(_ops.sqrt(self))

    def exp_(self):
        return self._assign(_ops.exp(self))

    def neg_(self):
        return self._assign(_ops.neg(self))

    def relu_(self):
        return self._assign(_ops.relu(self))

    def pow_(self, e):
        return self._assign(_ops.pow(self._old(), e))

    def maximum_(self, other):
        return self._assign(_ops.maximum(self._old(), other))

    def uniform_(self, a=0.0, b=1.0):
        from . import random

        return self._assign(Tensor._wrap(random.uniform(self.shape, a, b, self.dtype)))

    def normal_(self, mean=0.0, std=1.0):
        from . import random

        return self._assign(Tensor._wrap(random.normal(self.shape, mean, std, self.dtype)))

    def __iadd__(self, o):
        return self.add_(o)

    def __isub__(self, o):
        return self.sub_(o)

    def __imul__(self, o):
        return self.mul_(o)

    def __itruediv__(self, o):
        return self.div_(o)

    def __setitem__(self, key, value):
        self._assign(_ops.index_put(self, key, value))

    # ------------------------------------------------------------ operators
    def __add__(self, o):
        return _ops.add(self, o)

    def __radd__(self, o):
        return _ops.add(o, self)

    def __sub__(self, o):
        return _ops.sub(self, o)

    def __rsub__(self, o):
        return _ops.sub(o, self)

    def __mul__(self, o):
        return _ops.mul(self, o)

    def __rmul__(self, o):
        return _ops.mul(o, self)

    def __truediv__(self, o):
        return _ops.div(self, o)

    def __rtruediv__(self, o):
        return _ops.div(o, self)

    def __pow__(self, o):
        return _ops.pow(self, o)

    def __rpow__(self, o):
        return _ops.pow(o, self)

    def __matmul__(self, o):
        return _ops.matmul(self, o)

    def __rmatmul__(self, o):
        return _ops.matmul(o, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.abs(self)

    def __invert__(self):
        if self.dtype.is_floating_point:
            raise TypeError("~ (operator.invert) is only implemented on integer and Boolean-type tensors")
        return _ops.bitwise_not(self)

    def __and__(self, o):
        return _ops.bitwise_and(self, o)

    __rand__ = __and__

    def __or__(self, o):
        return _ops.bitwise_or(self, o)

    __ror__ = __or__

    def __floordiv__(self, o):
        return _ops.floor_divide(self, o)

    def __rfloordiv__(self, o):
        return _ops.floor_divide(o, self)

    def __mod__(self, o):
        return _ops.remainder(self, o)

    def __rmod__(self, o):
        return _ops.remainder(o, self)

    def __eq__(self, o):
        return False if o is None else _ops.eq(self, o)

    def __ne__(self, o):
        return True if o is None else _ops.ne(self, o)

    def __lt__(self, o):
        return _ops.lt(self, o)

    def __le__(self, o):
        return _ops.le(self, o)

    def __gt__(self, o):
        return _ops.gt(self, o)

    def __ge__(self, o):
        return _ops.ge(self, o)

    def __getitem__(self, key):
        return _ops.getitem(self, key)

    @property
    def T(self):
        return _ops.permute(self, tuple(range(self.ndim))[::-1])

    @property
    def mT(self):
        return _ops.transpose(self, -2, -1)

    # ------------------------------------------------------------ dtype conversion
    def to(self, *args, dtype=None, **kwargs):
        for a in args:
            if isinstance(a, str) and a.startswith(("cpu", "cuda", "mps")):
                if a != "cpu":
                    raise RuntimeError(f"gradc runs on the CPU only; cannot move a tensor to {a!r}")
            elif isinstance(a, Tensor):
                dtype = a.dtype
            else:
                dtype = a
        return self if dtype is None else _ops.to_dtype(self, dtype)

    def type(self, dtype=None):
        return self.dtype if dtype is None else self.to(dtype)

    def float(self):
        return self.to(_dt.float32)

    def double(self):
        return self.to(_dt.float64)

    def long(self):
        return self.to(_dt.int64)

    def int(self):
        return self.to(_dt.int32)

    def bool(self):
        return self.to(_dt.bool_)

    def cpu(self):
        return self

    def cuda(self, *a, **k):
        raise RuntimeError("gradc runs on the CPU only")

    def clone(self):
        return _ops.clone(self)

    def contiguous(self):
        return self

    def new_zeros(self, *size, dtype=None):
        return _ops.zeros(*size, dtype=dtype or self.dtype)

    def new_ones(self, *size, dtype=None):
        return _ops.ones(*size, dtype=dtype or self.dtype)

    def new_full(self, size, fill_value, dtype=None):
        from .creation import full

        return full(size, fill_value, dtype=dtype or self.dtype)

    def new_tensor(self, data, dtype=None):
        return Tensor(data, dtype=dtype or self.dtype)


def _dim(d, ndim):
    """Normalise one dimension index the way PyTorch does."""
    n = max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d % n


def _ones_like_for_backward(t):
    return Tensor._wrap(np.ones(tuple(t.shape), t.dtype.np)) if isinstance(t._data, np.ndarray) else _ops.ones_like(t)


def _install_methods():
    """Tensor methods that are just the functional op with self first."""
    names = """exp log log1p sqrt rsqrt abs neg sign sin cos tanh sigmoid relu pow clamp clip maximum minimum
    sum mean max min amax amin argmax argmin var std logsumexp prod matmul mm bmm transpose permute
    reshape view flatten squeeze unsqueeze expand expand_as reshape_as view_as split chunk gather where
    softmax log_softmax eq ne lt le gt ge logical_not logical_and logical_or add sub mul div
    square masked_fill any all isnan isinf isfinite repeat t unbind outer dot floor_divide
    nonzero cumsum remainder bitwise_and bitwise_or bitwise_not""".split()
    for name in names:
        if not hasattr(Tensor, name) and hasattr(_ops, name):
            setattr(Tensor, name, getattr(_ops, name))
    Tensor.multiply, Tensor.divide, Tensor.subtract = _ops.mul, _ops.div, _ops.sub
    Tensor.clip_ = Tensor.clamp_
    Tensor.absolute = _ops.abs


from . import ops as _ops  # noqa: E402

autograd.SavedTensor = autograd._saved_class()
autograd.Tensor_data = Tensor._data
_install_methods()
