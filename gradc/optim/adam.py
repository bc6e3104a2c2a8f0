"""Adam and AdamW with the formulas of PyTorch's default (single-tensor) implementation."""
from __future__ import annotations

from .. import autograd
from .. import creation
from .. import dtypes as _dt
from ..tensor import Tensor
from .optimizer import Optimizer, scalar_dtype


class Adam(Optimizer):
    """`torch.optim.Adam`. Per-parameter state: 'step' (a 0-d tensor, as in PyTorch),
    'exp_avg', 'exp_avg_sq' and, with amsgrad, 'max_exp_avg_sq'.

    The step counter is a tensor so that a traced step reads and bumps it like
    any other state, instead of baking the bias corrections into the graph.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr} (it must be >= 0)")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} (it must be >= 0)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (betas must be in [0, 1))")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (it must be >= 0)")
        if not all(isinstance(b, float) for b in betas):
            raise ValueError("betas must be either both floats or both Tensors; write them as floats, e.g. (0.9, 0.999)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        """Also accepts old state dicts whose 'step' is a Python number (converted to a tensor)."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)
            for p in group["params"]:
                s = self.state.get(p)
                if s and not isinstance(s["step"], Tensor):
                    s["step"] = creation.tensor(float(s["step"]), dtype=scalar_dtype())

    @autograd.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss if one is given."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = creation.tensor(0.0, dtype=scalar_dtype())
                    state["exp_avg"] = creation.zeros_like(p)
                    state["exp_avg_sq"] = creation.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = creation.zeros_like(p)
                _update(p, p.grad, state, group)
        return loss


class AdamW(Adam):
    """`torch.optim.AdamW`: Adam with decoupled weight decay (p *= 1 - lr * weight_decay)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def _update(p, grad, state, group):
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if group["maximize"]:
        grad = -grad
    step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
    step_t.add_(1)
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            p.mul_(1 - lr * weight_decay)
        else:
            grad = grad + p * weight_decay
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).add_(grad * (1 - beta2) * grad)  # addcmul's order: value * t1 * t2

    # PyTorch computes the bias corrections from the step count in double precision.
    step = step_t.to(_dt.float64)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step).sqrt()
    step_size = lr / bias_correction1
    if group["amsgrad"]:
        max_exp_avg_sq = state["max_exp_avg_sq"]
        max_exp_avg_sq.maximum_(exp_avg_sq)
        denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    else:
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    p.add_(exp_avg * -step_size / denom)  # addcdiv's order: value * t1 / t2
