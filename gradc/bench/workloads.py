"""The benchmark workloads: model, loss, optimizer and data shape, each defined once.

A workload is a stack of `nn.Linear` layers (ReLU between them), a loss and
an optimizer. Every mode builds its step from the same description, the same
data and the same initial weights (drawn once by gradc's PyTorch-style
initialization), so the modes compute the same thing and their times compare.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple          # layer widths: sizes[0] inputs ... sizes[-1] outputs
    batch: int
    loss: str             # "mse" or "cross_entropy"
    optimizer: str        # "sgd" or "adam"
    hyper: dict = field(default_factory=dict)  # lr, momentum / betas, eps
    about: str = ""

    @property
    def layers(self):
        """(fan_in, fan_out) of each Linear layer."""
        return list(zip(self.sizes[:-1], self.sizes[1:]))

    def build(self, lib):
        """The model, criterion and optimizer in `lib` (gradc or torch: the same code runs on both)."""
        nn, optim = lib.nn, lib.optim
        if len(self.sizes) == 2:
            model = _seed_linear_regression(nn, *self.sizes)
        else:
            mods = []
            for i, (fan_in, fan_out) in enumerate(self.layers):
                mods.append(nn.Linear(fan_in, fan_out))
                if i < len(self.layers) - 1:
                    mods.append(nn.ReLU())
            model = nn.Sequential(*mods)
        criterion = nn.MSELoss() if self.loss == "mse" else nn.CrossEntropyLoss()
        h = self.hyper
        if self.optimizer == "sgd":
            optimizer = optim.SGD(model.parameters(), lr=h["lr"], momentum=h.get("momentum", 0.0))
        else:
            optimizer = optim.Adam(model.parameters(), lr=h["lr"], betas=h["betas"], eps=h["eps"])
        return model, criterion, optimizer


def _seed_linear_regression(nn, fan_in, fan_out):
    """The seed tutorial's model class, as written there."""

    class LinearRegression(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(fan_in, fan_out)

        def forward(self, x):
            return self.linear(x)

    return LinearRegression()


def training_step(model, criterion, optimizer):
    """The seed's loop body as a function of one batch: forward, loss, backward, update."""

    def step(x, y):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


WORKLOADS = {
    w.name: w
    for w in [
        Workload("linreg", (1, 1), 100, "mse", "sgd", {"lr": 0.01},
                 "seed linear regression: Linear(1,1), 100 samples, MSE, SGD lr 0.01"),
        Workload("mlp_small", (64, 128, 64, 10), 64, "cross_entropy", "sgd", {"lr": 0.05, "momentum": 0.9},
                 "MLP 64-128-64-10 ReLU, batch 64, cross-entropy, SGD lr 0.05 momentum 0.9"),
        Workload("mlp_large", (784, 512, 512, 10), 128, "cross_entropy", "adam",
                 {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
                 "MLP 784-512-512-10 ReLU, batch 128, cross-entropy, Adam lr 1e-3"),
    ]
}


def make_data(wl: Workload, seed: int = 0):
    """One fixed float32 batch: the seed's y = 2x + 1 + noise for MSE, random classes otherwise."""
    rng = np.random.default_rng(seed)
    if wl.loss == "mse":
        x = (rng.random((wl.batch, wl.sizes[0])) * 10).astype(np.float32)
        y = (2.0 * x[:, :1] + 1.0 + rng.standard_normal((wl.batch, wl.sizes[-1])) * 0.5).astype(np.float32)
    else:
        x = rng.standard_normal((wl.batch, wl.sizes[0])).astype(np.float32)
        y = rng.integers(0, wl.sizes[-1], wl.batch).astype(np.int64)
    return x, y


def init_weights(wl: Workload, seed: int = 0):
    """[W0, b0, W1, b1, ...] as float32 arrays, from gradc's default (PyTorch) initialization."""
    import gradc

    gradc.manual_seed(seed)
    model, _, _ = wl.build(gradc)
    return [p.detach().numpy().astype(np.float32, copy=True) for p in model.parameters()]


# ----------------------------------------------------------------------------- FLOP count
# Counted per training step, for batch B and each layer (fan_in -> fan_out):
#   forward   matmul 2*B*fan_in*fan_out, bias add B*fan_out, ReLU B*fan_out (hidden layers)
#   backward  weight gradient 2*B*fan_in*fan_out; input gradient 2*B*fan_in*fan_out
#             (not for the first layer: the data needs no gradient); bias gradient B*fan_out
#             (a column sum); ReLU mask B*fan_out (hidden layers)
#   loss      per output element C: MSE 3 forward (sub, square, sum) + 2 backward (sub, scale);
#             cross-entropy 5 forward (max, sub, exp, sum, log/sub) + 3 backward (softmax
#             divide, subtract one-hot, scale); exp and log count as one FLOP each
#   update    per parameter: SGD 2 (scale, subtract), SGD momentum 4 (+ scale and add of
#             the buffer), Adam 13 (m: 3, v: 4, sqrt, two bias divides, eps add, divide, subtract)
LOSS_FLOPS = {"mse": 3 + 2, "cross_entropy": 5 + 3}
UPDATE_FLOPS = {"sgd": 2, "sgd_momentum": 4, "adam": 13}


def flop_count(wl: Workload) -> dict:
    """The analytic FLOP count of one training step, by part (see the formula above)."""
    B = wl.batch
    parts = {"matmul_forward": 0, "matmul_backward": 0, "elementwise": 0, "loss": 0, "update": 0}
    n_params = 0
    for i, (fan_in, fan_out) in enumerate(wl.layers):
        mm = 2 * B * fan_in * fan_out
        parts["matmul_forward"] += mm
        parts["matmul_backward"] += mm if i == 0 else 2 * mm
        hidden = i < len(wl.layers) - 1
        parts["elementwise"] += B * fan_out * (2 + 2 * hidden)  # bias add + bias grad (+ ReLU fwd, bwd)
        n_params += fan_in * fan_out + fan_out
    parts["loss"] = LOSS_FLOPS[wl.loss] * B * wl.sizes[-1]
    rule = "sgd_momentum" if wl.optimizer == "sgd" and wl.hyper.get("momentum") else wl.optimizer
    parts["update"] = UPDATE_FLOPS[rule] * n_params
    parts["total"] = sum(parts.values())
    return parts
