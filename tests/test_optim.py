"""gradc.optim against torch.optim: identical parameters, gradients and hyper-parameters
must give the same parameters and optimizer state after every step."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import gradc
from gradc import optim

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), (2, 3, 2)]
TOL = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=2e-6, atol=1e-7)}


def make_params(rng, dtype="float64", shapes=SHAPES):
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gp = [gradc.tensor(a.copy(), requires_grad=True) for a in arrays]
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return gp, tp


def set_grads(rng, gp, tp, missing=()):
    """Same random gradient on both sides; parameters listed in `missing` get none."""
    for i, (g, t) in enumerate(zip(gp, tp)):
        if i in missing:
            g.grad, t.grad = None, None
            continue
        a = rng.standard_normal(tuple(t.shape)).astype(str(t.dtype).split(".")[-1])
        g.grad, t.grad = gradc.tensor(a.copy()), torch.tensor(a.copy())


def np_of(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x.detach()._data)


def assert_state_equal(g_opt, t_opt, tol):
    gs, ts = g_opt.state_dict()["state"], t_opt.state_dict()["state"]
    assert sorted(gs) == sorted(ts), f"state indices {sorted(gs)} vs torch {sorted(ts)}"
    for i in ts:
        assert sorted(gs[i]) == sorted(ts[i]), f"state names of param {i}"
        for name, tv in ts[i].items():
            gv = gs[i][name]
            assert str(gv.dtype).split(".")[-1] == str(tv.dtype).split(".")[-1], f"dtype of state {name}"
            np.testing.assert_allclose(np_of(gv), np_of(tv), err_msg=f"state[{i}][{name!r}]", **tol)


def assert_params_equal(gp, tp, tol):
    for i, (g, t) in enumerate(zip(gp, tp)):
        np.testing.assert_allclose(np_of(g), np_of(t), err_msg=f"param {i}", **tol)


def run_both(g_cls, t_cls, kwargs, steps=6, dtype="float64", seed=0, missing_at=None):
    rng = np.random.default_rng(seed)
    gp, tp = make_params(rng, dtype)
    g_opt, t_opt = g_cls(gp, **kwargs), t_cls(tp, **kwargs)
    for k in range(steps):
        set_grads(rng, gp, tp, missing=(missing_at or {}).get(k, ()))
        g_opt.step()
        t_opt.step()
        assert_params_equal(gp, tp, TOL[dtype])
        assert_state_equal(g_opt, t_opt, TOL[dtype])
    return gp, tp, g_opt, t_opt


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, momentum=0.5, weight_decay=0.05, nesterov=True, maximize=True),
    dict(lr=0.2, momentum=0.9, dampening=0.5, weight_decay=0.01, maximize=True),
]
ADAM_CASES = [
    dict(),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6),
    dict(lr=0.01, betas=(0.0, 0.99), amsgrad=True),
    dict(lr=0.01, maximize=True, amsgrad=True, weight_decay=0.05),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
]
ADAMW_CASES = [dict(), dict(lr=0.01, weight_decay=0.1, amsgrad=True), dict(lr=0.02, maximize=True, betas=(0.8, 0.95))]
ALL_CASES = (
    [("SGD", c) for c in SGD_CASES] + [("Adam", c) for c in ADAM_CASES] + [("AdamW", c) for c in ADAMW_CASES]
)


def _ids(cases):
    return [f"{name}-" + ",".join(f"{k}={v}" for k, v in c.items()) for name, c in cases]


@pytest.mark.parametrize("name,kwargs", ALL_CASES, ids=_ids(ALL_CASES))
def test_steps_match_torch_float64(name, kwargs):
    run_both(getattr(optim, name), getattr(torch.optim, name), kwargs, steps=8)


@pytest.mark.parametrize("name,kwargs", ALL_CASES[::2], ids=_ids(ALL_CASES[::2]))
def test_steps_match_torch_float32(name, kwargs):
    run_both(getattr(optim, name), getattr(torch.optim, name), kwargs, steps=8, dtype="float32")


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01, amsgrad=True))])
def test_params_without_grad_are_skipped(name, kwargs):
    """A parameter with grad None is not updated and gets no state until it has a gradient."""
    run_both(getattr(optim, name), getattr(torch.optim, name), kwargs, steps=5, missing_at={0: (1,), 1: (1, 2), 3: (0,)})


def test_update_is_in_place():
    """Parameters and state are written in place, so a traced step can mark them as updated."""
    rng = np.random.default_rng(1)
    gp, tp = make_params(rng)
    opt = optim.Adam(gp, lr=0.01, amsgrad=True)
    set_grads(rng, gp, tp)
    opt.step()
    before = {id(p): dict(opt.state[p]) for p in gp}
    versions = [p._version[0] for p in gp]
    set_grads(rng, gp, tp)
    opt.step()
    for p, v in zip(gp, versions):
        assert p._version[0] > v
        assert all(opt.state[p][k] is t for k, t in before[id(p)].items())
        assert p.grad_fn is None and p.requires_grad


def test_param_groups_with_different_options():
    rng = np.random.default_rng(2)
    gp, tp = make_params(rng)

    def groups(ps):
        return [{"params": ps[:1], "lr": 0.3, "momentum": 0.5}, {"params": ps[1:], "weight_decay": 0.1}]

    g_opt = optim.SGD(groups(gp), lr=0.05, momentum=0.9)
    t_opt = torch.optim.SGD(groups(tp), lr=0.05, momentum=0.9)
    for g_group, t_group in zip(g_opt.param_groups, t_opt.param_groups):
        for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
            assert g_group[k] == t_group[k], k
    for _ in range(4):
        set_grads(rng, gp, tp)
        g_opt.step()
        t_opt.step()
    assert_params_equal(gp, tp, TOL["float64"])
    assert_state_equal(g_opt, t_opt, TOL["float64"])
    assert g_opt.state_dict()["param_groups"][1]["params"] == t_opt.state_dict()["param_groups"][1]["params"] == [1, 2]


def test_add_param_group_and_named_params():
    rng = np.random.default_rng(3)
    gp, _ = make_params(rng)
    opt = optim.Adam([("a", gp[0])], lr=0.1)
    opt.add_param_group({"params": [("b", gp[1]), ("c", gp[2])], "lr": 0.5})
    assert [g["param_names"] for g in opt.param_groups] == [["a"], ["b", "c"]]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [("d", gp[0])]})


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1)),
                                         ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
                                         ("AdamW", dict(lr=0.01))])
def test_state_dict_round_trip(name, kwargs):
    """Save after 3 steps (through gradc.save), load into a fresh optimizer on copies of the
    parameters, continue: equal to the uninterrupted run."""
    cls = getattr(optim, name)
    rng = np.random.default_rng(4)
    gp, tp = make_params(rng)
    opt = cls(gp, **kwargs)
    grads = [[rng.standard_normal(p.shape) for p in gp] for _ in range(6)]

    def step(o, ps, gs):
        for p, g in zip(ps, gs):
            p.grad = gradc.tensor(g)
        o.step()

    for gs in grads[:3]:
        step(opt, gp, gs)
    buf = io.BytesIO()
    gradc.save(opt.state_dict(), buf)
    buf.seek(0)
    copies = [gradc.tensor(np_of(p).copy(), requires_grad=True) for p in gp]
    resumed = cls(copies, lr=123.0)  # options come from the state dict
    resumed.load_state_dict(gradc.load(buf))
    assert resumed.param_groups[0]["lr"] == kwargs["lr"]
    for gs in grads[3:]:
        step(opt, gp, gs)
        step(resumed, copies, gs)
    assert_params_equal(copies, gp, dict(rtol=0, atol=0))
    for p, q in zip(gp, copies):
        for k, v in opt.state[p].items():
            np.testing.assert_array_equal(np_of(resumed.state[q][k]), np_of(v), err_msg=k)


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))])
def test_state_dicts_exchange_with_torch(name, kwargs):
    """gradc's state dict has PyTorch's layout: torch can load it and vice versa, and training continues equal."""
    g_cls, t_cls = getattr(optim, name), getattr(torch.optim, name)
    rng = np.random.default_rng(5)
    gp, tp = make_params(rng)
    g_opt, t_opt = g_cls(gp, **kwargs), t_cls(tp, **kwargs)
    for _ in range(3):
        set_grads(rng, gp, tp)
        g_opt.step()
        t_opt.step()
    g_sd, t_sd = g_opt.state_dict(), t_opt.state_dict()
    assert [g["params"] for g in g_sd["param_groups"]] == [g["params"] for g in t_sd["param_groups"]]
    for gg, tg in zip(g_sd["param_groups"], t_sd["param_groups"]):
        assert {k: tg[k] for k in gg} == gg, "gradc's group options are a subset of torch's, same values"

    to_torch = {"state": {i: {k: torch.tensor(np_of(v).copy()) for k, v in s.items()} for i, s in g_sd["state"].items()},
                "param_groups": g_sd["param_groups"]}
    to_gradc = {"state": {i: {k: gradc.tensor(np_of(v).copy()) for k, v in s.items()} for i, s in t_sd["state"].items()},
                "param_groups": t_sd["param_groups"]}
    gp2 = [gradc.tensor(np_of(p).copy(), requires_grad=True) for p in tp]
    tp2 = [torch.tensor(np_of(p).copy(), requires_grad=True) for p in gp]
    g_opt2, t_opt2 = g_cls(gp2, lr=1.0), t_cls(tp2, lr=1.0)
    g_opt2.load_state_dict(to_gradc)
    t_opt2.load_state_dict(to_torch)
    for _ in range(3):
        set_grads(rng, gp, tp)
        for a, b, c, d in zip(gp, gp2, tp, tp2):
            b.grad, d.grad = gradc.tensor(np_of(a.grad).copy()), torch.tensor(np_of(c.grad).copy())
        for o in (g_opt, t_opt, g_opt2, t_opt2):
            o.step()
    assert_params_equal(gp2, tp, TOL["float64"])
    assert_params_equal(gp, tp2, TOL["float64"])
    assert_state_equal(g_opt2, t_opt, TOL["float64"])


def test_load_state_dict_casts_state_and_converts_number_steps():
    p = gradc.zeros(3, dtype=gradc.float32, requires_grad=True)
    opt = optim.Adam([p])
    sd = {"state": {0: {"step": 4, "exp_avg": gradc.ones(3, dtype=gradc.float64),
                        "exp_avg_sq": gradc.ones(3, dtype=gradc.float64)}},
          "param_groups": [dict(opt.state_dict()["param_groups"][0])]}
    opt.load_state_dict(sd)
    st = opt.state[p]
    assert st["exp_avg"].dtype == gradc.float32 and st["exp_avg_sq"].dtype == gradc.float32
    assert isinstance(st["step"], gradc.Tensor) and st["step"].item() == 4.0


def test_load_state_dict_mismatch_errors():
    a, b = gradc.zeros(2, requires_grad=True), gradc.zeros(2, requires_grad=True)
    sd = optim.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        optim.SGD([a], lr=0.1).load_state_dict(sd)


def test_zero_grad():
    p = gradc.ones(3, requires_grad=True)
    (p * 2).sum().backward()
    opt = optim.SGD([p], lr=0.1)
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and not p.grad.requires_grad
    np.testing.assert_array_equal(np_of(p.grad), np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None
    opt.zero_grad()  # nothing to do: no error
    (p * 3).sum().backward()
    np.testing.assert_array_equal(np_of(p.grad), np.full(3, 3.0, np.float32))


def test_step_with_closure():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3))
    gw, tw = gradc.tensor(x.copy(), requires_grad=True), torch.tensor(x.copy(), requires_grad=True)
    g_opt, t_opt = optim.SGD([gw], lr=0.1, momentum=0.9), torch.optim.SGD([tw], lr=0.1, momentum=0.9)

    def closure(w, opt):
        def f():
            opt.zero_grad()
            loss = (w * w).sum()
            loss.backward()
            return loss
        return f

    for _ in range(3):
        with gradc.no_grad():  # the closure must still record a graph
            lg = g_opt.step(closure(gw, g_opt))
        lt = t_opt.step(closure(tw, t_opt))
        assert abs(lg.item() - lt.item()) <= 1e-12 * abs(lt.item())
    assert_params_equal([gw], [tw], TOL["float64"])
    assert optim.SGD([gw], lr=0.1).step() is None


@pytest.mark.parametrize("make,match,exc", [
    (lambda lib, p: lib.optim.SGD([], lr=0.1), "empty parameter list", ValueError),
    (lambda lib, p: lib.optim.SGD(p, lr=0.1), "iterable of Tensors or dicts", TypeError),
    (lambda lib, p: lib.optim.SGD([{"params": {p}}], lr=0.1), "ordered collections", TypeError),
    (lambda lib, p: lib.optim.SGD([p, 1.0], lr=0.1), "can only optimize Tensors", TypeError),
    (lambda lib, p: lib.optim.SGD([p * 2], lr=0.1), "can't optimize a non-leaf Tensor", ValueError),
    (lambda lib, p: lib.optim.SGD([p], lr=-0.1), "Invalid learning rate: -0.1", ValueError),
    (lambda lib, p: lib.optim.SGD([p], lr=0.1, momentum=-1), "Invalid momentum value", ValueError),
    (lambda lib, p: lib.optim.SGD([p], lr=0.1, weight_decay=-1), "Invalid weight_decay value", ValueError),
    (lambda lib, p: lib.optim.SGD([p], lr=0.1, nesterov=True), "Nesterov momentum requires", ValueError),
    (lambda lib, p: lib.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov", ValueError),
    (lambda lib, p: lib.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1), "more than one parameter group", ValueError),
    (lambda lib, p: lib.optim.Adam([p], lr=-1.0), "Invalid learning rate", ValueError),
    (lambda lib, p: lib.optim.Adam([p], eps=-1.0), "Invalid epsilon value", ValueError),
    (lambda lib, p: lib.optim.Adam([p], betas=(1.0, 0.999)), "Invalid beta parameter at index 0", ValueError),
    (lambda lib, p: lib.optim.AdamW([p], betas=(0.9, -0.1)), "Invalid beta parameter at index 1", ValueError),
    (lambda lib, p: lib.optim.Adam([p], weight_decay=-0.1), "Invalid weight_decay value", ValueError),
    (lambda lib, p: lib.optim.Adam([p], betas=(0, 0.5)), "betas must be either both floats", ValueError),
])
def test_errors_like_torch(make, match, exc):
    """Same exception type and message start as torch (checked on the torch side too)."""
    with pytest.raises(exc, match=match):
        make(gradc, gradc.zeros(2, requires_grad=True))
    with pytest.raises(exc, match=match):
        make(torch, torch.zeros(2, requires_grad=True))


def test_duplicate_params_warn():
    p = gradc.zeros(2, requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([p, p], lr=0.1)


# ------------------------------------------------------------------ schedulers
SCHEDULERS = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
]


def _two_group_opts(lib):
    ps = [lib.zeros(2, requires_grad=True) for _ in range(2)]
    return lib.optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.03}], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("name,kwargs", SCHEDULERS, ids=[f"{n}-{k}" for n, k in SCHEDULERS])
def test_scheduler_lrs_equal_torch(name, kwargs):
    g_opt, t_opt = _two_group_opts(gradc), _two_group_opts(torch)
    g_s = getattr(optim.lr_scheduler, name)(g_opt, **kwargs)
    t_s = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    assert g_s.get_last_lr() == t_s.get_last_lr() and g_s.last_epoch == t_s.last_epoch == 0
    for _ in range(30):
        g_opt.step()
        t_opt.step()
        g_s.step()
        t_s.step()
        assert g_s.get_last_lr() == t_s.get_last_lr(), f"epoch {t_s.last_epoch}"
        assert [g["lr"] for g in g_opt.param_groups] == [g["lr"] for g in t_opt.param_groups]
        assert g_s.last_epoch == t_s.last_epoch
    assert sorted(g_s.state_dict()) == sorted(t_s.state_dict())


@pytest.mark.parametrize("name,kwargs", SCHEDULERS[::2])
def test_scheduler_resume_and_closed_form(name, kwargs):
    cls = getattr(optim.lr_scheduler, name)
    opt = _two_group_opts(gradc)
    s = cls(opt, **kwargs)
    for _ in range(12):
        opt.step()
        s.step()
    opt2 = _two_group_opts(gradc)
    opt2.load_state_dict(opt.state_dict())
    s2 = cls(opt2, **kwargs, last_epoch=s.last_epoch)
    s2.load_state_dict(s.state_dict())
    for _ in range(5):
        s.step()
        s2.step()
        assert s2.get_last_lr() == s.get_last_lr()
    t_opt = _two_group_opts(torch)
    t_s = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    with pytest.warns(UserWarning, match="epoch parameter"):
        s.step(20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_s.step(20)
    assert s.get_last_lr() == t_s.get_last_lr()


def test_scheduler_drives_the_optimizer():
    """The optimizer reads group['lr'] on every step, so the schedule shows in the parameters."""
    rng = np.random.default_rng(7)
    gp, tp = make_params(rng)
    g_opt, t_opt = optim.Adam(gp, lr=0.05), torch.optim.Adam(tp, lr=0.05)
    g_s = optim.lr_scheduler.CosineAnnealingLR(g_opt, T_max=5)
    t_s = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=5)
    for _ in range(8):
        set_grads(rng, gp, tp)
        g_opt.step()
        t_opt.step()
        g_s.step()
        t_s.step()
    assert_params_equal(gp, tp, TOL["float64"])


def test_scheduler_warnings_and_errors():
    opt = _two_group_opts(gradc)
    s = optim.lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match=r"before `optimizer.step\(\)`"):
        s.step()
    with pytest.warns(UserWarning, match="get_last_lr"):
        s.get_lr()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        optim.lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(KeyError, match="initial_lr"):
        optim.lr_scheduler.CosineAnnealingLR(_two_group_opts(gradc), T_max=3, last_epoch=4)


def test_step_counter_dtype_follows_default_dtype():
    """Like PyTorch, 'step' is float32 unless the default dtype is float64."""
    for default in ("float32", "float64"):
        prev_g, prev_t = gradc.get_default_dtype(), torch.get_default_dtype()
        gradc.set_default_dtype(getattr(gradc, default))
        torch.set_default_dtype(getattr(torch, default))
        try:
            _, _, g_opt, t_opt = run_both(optim.Adam, torch.optim.Adam, dict(lr=0.01), steps=2)
            g_step, t_step = next(iter(g_opt.state.values()))["step"], next(iter(t_opt.state.values()))["step"]
            assert str(g_step.dtype).split(".")[-1] == str(t_step.dtype).split(".")[-1] == default
        finally:
            gradc.set_default_dtype(prev_g)
            torch.set_default_dtype(prev_t)
