"""Stochastic gradient descent with PyTorch's momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

from .. import autograd
from .optimizer import Optimizer


class SGD(Optimizer):
    """`torch.optim.SGD`: the update of its default (single-tensor) implementation.

    With momentum, the buffer starts as a copy of the first (decayed) gradient,
    then follows buf = momentum * buf + (1 - dampening) * grad.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} (it must be >= 0)")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum} (it must be >= 0)")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (it must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening. Pass momentum > 0 and dampening=0, "
                "or nesterov=False."
            )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)

    @autograd.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss if one is given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p] if group["momentum"] != 0 else None
                    _update(p, p.grad, state, group)
        return loss


def _update(p, grad, state, group):
    lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
    if group["maximize"]:
        grad = -grad
    if weight_decay != 0:
        grad = grad + p * weight_decay
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
        grad = grad + buf * momentum if group["nesterov"] else buf
    p.sub_(grad * lr)
