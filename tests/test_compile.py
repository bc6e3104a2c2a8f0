"""gradc.compile on native code: whole training steps against eager gradc (every
activation, loss and optimizer family, float32 and float64), the compiled module,
what recompiles and what does not, runtime learning rates, bad inputs that change
nothing, calls from several threads, the disk cache of object code, GRADC_DUMP
and GRADC_LOG."""
import builtins
import copy
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.nn.functional as F
import gradc.optim as optim
from gradc import compiler
from gradc.codegen import compile_graph, jit


@pytest.fixture(scope="module", autouse=True)
def object_cache(tmp_path_factory):
    """A disk cache private to this file: graphs that recur across tests compile once."""
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("gradc-cache")
        mp.setenv("GRADC_CACHE_DIR", str(d))
        for var in ("GRADC_CACHE", "GRADC_DUMP", "GRADC_LOG", "GRADC_BACKEND"):
            mp.delenv(var, raising=False)
        yield d


def arrays(model, optimizer):
    """Copies of every parameter and optimizer state array (to check bitwise that nothing changed)."""
    out = [p.detach().numpy().copy() for p in model.parameters()]
    for st in optimizer.state.values():
        out += [np.array(t.numpy(), copy=True) for t in st.values() if isinstance(t, gradc.Tensor)]
    return out


def assert_rel(got, want, tol, what):
    """|got - want| <= tol * max|want|: relative to the tensor's scale."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.abs(want).max(initial=0.0), 1e-30)
    err = np.abs(got - want).max(initial=0.0) / scale
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


# ----------------------------------------------------------------------------- every family vs eager
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
LOSSES = {  # name: (outputs, criterion, targets(rng, batch, outputs))
    "mse": (3, lambda: nn.MSELoss(), lambda r, n, k: r.standard_normal((n, k))),
    "l1": (3, lambda: nn.L1Loss(), lambda r, n, k: r.standard_normal((n, k))),
    "ce_smooth": (4, lambda: nn.CrossEntropyLoss(label_smoothing=0.1), lambda r, n, k: r.integers(0, k, n)),
    "nll_log_softmax": (4, lambda: (lambda out, y: F.nll_loss(F.log_softmax(out, dim=1), y)),
                        lambda r, n, k: r.integers(0, k, n)),
    "bce_logits": (3, lambda: nn.BCEWithLogitsLoss(), lambda r, n, k: r.integers(0, 2, (n, k)).astype(float)),
    "bce_sigmoid": (3, lambda: (lambda out, y: nn.BCELoss()(gradc.sigmoid(out), y)),
                    lambda r, n, k: r.integers(0, 2, (n, k)).astype(float)),
}
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1),
    "sgd_nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "sgd_weight_decay": lambda p: optim.SGD(p, lr=0.1, weight_decay=1e-2),
    "adam": lambda p: optim.Adam(p, lr=1e-2),
    "adam_amsgrad": lambda p: optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda p: optim.AdamW(p, lr=1e-2),
}


def mlp_step(act, loss, opt, dtype, seed=0):
    """An MLP 5-8-8-k with `act`, and the seed's loop body with `loss` and `opt` as a function."""
    gradc.manual_seed(seed)
    k, make_criterion, _ = LOSSES[loss]
    model = nn.Sequential(nn.Linear(5, 8), ACTIVATIONS[act](), nn.Linear(8, 8), ACTIVATIONS[act](),
                          nn.Linear(8, k)).to(dtype)
    criterion = make_criterion()
    optimizer = OPTIMIZERS[opt](model.parameters())

    def step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return types.SimpleNamespace(model=model, optimizer=optimizer, step=step)


def batches(loss, dtype, n=4, batch=6, seed=1):
    rng = np.random.default_rng(seed)
    k, _, targets = LOSSES[loss]
    out = []
    for _ in range(n):
        y = targets(rng, batch, k)
        y = gradc.tensor(y) if y.dtype.kind == "i" else gradc.tensor(y, dtype=dtype)
        out.append((gradc.tensor(rng.standard_normal((batch, 5)), dtype=dtype), y))
    return out


CONFIGS = [  # each activation, loss and optimizer at least once
    ("tanh", "mse", "sgd"),
    ("relu", "ce_smooth", "sgd_momentum"),
    ("gelu", "nll_log_softmax", "sgd_nesterov"),
    ("sigmoid", "bce_logits", "sgd_weight_decay"),
    ("tanh", "l1", "adam"),
    ("relu", "bce_sigmoid", "adam_amsgrad"),
    ("gelu", "mse", "adamw"),
    ("sigmoid", "ce_smooth", "adam"),
]
F64_CONFIGS = [CONFIGS[1], CONFIGS[2], CONFIGS[4], CONFIGS[5]]


def run_against_eager(act, loss, opt, dtype, tol, steps=100, compiled_first_step=False):
    eager, comp = mlp_step(act, loss, opt, dtype), mlp_step(act, loss, opt, dtype)
    compiled = gradc.compile(comp.step)
    data = batches(loss, dtype)
    for i in range(steps):
        x, y = data[i % len(data)]
        le = eager.step(x, y)
        # optimizers with state: unless asked, the first step (which creates the state) runs eagerly
        # on both sides, so the compiled side starts from eager state and compiles one version
        lc = compiled(x, y) if i or compiled_first_step or opt in ("sgd", "sgd_weight_decay") else comp.step(x, y)
        assert_rel(lc.item(), le.item(), tol, f"loss at step {i}")
        for (name, pe), pc in zip(eager.model.named_parameters(), comp.model.parameters()):
            assert_rel(pc.detach().numpy(), pe.detach().numpy(), tol, f"{name} after step {i}")
    for pe, pc in zip(eager.model.parameters(), comp.model.parameters()):
        for key, te in eager.optimizer.state[pe].items():
            assert_rel(comp.optimizer.state[pc][key].numpy(), te.numpy(), tol, f"optimizer state {key}")
    return compiled


@pytest.mark.parametrize("act,loss,opt", CONFIGS, ids=["-".join(c) for c in CONFIGS])
def test_float32_steps_match_eager(act, loss, opt):
    compiled = run_against_eager(act, loss, opt, gradc.float32, 1e-5)
    assert compiled.versions == 1


@pytest.mark.parametrize("act,loss,opt", F64_CONFIGS, ids=["-".join(c) for c in F64_CONFIGS])
def test_float64_steps_match_eager(act, loss, opt):
    run_against_eager(act, loss, opt, gradc.float64, 1e-10)


def test_first_step_creates_optimizer_state_then_steady_version():
    compiled = run_against_eager("relu", "ce_smooth", "adam", gradc.float32, 1e-5, steps=20, compiled_first_step=True)
    assert compiled.versions == 2  # the step that creates Adam's state, then the steady state


def test_the_step_that_creates_state_runs_once_on_the_interpreter():
    t = mlp_step("tanh", "mse", "sgd_momentum", gradc.float32)
    compiled = gradc.compile(t.step)
    (x, y), = batches("mse", gradc.float32, n=1)
    compiled(x, y)
    first = compiled._latest().executable
    assert isinstance(first, compiler.InterpretedGraph) and t.optimizer.state
    with pytest.raises(RuntimeError, match="ran once on the reference interpreter.*call the step again"):
        compiled.llvm_ir()
    compiled(x, y)
    assert compiled.versions == 2 and not isinstance(compiled._latest().executable, compiler.InterpretedGraph)
    assert "define" in compiled.llvm_ir()


def test_compiled_module_forward_and_gradients_match_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_DUMP", str(tmp_path))
    gradc.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 3)).double()
    fast = gradc.compile(model)
    x = gradc.randn(4, 5, dtype=gradc.float64)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_c = fast(xc)
    (out_c * out_c).sum().backward()
    grads_c = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    out_e = model(xe)
    (out_e * out_e).sum().backward()
    np.testing.assert_allclose(out_c.detach().numpy(), out_e.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xc.grad.numpy(), xe.grad.numpy(), rtol=1e-12)
    for gc_, p in zip(grads_c, model.parameters()):
        np.testing.assert_allclose(gc_, p.grad.numpy(), rtol=1e-12)
    with gradc.no_grad():
        assert fast(x).grad_fn is None
    assert len(list(fast.parameters())) == 4  # attributes pass through to the module
    with pytest.raises(RuntimeError, match=r"\(4x6 and 5x7\).*traced Sequential, in layer 0: Linear\(in_features=5, "):
        fast(gradc.randn(4, 6, dtype=gradc.float64))
    dumped = {p.name for p in tmp_path.iterdir()}
    assert {"sequential.traced.ir", "sequential.optimized.dot", "sequential.backward.ir", "sequential.opt.ll",
            "sequential.backward.s"} <= dumped


# ----------------------------------------------------------------------------- runtime scalars, versions
def linreg(dtype=gradc.float64, seed=0, momentum=0.0, bias_lr=None):
    """The seed's linear regression (features 3 -> 1), its step as a plain function
    (with `bias_lr`, the bias in a param group of its own)."""
    gradc.manual_seed(seed)

    class LinearRegression(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 1)

        def forward(self, x):
            return self.linear(x)

    model = LinearRegression().to(dtype)
    criterion = nn.MSELoss()
    lin = model.linear
    groups = model.parameters() if bias_lr is None else [{"params": [lin.weight]}, {"params": [lin.bias], "lr": bias_lr}]
    optimizer = optim.SGD(groups, lr=0.01, momentum=momentum)

    def step(x, y):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return types.SimpleNamespace(model=model, criterion=criterion, optimizer=optimizer, step=step)


def data(n, dtype=np.float64, seed=0, features=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(dtype)
    return x, (x.sum(1, keepdims=True) * 2 + 1).astype(dtype)


class Twins:
    """The same model trained eagerly and compiled, compared after every step."""

    def __init__(self, make=linreg, **kw):
        self.eager, self.comp = make(**kw), make(**kw)
        self.compiled = gradc.compile(self.comp.step)

    def both(self, change):
        change(self.eager)
        change(self.comp)

    def step(self, x, y, tol=1e-12, tensors=False):
        args = (gradc.tensor(x), gradc.tensor(y)) if tensors else (x, y)
        le, lc = self.eager.step(gradc.tensor(x), gradc.tensor(y)), self.compiled(*args)
        assert_rel(lc.item(), le.item(), tol, "loss")
        for pe, pc in zip(self.eager.model.parameters(), self.comp.model.parameters()):
            assert_rel(pc.detach().numpy(), pe.detach().numpy(), tol, "parameter")
        return lc


def test_lr_and_step_lr_take_effect_without_recompiling():
    eager, comp = linreg(momentum=0.9), linreg(momentum=0.9)
    model, criterion, optimizer = comp.model, comp.criterion, comp.optimizer

    @gradc.compile
    def train_step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    sched_e, sched_c = optim.lr_scheduler.StepLR(eager.optimizer, 3, 0.5), optim.lr_scheduler.StepLR(optimizer, 3, 0.5)
    x, y = data(10)
    for i in range(12):
        if i == 7:
            for opt in (eager.optimizer, optimizer):
                opt.param_groups[0]["lr"] = 0.02
        le, lc = eager.step(gradc.tensor(x), gradc.tensor(y)), train_step(x, y)
        assert_rel(lc.item(), le.item(), 1e-12, f"loss at step {i}")
        sched_e.step()
        sched_c.step()
    for pe, pc in zip(eager.model.parameters(), model.parameters()):
        assert_rel(pc.detach().numpy(), pe.detach().numpy(), 1e-12, "parameter")
    assert train_step.versions == 2  # creating the momentum buffers, then the steady state
    assert "%lr: f64[] scalar" in str(train_step.ir("traced"))


def test_each_param_group_reads_its_own_lr():
    eager, comp = linreg(bias_lr=0.1), linreg(bias_lr=0.1)
    model, criterion, optimizer = comp.model, comp.criterion, comp.optimizer

    @gradc.compile(passes="simplify,cse,dce")
    def train_step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    x, y = data(10)
    for i in range(6):
        if i == 3:
            for s in (eager, comp):
                s.optimizer.param_groups[1]["lr"] = 0.3
        le, lc = eager.step(gradc.tensor(x), gradc.tensor(y)), train_step(x, y)
        assert_rel(lc.item(), le.item(), 1e-12, f"loss at step {i}")
    for pe, pc in zip(eager.model.parameters(), model.parameters()):
        assert_rel(pc.detach().numpy(), pe.detach().numpy(), 1e-12, "parameter")
    assert train_step.versions == 1
    assert {"lr.0", "lr.1"} <= {v.name for v in train_step.ir("traced").inputs}


def test_recompile_on_new_shapes_says_why(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_LOG", "recompiles")
    t = Twins()
    t.step(*data(10))
    assert capsys.readouterr().err == ""  # the first compile is not a recompile
    t.step(*data(7))
    err = capsys.readouterr().err
    assert "recompiling step (version 2) because x: f64[10,3] -> f64[7,3]; y: f64[10,1] -> f64[7,1]" in err
    t.step(*data(10))  # the first version again: no compile, no message
    assert capsys.readouterr().err == "" and t.compiled.versions == 2


def test_version_limit_names_the_change_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(compiler, "MAX_VERSIONS", 2)
    t = Twins()
    t.step(*data(4))
    t.step(*data(5))
    before = arrays(t.comp.model, t.comp.optimizer)
    with pytest.raises(RuntimeError, match=r"compiled 2 times .* x: f64\[5,3\] -> f64\[6,3\].*Pad batches"):
        t.compiled(*data(6))
    for a, b in zip(before, arrays(t.comp.model, t.comp.optimizer)):
        np.testing.assert_array_equal(a, b)


def test_mode_and_attributes_recompile_only_when_they_change():
    t = Twins(momentum=0.9)
    x, y = data(8)
    t.step(x, y)
    t.step(x, y)
    assert t.compiled.versions == 2
    t.both(lambda s: s.model.eval())
    t.step(x, y)
    assert t.compiled.versions == 3
    t.both(lambda s: s.model.train())
    t.step(x, y)
    assert t.compiled.versions == 3  # back to the train-mode version
    t.both(lambda s: setattr(s.criterion, "reduction", "sum"))  # a plain attribute traced as a constant
    t.step(x, y)
    assert t.compiled.versions == 4
    t.both(lambda s: s.optimizer.param_groups[0].update(momentum=0.5))
    t.step(x, y)
    assert t.compiled.versions == 5
    t.both(lambda s: s.model.linear.bias.requires_grad_(False))
    t.step(x, y)
    t.step(x, y)
    assert t.compiled.versions == 6


def test_steady_calls_take_the_fast_path(monkeypatch):
    t = Twins(momentum=0.9)
    x, y = data(8)
    t.step(x, y)
    t.step(x, y)
    slow, select = [], t.compiled._select
    monkeypatch.setattr(t.compiled, "_select", lambda args: (slow.append(args), select(args)))
    for i in range(4):
        t.step(x, y, tensors=bool(i % 2))  # arrays or tensors alike
    t.both(lambda s: s.optimizer.param_groups[0].update(lr=0.05))  # as a scheduler does
    t.step(x, y)
    assert not slow
    t.both(lambda s: s.model.eval())
    t.step(x, y)
    assert len(slow) == 1
    assert f"[0] == {nn.module.changes[0]}" in t.compiled._guard.source  # modules: one count


@pytest.mark.parametrize("change", [
    lambda m: setattr(m.linear, "note", "x"),  # a new plain attribute
    lambda m: delattr(m.linear, "in_features"),
    lambda m: m.linear.register_buffer("scale", gradc.ones(1)),
    lambda m: m.linear._parameters.__setitem__("bias", m.linear._parameters["bias"]),  # a registry, directly
    lambda m: m.linear._parameters.pop("bias"),
    lambda m: m.linear._parameters.update({}),
    lambda m: m.linear._parameters.move_to_end("weight"),
    lambda m: m.linear._modules.setdefault("extra", nn.ReLU()),
    lambda m: m.eval(),
    lambda m: setattr(m, "linear", m.linear),  # the same child again
    lambda m: delattr(m, "linear"),
])
def test_every_change_to_a_module_leaves_the_fast_path(monkeypatch, change):
    t = Twins()
    x, y = data(8)
    t.step(x, y)
    t.step(x, y)
    slow, select = [], t.compiled._select
    monkeypatch.setattr(t.compiled, "_select", lambda args: (slow.append(args), select(args)))
    t.compiled(x, y)
    assert not slow
    change(t.comp.model)
    try:
        t.compiled(x, y)
    except Exception:
        pass  # a model that no longer runs: the slow path raised, as eager code would
    assert len(slow) == 1


def test_modules_the_step_does_not_read_change_freely(monkeypatch):
    t = Twins()
    x, y = data(8)
    t.step(x, y)
    t.step(x, y)
    slow, select = [], t.compiled._select
    monkeypatch.setattr(t.compiled, "_select", lambda args: (slow.append(args), select(args)))
    for _ in range(3):
        other = nn.Sequential(nn.Linear(3, 2), nn.ReLU())  # e.g. a loss module made in the loop
        other.append(nn.Identity())
        other.eval()
        other[0].note = 1
        t.step(x, y)
    assert not slow


def test_sequential_edits_and_plain_registries_leave_the_fast_path(monkeypatch):
    from collections import OrderedDict

    gradc.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    opt = optim.SGD(model.parameters(), lr=0.01)

    def step(x, y):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    compiled = gradc.compile(step)
    x, y = data(8)
    slow, select = [], compiled._select
    monkeypatch.setattr(compiled, "_select", lambda args: (slow.append(args), select(args)))
    # a registry that is not a Registry (as in a model pickled by an older gradc) is checked entry by entry
    plain = nn.Identity()
    plain.__dict__["_modules"] = OrderedDict()
    edits = [lambda: model.insert(1, nn.Identity()), lambda: model.__delitem__(1), lambda: model.append(plain),
             lambda: plain._modules.__setitem__("extra", nn.ReLU())]
    for edit in edits:
        compiled(x, y)
        compiled(x, y)
        calls = len(slow)
        edit()
        with gradc.no_grad():
            expected = nn.functional.mse_loss(model(gradc.tensor(x)), gradc.tensor(y)).item()
        np.testing.assert_allclose(compiled(x, y).item(), expected, rtol=1e-12)  # the edited model's loss
        assert len(slow) == calls + 1


def test_fast_path_reads_a_repeated_array_in_place_and_copies_other_arrays(monkeypatch):
    t = Twins(momentum=0.9)
    (x, y), (x2, y2) = data(8), data(8, seed=1)
    t.step(x, y)
    t.step(x, y)
    slow, select = [], t.compiled._select
    monkeypatch.setattr(t.compiled, "_select", lambda args: (slow.append(args), select(args)))
    x[1, 2] = 5.0  # the array bound as it is, changed in place
    t.step(x, y)
    t.step(x2, y2)  # other arrays: copied into the private buffers
    t.step(x, y)  # the first ones again, now copied too
    x[0, 0] = -3.0
    t.step(x, y)
    t.step(x2, y, tensors=True)
    assert not slow
    assert t.compiled.versions == 2


def test_an_argument_sharing_a_parameters_array_is_read_before_the_update():
    t = Twins()
    x, y = data(1)  # one sample: x has the weight's shape
    xe, xc = x.copy(), x.copy()
    t.step(xc, y)  # xc is bound as it is
    t.step(xc, y)
    t.eager.model.linear.weight.data = gradc.from_numpy(xe)  # now the weight's array too
    t.comp.model.linear.weight.data = gradc.from_numpy(xc)
    for _ in range(3):
        le, lc = t.eager.step(gradc.tensor(xe), gradc.tensor(y)), t.compiled(xc, y)
        assert_rel(lc.item(), le.item(), 1e-12, "loss")
        assert_rel(xc, xe, 1e-12, "the shared array")
    assert t.compiled.versions == 1


def test_replaced_arrays_and_state_are_bound_again_without_recompiling():
    t = Twins(momentum=0.9)
    x, y = data(8)
    t.step(x, y)
    saved = [copy.deepcopy(s.optimizer.state_dict()) for s in (t.eager, t.comp)]
    t.step(x, y)
    t.step(x, y)
    versions = t.compiled.versions

    def replace(s):
        s.model.linear.weight.data = gradc.tensor(np.full((1, 3), 0.25))  # a new array
        with gradc.no_grad():
            s.model.linear.bias.copy_(gradc.tensor([0.5], dtype=gradc.float64))  # in place

    t.both(replace)
    t.step(x, y)
    for s, sd in zip((t.eager, t.comp), saved):
        s.optimizer.load_state_dict(sd)  # new state tensors
    t.step(x, y)
    x[0, 0] = 9.0  # the same input array changed in place
    t.step(x, y)
    t.step(np.asfortranarray(x), y[::-1].copy()[::-1])  # other layouts
    assert t.compiled.versions == versions


def test_replacing_a_layer_or_a_global_model_is_seen():
    t = Twins()
    x, y = data(8)
    t.step(x, y)

    def new_layer(s):
        gradc.manual_seed(7)
        s.model.linear = nn.Linear(3, 1).double()  # the optimizer still holds the old parameters

    t.both(new_layer)
    t.step(x, y)
    t.step(x, y)
    assert t.compiled.versions == 2

    global MODEL, SCALE
    loss = gradc.compile(global_model_loss)
    for seed, scale in ((1, 1.0), (2, 1.0), (2, 3.0)):  # a script that rebinds its globals between calls
        gradc.manual_seed(seed)
        MODEL, SCALE = nn.Linear(3, 1).double(), scale
        want = global_model_loss(gradc.tensor(x), gradc.tensor(y)).item()
        np.testing.assert_allclose(loss(x, y).item(), want, rtol=1e-12)
    assert loss.versions == 2  # a new model of the same layout is bound; a new constant recompiles
    MODEL, SCALE = None, 1.0


MODEL, SCALE = None, 1.0


def global_model_loss(x, y):
    return F.mse_loss(MODEL(x), y) * SCALE


def scaled_loss(x, y):
    return F.mse_loss(MODEL(x), y) * abs(SCALE)  # `abs` is a builtin: unbound in this module


def test_a_global_that_shadows_a_builtin_or_a_deleted_model_leaves_the_fast_path(monkeypatch):
    global MODEL
    x, y = data(8)
    gradc.manual_seed(3)
    MODEL = nn.Linear(3, 1).double()
    loss = gradc.compile(scaled_loss)
    slow, select = [], loss._select
    monkeypatch.setattr(loss, "_select", lambda args: (slow.append(args), select(args)))
    try:
        loss(x, y)
        loss(x, y)
        globals()["abs"] = builtins.abs  # the module's own `abs` now (a function: then taken as traced)
        loss(x, y)
        assert len(slow) == 2
        del globals()["MODEL"]
        with pytest.raises(NameError, match="MODEL"):
            loss(x, y)
    finally:
        globals().pop("abs", None)
        MODEL = None


# ----------------------------------------------------------------------------- bad input
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(gradc.relu(self.fc1(x)))  # the layer call errors point at


def classifier(seed=0):
    gradc.manual_seed(seed)
    model = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)

    def step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return model, optimizer, gradc.compile(step)


def test_bad_input_raises_before_the_native_call_and_changes_nothing():
    model, optimizer, step = classifier()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 8)).astype(np.float32), np.array([0, 1, 2, 3, 1])
    with pytest.raises(IndexError, match="out of"):  # the very first call: state is not created either
        step(x, np.array([0, 1, 4, 3, 1]))
    assert not optimizer.state
    step(x, y)
    step(x, y)
    before = arrays(model, optimizer)
    line = "test_compile.py:[0-9]+: return self.fc2\\(gradc.relu\\(self.fc1\\(x\\)\\)\\)"
    bad = [
        (IndexError, "out of", (x, np.array([0, 1, 2, 4, 1]))),
        (RuntimeError, f"shapes cannot be multiplied \\(5x7 and 8x6\\).*in layer model.fc1: Linear\\(in_features=8, "
                       f"out_features=6, bias=True\\), at {line}", (x[:, :7], y)),
        (RuntimeError, f"mat1 and mat2 must have the same dtype.*{line}", (x.astype(np.float64), y)),
        (TypeError, "unsupported dtype complex128", (x.astype(np.complex128), y)),
        (TypeError, "unsupported dtype object", (x.astype(object), y)),
        (TypeError, "unsupported dtype float16", (x.astype(np.float16), y)),
    ]
    for exc, match, args in bad:
        with pytest.raises(exc, match=match):
            step(*args)
        for a, b in zip(before, arrays(model, optimizer)):
            np.testing.assert_array_equal(a, b)
    step(x, y)  # still usable
    assert not np.array_equal(before[0], model.fc1.weight.detach().numpy())


def test_a_compiled_step_is_freed_without_the_cycle_collector():
    import gc
    import weakref

    t = Twins(momentum=0.9)
    x, y = data(8)
    t.step(x, y)
    t.step(x, y)
    executable = weakref.ref(t.compiled._current.executable)
    gc.disable()
    try:
        del t
        assert executable() is None  # no reference cycle keeps the native code alive until a collection
    finally:
        gc.enable()


# ----------------------------------------------------------------------------- threads
def test_calls_from_threads_are_serialized():
    threaded, sequential, eager = linreg(momentum=0.9), linreg(momentum=0.9), linreg(momentum=0.9)
    step_t, step_s = gradc.compile(threaded.step), gradc.compile(sequential.step)
    x, y = data(16)  # one batch for every call: the result does not depend on the order
    losses, start = [], threading.Barrier(4)

    def worker():
        start.wait()
        for _ in range(50):
            loss = step_t(x, y)
            losses.append(loss.item())

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    want = [step_s(x, y).item() for _ in range(200)]
    for _ in range(200):
        eager.step(gradc.tensor(x), gradc.tensor(y))
    assert sorted(losses) == sorted(want)  # no call lost, repeated or torn
    for pt, ps, pe in zip(threaded.model.parameters(), sequential.model.parameters(), eager.model.parameters()):
        np.testing.assert_array_equal(pt.detach().numpy(), ps.detach().numpy())
        assert_rel(pt.detach().numpy(), pe.detach().numpy(), 1e-10, "parameter vs eager")


# ----------------------------------------------------------------------------- disk cache, dumps
def tiny_graph():
    def f(x):
        return (gradc.tanh(x) * 3.0).sum()

    return gradc.trace(f, gradc.ones(5, 4)).ir("traced")


def test_object_cache_skips_llvm_and_survives_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    g, x = tiny_graph(), np.linspace(-1, 1, 20).reshape(5, 4)
    want = float((np.tanh(x.astype(np.float32)) * 3).sum())
    out = g.outputs[0].name
    first = compile_graph(g)
    assert not first.from_cache
    (path,) = tmp_path.glob("*.obj")

    real_optimize = jit.optimize

    def no_llvm(text):
        raise AssertionError("LLVM ran although the object code is cached")

    monkeypatch.setattr(jit, "optimize", no_llvm)
    second = compile_graph(g)
    assert second.from_cache and second.llvm_ir(optimized=True) == first.llvm_ir(optimized=True)
    np.testing.assert_allclose(second.run({"x": x})[out], want, rtol=1e-6)

    monkeypatch.setattr(jit, "optimize", real_optimize)
    blob = path.read_bytes()
    for damaged in (blob[: len(blob) // 2], blob[:-1] + bytes([blob[-1] ^ 1]), b"", b"not a cache file" * 10):
        path.write_bytes(damaged)
        again = compile_graph(g)  # ignored and compiled again, never a crash
        assert not again.from_cache
        np.testing.assert_allclose(again.run({"x": x})[out], want, rtol=1e-6)
        assert path.read_bytes() == blob  # rewritten whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]

    monkeypatch.setenv("GRADC_CACHE", "0")
    path.unlink()
    assert not compile_graph(g).from_cache and not path.exists()


def test_cache_key_covers_text_and_host():
    assert jit.cache_key("a") != jit.cache_key("b")
    assert jit.cache_key("a") == jit.cache_key("a")
    host = jit._host().decode()
    import llvmlite
    import llvmlite.binding as llvm

    assert llvmlite.__version__ in host and llvm.get_host_cpu_name() in host
    assert llvm.get_host_cpu_features().flatten() in host


SCRIPT = """
import numpy as np, gradc, gradc.nn as nn, gradc.optim as optim
gradc.manual_seed(0)
model, criterion = nn.Linear(4, 2), nn.MSELoss()
optimizer = optim.SGD(model.parameters(), lr=0.1)

@gradc.compile
def step(x, y):
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss

print(step(np.ones((3, 4), np.float32), np.zeros((3, 2), np.float32)).item(), step._current.executable.from_cache)
"""


def test_second_run_of_a_script_loads_the_cached_object(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "GRADC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": os.path.dirname(os.path.dirname(gradc.__file__))}
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    (loss1, cached1), (loss2, cached2) = (r.stdout.split() for r in runs)
    assert (cached1, cached2) == ("False", "True") and loss1 == loss2


def test_dump_writes_every_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_DUMP", str(tmp_path))
    t = Twins()
    t.step(*data(4))
    c = t.compiled
    for stage in ("traced", "autodiff", "optimized"):
        assert (tmp_path / f"step.{stage}.ir").read_text() == str(c.ir(stage))
        assert (tmp_path / f"step.{stage}.dot").read_text().startswith("digraph")
    assert (tmp_path / "step.ll").read_text() == c.llvm_ir()
    assert (tmp_path / "step.opt.ll").read_text() == c.llvm_ir(optimized=True)
    assert (tmp_path / "step.s").read_text() == c.asm() and "gradc_step" in c.asm()
    assert c.llvm_ir() != c.llvm_ir(optimized=True)


def test_explain_reports_the_pipeline_kernels_and_user_lines(capsys):
    t = Twins()
    with pytest.raises(RuntimeError, match="not been called yet"):
        t.compiled.explain()
    t.step(*data(4))
    t.compiled.explain()
    text = capsys.readouterr().out
    assert text.startswith("graph step: pipeline simplify,fold,cse,dce,fuse,plan\n")
    for pass_name in ("simplify", "fold", "cse", "dce", "fuse", "plan"):  # a row of statistics each
        assert f"\n  {pass_name} " in text, pass_name
    n_kernels = len(t.compiled.ir().kernels)
    assert f"{n_kernels} kernels for {len(t.compiled.ir().nodes)} nodes" in text
    assert "test_compile.py:" in text and "loss = criterion(y_pred, y)" in text  # the user's line and its source
    assert "arena:" in text

    gradc.manual_seed(0)
    fast = gradc.compile(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    fast(gradc.randn(2, 3))
    fast.explain()
    text = capsys.readouterr().out
    assert text.count("graph ") == 2 and "pipeline simplify" in text  # the forward graph and its backward
