"""End to end: train the same MLP from the same initial weights in gradc and in PyTorch,
with each optimizer, and compare the loss after every step."""
from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn  # noqa: F401 - reached as lib.nn
import gradc.optim  # noqa: F401 - reached as lib.optim

torch = pytest.importorskip("torch")

SIZES = [8, 16, 16, 4]
STEPS = 50
CASES = {
    "sgd": ("SGD", dict(lr=0.2), None),
    "sgd-momentum-nesterov-wd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), None),
    "sgd-momentum-cosine": ("SGD", dict(lr=0.1, momentum=0.8, dampening=0.1), ("CosineAnnealingLR", dict(T_max=20))),
    "adam": ("Adam", dict(lr=0.01), None),
    "adam-amsgrad": ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=1e-3), None),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.05), ("StepLR", dict(step_size=10, gamma=0.5))),
}
TOL = {"float32": 1e-5, "float64": 1e-12}


def initial_weights(rng, dtype):
    ws = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / np.sqrt(n_in)
        ws += [rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype), rng.uniform(-bound, bound, n_out).astype(dtype)]
    return ws


def batches(rng, dtype, n=4, size=16):
    """Random inputs labelled by a random linear teacher, so the task is learnable."""
    teacher = rng.standard_normal((SIZES[0], SIZES[-1]))
    xs = [rng.standard_normal((size, SIZES[0])).astype(dtype) for _ in range(n)]
    return [(x, np.argmax(x @ teacher, axis=1)) for x in xs]


@pytest.fixture(autouse=True, scope="module")
def torch_single_thread():
    """Tiny matrices: torch's thread pool only adds overhead (and noise) here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(lib, weights):
    """The MLP as lib.nn modules (gradc.nn or torch.nn), holding copies of `weights`."""
    nn = lib.nn
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.ReLU(), nn.Linear(SIZES[1], SIZES[2]), nn.Tanh(),
                          nn.Linear(SIZES[2], SIZES[3]))
    if weights[0].dtype == np.float64:
        model = model.double()
    model.load_state_dict({name: lib.tensor(w.copy()) for (name, _), w in zip(model.named_parameters(), weights)})
    return model


def train(lib, weights, data, opt_name, kwargs, sched):
    model = make_model(lib, weights)
    criterion = lib.nn.CrossEntropyLoss()
    opt = getattr(lib.optim, opt_name)(model.parameters(), **kwargs)
    scheduler = getattr(lib.optim.lr_scheduler, sched[0])(opt, **sched[1]) if sched else None
    losses = []
    for step in range(STEPS):
        x, y = data[step % len(data)]
        loss = criterion(model(lib.tensor(x)), lib.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return np.array(losses), [np.array(p.detach().numpy()) for p in model.parameters()]


# every case in float32; in float64 (tighter) the cases that exercise the most options
RUNS = [(c, "float32") for c in CASES] + [(c, "float64") for c in ("sgd-momentum-nesterov-wd", "adam-amsgrad", "adamw")]


@pytest.mark.parametrize("case,dtype", RUNS, ids=[f"{c}-{d}" for c, d in RUNS])
def test_losses_match_torch(case, dtype):
    opt_name, kwargs, sched = CASES[case]
    rng = np.random.default_rng(0)
    weights, data = initial_weights(rng, dtype), batches(rng, dtype)
    g_losses, g_params = train(gradc, weights, data, opt_name, kwargs, sched)
    t_losses, t_params = train(torch, weights, data, opt_name, kwargs, sched)
    np.testing.assert_allclose(g_losses, t_losses, rtol=TOL[dtype], err_msg="loss per step")
    assert t_losses[-8:].mean() < 0.9 * t_losses[:4].mean(), "the run should actually train"
    for g, t in zip(g_params, t_params):
        assert g.dtype == t.dtype
        np.testing.assert_allclose(g, t, rtol=10 * TOL[dtype], atol=10 * TOL[dtype], err_msg="final weights")
