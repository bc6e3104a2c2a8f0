"""The ways one workload's training step is run: gradc eager and compiled, PyTorch, JAX, NumPy.

Each builder takes (workload, initial weights, x, y) and returns a `Step`: a
zero-argument callable that trains on the fixed batch once (or `steps` times,
in one call) and returns the loss (or losses), how to read them as floats,
and how to wait for an asynchronous result. PyTorch and JAX are optional: a mode whose library is missing is
reported as unavailable, never as a failure.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .workloads import Workload, training_step


@dataclass
class Step:
    run: Callable[[], object]             # one training step; returns the loss (any scalar-like)
    sync: Callable[[object], None] = lambda out: None  # wait until `out` and the update are done
    value: Callable[[object], float] = float  # the loss as a Python float
    steps: int = 1                        # training steps one call of `run` makes
    values: Callable[[object], list] | None = None  # their losses, when it makes several

    def losses(self, out) -> list:
        """The losses of the steps of one call of `run` that returned `out`."""
        return self.values(out) if self.values else [self.value(out)]


@dataclass
class Mode:
    name: str
    build: Callable[..., Step]
    requires: str | None = None           # the optional module the mode needs
    about: str = ""

    def missing(self) -> str | None:
        """Why the mode cannot run here, or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"{self.requires} not installed"
        return None


def _load_weights(lib, model, weights):
    with lib.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(lib.from_numpy(np.array(w, dtype=np.float32)))


def _library_step(lib, wl, weights, x, y, compile_=False):
    """The seed's loop body on `lib` (gradc or torch), whose API is the same."""
    model, criterion, optimizer = wl.build(lib)
    _load_weights(lib, model, weights)
    step = training_step(model, criterion, optimizer)
    if compile_:
        step = lib.compile(step)
    X, Y = lib.from_numpy(x), lib.from_numpy(y)
    return Step(run=lambda: step(X, Y), value=lambda loss: loss.item())


def gradc_eager(wl, weights, x, y):
    import gradc

    return _library_step(gradc, wl, weights, x, y)


def gradc_compiled(wl, weights, x, y):
    import gradc

    return _library_step(gradc, wl, weights, x, y, compile_=True)


RUN_BYTES = 16 << 20  # about how much stacked data one call of gradc-compiled-run trains on


def gradc_compiled_run(wl, weights, x, y):
    """`step.run(k, xs, ys)`: k steps in one native call over k copies of the batch."""
    import gradc

    model, criterion, optimizer = wl.build(gradc)
    _load_weights(gradc, model, weights)
    step = gradc.compile(training_step(model, criterion, optimizer))
    k = max(10, min(1000, RUN_BYTES // (x.nbytes + y.nbytes)))
    xs, ys = np.stack([x] * k), np.stack([y] * k)
    return Step(run=lambda: step.run(k, xs, ys), steps=k, values=lambda losses: losses.numpy().tolist())


def torch_eager(wl, weights, x, y):
    import torch

    torch.set_num_threads(int(os.environ.get("GRADC_BENCH_THREADS", "2")))
    return _library_step(torch, wl, weights, x, y)


# ----------------------------------------------------------------------------- NumPy by hand
class _NumpyStep:
    """Forward, backward and update written out in vectorized float32 NumPy, updating in place."""

    def __init__(self, wl: Workload, weights, x, y):
        self.wl, self.x, self.y = wl, x, y
        self.p = [np.array(w, dtype=np.float32) for w in weights]
        self.state = [[np.zeros_like(p) for p in self.p] for _ in range(2 if wl.optimizer == "adam" else 1)]
        self.t = 0

    def __call__(self):
        wl, p = self.wl, self.p
        n = len(wl.layers)
        acts = [self.x]
        for i in range(n):
            z = acts[-1] @ p[2 * i].T
            z += p[2 * i + 1]
            if i < n - 1:
                np.maximum(z, 0, out=z)
            acts.append(z)
        loss, dz = self._loss(acts[-1])
        grads = [None] * len(p)
        for i in reversed(range(n)):
            grads[2 * i] = dz.T @ acts[i]
            grads[2 * i + 1] = dz.sum(axis=0)
            if i > 0:
                dz = dz @ p[2 * i]
                dz *= acts[i] > 0
        self._update(grads)
        return loss

    def _loss(self, out):
        if self.wl.loss == "mse":
            d = out - self.y
            loss = np.vdot(d, d) / d.size
            d *= 2.0 / d.size
            return loss, d
        rows = np.arange(len(self.y))
        shifted = out - out.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) - shifted[rows, self.y])
        e /= s
        e[rows, self.y] -= 1.0
        e *= 1.0 / len(self.y)
        return loss, e

    def _update(self, grads):
        h = self.wl.hyper
        lr = h["lr"]
        if self.wl.optimizer == "sgd":
            mom = h.get("momentum", 0.0)
            for p, g, buf in zip(self.p, grads, self.state[0]):
                if mom:
                    buf *= mom
                    buf += g
                    g = buf
                p -= lr * g
            return
        (b1, b2), eps = h["betas"], h["eps"]
        self.t += 1
        step_size = lr / (1 - b1 ** self.t)
        root_bc2 = (1 - b2 ** self.t) ** 0.5
        for p, g, m, v in zip(self.p, grads, *self.state):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            g *= g
            g *= 1 - b2
            v += g
            denom = np.sqrt(v)
            denom *= 1.0 / root_bc2
            denom += eps
            np.divide(m, denom, out=denom)
            denom *= step_size
            p -= denom


def numpy_step(wl, weights, x, y):
    return Step(run=_NumpyStep(wl, weights, x, y))


# ----------------------------------------------------------------------------- JAX jit
def jax_jit(wl, weights, x, y):
    """A functional step under `jax.jit`, with hand-written SGD-momentum / Adam (no optax)."""
    import jax
    import jax.numpy as jnp

    n = len(wl.layers)
    h = wl.hyper

    def loss_fn(params, xb, yb):
        a = xb
        for i in range(n):
            a = a @ params[2 * i].T + params[2 * i + 1]
            if i < n - 1:
                a = jnp.maximum(a, 0)
        if wl.loss == "mse":
            return jnp.mean((a - yb) ** 2)
        logp = jax.nn.log_softmax(a, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    def update(params, grads, state):
        if wl.optimizer == "sgd":
            mom = h.get("momentum", 0.0)
            if mom:
                state = [mom * b + g for b, g in zip(state, grads)]
                grads = state
            return [p - h["lr"] * g for p, g in zip(params, grads)], state
        (b1, b2), eps = h["betas"], h["eps"]
        t, ms, vs = state
        t = t + 1
        ms = [b1 * m + (1 - b1) * g for m, g in zip(ms, grads)]
        vs = [b2 * v + (1 - b2) * g * g for v, g in zip(vs, grads)]
        step_size = h["lr"] / (1 - b1 ** t)
        root_bc2 = jnp.sqrt(1 - b2 ** t)
        params = [p - step_size * m / (jnp.sqrt(v) / root_bc2 + eps) for p, m, v in zip(params, ms, vs)]
        return params, (t, ms, vs)

    def train(params, state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        params, state = update(params, grads, state)
        return params, state, loss

    train = jax.jit(train, donate_argnums=(0, 1))
    params = [jnp.asarray(np.array(w, dtype=np.float32)) for w in weights]
    zeros = [jnp.zeros_like(p) for p in params]
    if wl.optimizer == "adam":
        state = (jnp.zeros((), jnp.float32), zeros, [jnp.zeros_like(p) for p in params])
    else:
        state = zeros
    box = {"params": params, "state": state}
    xb, yb = jax.device_put(x), jax.device_put(y.astype(np.int32) if y.dtype == np.int64 else y)

    def run():
        box["params"], box["state"], loss = train(box["params"], box["state"], xb, yb)
        return loss

    return Step(run=run, sync=lambda out: jax.block_until_ready((out, box["params"], box["state"])))


MODES = {
    m.name: m
    for m in [
        Mode("gradc-eager", gradc_eager, about="gradc eager autograd on NumPy"),
        Mode("gradc-compiled", gradc_compiled, about="gradc.compile(step) on its default backend"),
        Mode("gradc-compiled-run", gradc_compiled_run, about="the compiled step's run(k, xs, ys): k steps per call"),
        Mode("torch-eager", torch_eager, "torch", "PyTorch CPU eager, 2 threads (--threads)"),
        Mode("jax-jit", jax_jit, "jax", "jax.jit of a functional step, hand-written optimizer, waits per window"),
        Mode("numpy", numpy_step, about="hand-written vectorized float32 NumPy step"),
    ]
}
