"""Tracing: golden IR text, whole steps on the interpreter against eager gradc
and PyTorch, TraceError for data-dependent code, and that tracing changes nothing."""
import os

import numpy as np
import pytest

import golden_steps
import gradc
import gradc.nn as nn
import gradc.optim as optim
from gradc.compiler import CompiledStep, InterpretedGraph

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def golden(name, text):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("GRADC_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{name} changed; rerun with GRADC_UPDATE_GOLDEN=1 if intended, and review the diff"


@pytest.mark.parametrize("maker", ["linreg", "mlp_adam"])
def test_golden_ir(maker):
    step, args = getattr(golden_steps, maker)()
    traced = gradc.trace(step, *args)
    golden(f"{maker}.traced.ir", str(traced.ir("traced")))
    golden(f"{maker}.autodiff.ir", str(traced.ir("autodiff")))


def make_step(opt_name, dtype, seed=0):
    gradc.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4)).to(dtype)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    make = {
        "sgd": lambda p: optim.SGD(p, lr=0.1),
        "sgd_momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
        "sgd_nesterov": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        "adam": lambda p: optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        "adam_amsgrad": lambda p: optim.Adam(p, lr=1e-2, amsgrad=True),
        "adamw": lambda p: optim.AdamW(p, lr=1e-2),
    }
    optimizer = make[opt_name](model.parameters())

    def step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return model, optimizer, step


def batches(n, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [(gradc.tensor(rng.standard_normal((5, 6)), dtype=dtype), gradc.tensor(rng.integers(0, 4, 5))) for _ in range(n)]


OPTIMIZERS = ["sgd", "sgd_momentum", "sgd_nesterov", "adam", "adam_amsgrad", "adamw"]


@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_traced_steps_on_interpreter_equal_eager(opt_name):
    data = batches(4, gradc.float64)
    model_e, opt_e, step_e = make_step(opt_name, gradc.float64)
    model_c, opt_c, step_c = make_step(opt_name, gradc.float64)
    compiled = CompiledStep(step_c, backend=InterpretedGraph)
    for x, y in data:
        le, lc = step_e(x, y), compiled(x, y)
        np.testing.assert_allclose(lc.item(), le.item(), rtol=1e-10)
    for pe, pc in zip(model_e.parameters(), model_c.parameters()):
        np.testing.assert_allclose(pc.detach().numpy(), pe.detach().numpy(), rtol=1e-10, atol=1e-12)
    for pe, pc in zip(model_e.parameters(), model_c.parameters()):
        for key, te in opt_e.state[pe].items():
            np.testing.assert_allclose(np.asarray(opt_c.state[pc][key].numpy()), np.asarray(te.numpy()), rtol=1e-10, atol=1e-12)
    assert compiled.versions <= 2  # a first step that creates state, then the steady state


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
def test_traced_steps_equal_pytorch(opt_name):
    torch = pytest.importorskip("torch")
    model, _, step = make_step(opt_name, gradc.float64)
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
                                 torch.nn.Linear(12, 4)).double()
    with torch.no_grad():
        for p, tp in zip(model.parameters(), tmodel.parameters()):
            tp.copy_(torch.tensor(p.detach().numpy()))
    topt = {"sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)}[opt_name](tmodel.parameters())
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    compiled = CompiledStep(step, backend=InterpretedGraph)
    for x, y in batches(4, gradc.float64):
        loss = compiled(x, y)
        tl = crit(tmodel(torch.tensor(x.numpy())), torch.tensor(y.numpy()))
        tl.backward()
        topt.step()
        topt.zero_grad()
        np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-10)
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_lr_is_a_runtime_scalar():
    model, opt, step = make_step("sgd", gradc.float64)
    compiled = CompiledStep(step, backend=InterpretedGraph)
    (x, y), = batches(1, gradc.float64)
    compiled(x, y)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    grads_step = make_step("sgd", gradc.float64)
    opt.param_groups[0]["lr"] = 0.0
    compiled(x, y)
    for b, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(b, p.detach().numpy())
    assert compiled.versions == 1
    assert "%lr: f64[] scalar" in str(compiled.ir("traced"))
    del grads_step


def test_tracing_changes_nothing():
    model, opt, step = make_step("adam", gradc.float32)
    (x, y), = batches(1, gradc.float32)
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    gradc.trace(step, x, y)
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == 1e-2
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), before[n])
        assert p.grad is None


def test_data_dependent_branch_raises_trace_error_naming_the_line():
    model, opt, _ = make_step("sgd", gradc.float32)

    def step(x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        if loss > 1.0:  # a Python branch on a tensor's value
            loss = loss * 2
        return loss

    (x, y), = batches(1, gradc.float32)
    with pytest.raises(gradc.TraceError, match=r"test_tracing.py:\d+") as e:
        gradc.trace(step, x, y)
    assert "gradc.where" in str(e.value)


def test_item_while_tracing_raises_trace_error():
    with pytest.raises(gradc.TraceError, match=r"\.item\(\).*test_tracing.py"):
        gradc.trace(lambda x: x * x.sum().item(), gradc.ones(3))


def test_dump_writes_ir_and_dot(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_DUMP", str(tmp_path))
    step, args = golden_steps.linreg()
    gradc.trace(step, *args).ir("autodiff")
    names = sorted(os.listdir(tmp_path))
    assert "linreg_step.traced.ir" in names and "linreg_step.autodiff.dot" in names
    from gradc.ir import parse

    parse((tmp_path / "linreg_step.autodiff.ir").read_text()).verify()


def test_forward_of_a_module_traces_with_parameter_names():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    g = gradc.trace(m, gradc.ones(2, 3)).ir()
    assert [v.name for v in g.inputs] == ["0.weight", "0.bias", "input"]
    assert g.outputs and not g.updates


LOSSES = {
    "mse": (lambda: nn.MSELoss(), lambda out, y: (out, gradc.nn.functional.one_hot(y, 4).to(out.dtype))),
    "l1": (lambda: nn.L1Loss(reduction="sum"), lambda out, y: (out, gradc.nn.functional.one_hot(y, 4).to(out.dtype))),
    "nll": (lambda: nn.NLLLoss(), lambda out, y: (gradc.log_softmax(out, 1), y)),
    "bce_logits": (lambda: nn.BCEWithLogitsLoss(), lambda out, y: (out, gradc.nn.functional.one_hot(y, 4).to(out.dtype))),
    "bce": (lambda: nn.BCELoss(), lambda out, y: (gradc.sigmoid(out), gradc.nn.functional.one_hot(y, 4).to(out.dtype))),
}


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_every_loss_traces_and_steps_like_eager(loss_name):
    make_loss, prepare = LOSSES[loss_name]

    def make():
        gradc.manual_seed(3)
        model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 4)).double()
        optimizer = optim.Adam(model.parameters(), lr=1e-2)
        criterion = make_loss()

        def step(x, y):
            loss = criterion(*prepare(model(x), y))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss

        return model, step

    (model_e, step_e), (model_c, step_c) = make(), make()
    compiled = CompiledStep(step_c, backend=InterpretedGraph)
    for x, y in batches(3, gradc.float64):
        np.testing.assert_allclose(compiled(x, y).item(), step_e(x, y).item(), rtol=1e-10)
    for pe, pc in zip(model_e.parameters(), model_c.parameters()):
        np.testing.assert_allclose(pc.detach().numpy(), pe.detach().numpy(), rtol=1e-10, atol=1e-12)
