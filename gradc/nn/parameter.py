"""`Parameter`: a tensor that a `Module` registers as one of its parameters."""
from __future__ import annotations

from ..creation import _as_array
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad by default and is registered when set
    as a module attribute. Built from a tensor, it shares that tensor's memory
    (as `torch.nn.Parameter` does), so `Parameter(t)` copies nothing."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if isinstance(data, Tensor):
            self._init_alias(data)
        else:
            self._init(_as_array([] if data is None else data))
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
