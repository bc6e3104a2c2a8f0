"""gradc.nn against torch.nn: layers' values and gradients (inputs and parameters,
with weights copied across), the Module API (names, state dicts, modes, dtype
conversion, attribute registration, repr), containers and initialisers."""
import copy
import math
import warnings

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.nn.functional as F
import gradc.nn.init as init
from helpers import assert_same

torch = pytest.importorskip("torch")
TF = torch.nn.functional

FLOATS = ("float64", "float32")
rng = np.random.default_rng(0)


def copy_weights(gm, tm):
    """Load torch module tm's state into gradc module gm (same structure)."""
    gm.load_state_dict({k: gradc.tensor(v.detach().numpy().copy()) for k, v in tm.state_dict().items()})


def check_module(gm, tm, x, dtype, seed=3):
    """Same weights, same input: compare outputs, input grads and every parameter's grad."""
    tm = tm.to(getattr(torch, dtype))
    gm = gm.to(getattr(gradc, dtype))
    copy_weights(gm, tm)
    xg = gradc.tensor(x.astype(dtype), requires_grad=True)
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    out_t, out_g = tm(xt), gm(xg)
    assert_same(out_g, out_t)
    w = np.random.default_rng(seed).uniform(-1.5, 1.5, size=tuple(out_t.shape)).astype(dtype)
    (out_t * torch.tensor(w)).sum().backward()
    (out_g * gradc.tensor(w)).sum().backward()
    assert_same(xg.grad, xt.grad, what="grad of input")
    gp, tp = dict(gm.named_parameters()), dict(tm.named_parameters())
    assert list(gp) == list(tp)
    for name in tp:
        assert_same(gp[name].grad, tp[name].grad, what=f"grad of {name}")
    return out_g


def same_repr(g, t):
    assert repr(g) == repr(t).replace("torch.", "gradc.")


# ---------------------------------------------------------------- layers vs torch
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_shape", [(5, 3), (3,), (2, 4, 3)])
def test_linear_matches_torch(dtype, bias, in_shape):
    out = check_module(nn.Linear(3, 4, bias=bias), torch.nn.Linear(3, 4, bias=bias), rng.standard_normal(in_shape), dtype)
    if len(in_shape) == 2 and bias:
        assert out.grad_fn.name == "AddmmBackward0"


ACTIVATIONS = [
    ("ReLU", {}), ("Tanh", {}), ("Sigmoid", {}), ("GELU", {}), ("GELU", {"approximate": "tanh"}),
    ("Softmax", {"dim": 1}), ("Softmax", {"dim": -1}), ("LogSoftmax", {"dim": 1}), ("LogSoftmax", {"dim": 0}),
    ("LeakyReLU", {}), ("LeakyReLU", {"negative_slope": 0.2}), ("SiLU", {}), ("ELU", {}), ("ELU", {"alpha": 0.5}),
    ("Softplus", {}), ("Softplus", {"beta": 2.0, "threshold": 3.0}), ("Identity", {}),
    ("Flatten", {}), ("Flatten", {"start_dim": 0, "end_dim": 1}),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,kw", ACTIVATIONS)
def test_activation_modules_match_torch(name, kw, dtype):
    x = rng.standard_normal((3, 4, 2)) * 3
    x.flat[:4] = [0.0, 40.0, -40.0, 1.5]  # kinks (0) and large magnitudes (overflow guards)
    gm, tm = getattr(nn, name)(**kw), getattr(torch.nn, name)(**kw)
    same_repr(gm, tm)
    check_module(gm, tm, x, dtype)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_functional_and_grad_fn(approximate):
    x = rng.standard_normal(7)
    g, t = gradc.tensor(x, requires_grad=True), torch.tensor(x)
    out = F.gelu(g, approximate=approximate)
    assert_same(out, TF.gelu(t, approximate=approximate))
    assert out.grad_fn.name == "GeluBackward0"
    with pytest.raises(RuntimeError, match="approximate argument must be either none or tanh"):
        F.gelu(g, approximate="fast")


def test_softmax_implicit_dim_warns_and_picks_torchs_dim():
    for shape in [(4,), (3, 4), (2, 3, 4), (2, 2, 3, 4)]:
        x = rng.standard_normal(shape)
        with pytest.warns(UserWarning, match="Implicit dimension choice for softmax") as rec:
            g = F.softmax(gradc.tensor(x))
        assert rec[0].filename == __file__  # points at the caller's line
        with pytest.warns(UserWarning, match="Implicit dimension choice for log_softmax") as rec:
            lg = nn.LogSoftmax()(gradc.tensor(x))
        assert rec[0].filename == __file__
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_same(g, TF.softmax(torch.tensor(x)))
            assert_same(lg, torch.nn.LogSoftmax()(torch.tensor(x)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_mlp_sequential_matches_torch(dtype):
    def build(m):
        return m.Sequential(m.Linear(6, 8), m.ReLU(), m.Linear(8, 8), m.GELU(), m.Dropout(0.3), m.Linear(8, 3),
                            m.LogSoftmax(dim=1))
    gm, tm = build(nn), build(torch.nn)
    gm.eval(), tm.eval()
    check_module(gm, tm, rng.standard_normal((5, 6)), dtype)


def test_functional_activation_inplace_writes_input():
    x = gradc.tensor([-1.0, 2.0])
    assert F.relu(x, inplace=True) is x
    assert x.tolist() == [0.0, 2.0]


def test_linear_errors_like_torch():
    lin = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(4x5 and 3x2\).*in_features=3"):
        lin(gradc.zeros(4, 5))
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 must have the same dtype, but got Double and Float.*\.float\(\)"):
        lin(gradc.zeros(4, 3, dtype=gradc.float64))


# ---------------------------------------------------------------- dropout
def test_dropout_train_and_eval():
    gradc.manual_seed(5)
    drop = nn.Dropout(p=0.25)
    x = gradc.tensor(rng.uniform(1, 2, (200, 50)), requires_grad=True)
    y = drop(x)
    kept = y.detach().numpy() != 0
    assert 0.72 < kept.mean() < 0.78  # ~ 1 - p of 10000 draws
    np.testing.assert_allclose(y.detach().numpy()[kept], x.detach().numpy()[kept] / 0.75, rtol=1e-15)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.75, rtol=1e-15)  # d out / d x = mask / (1 - p)
    assert y.grad_fn.name == "NativeDropoutBackward0"
    drop.eval()
    assert drop(x) is x
    gradc.manual_seed(5)
    again = nn.Dropout(p=0.25)(x)
    np.testing.assert_array_equal(again.detach().numpy(), y.detach().numpy())  # seeded: same mask


def test_dropout_edge_probabilities():
    x = gradc.randn(4, 4)
    assert F.dropout(x, 0.0) is x
    assert not F.dropout(x, 1.0).numpy().any()
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
            nn.Dropout(p)
        with pytest.raises(ValueError, match="dropout probability"):
            F.dropout(x, p)


# ---------------------------------------------------------------- Parameter
def test_parameter_basics_and_repr():
    p = nn.Parameter(gradc.ones(2))
    assert isinstance(p, nn.Parameter) and isinstance(p, gradc.Tensor)
    assert p.requires_grad and p.is_leaf
    same_repr(p, torch.nn.Parameter(torch.ones(2)))
    same_repr(nn.Parameter(gradc.ones(2, 2, dtype=gradc.float64)), torch.nn.Parameter(torch.ones(2, 2, dtype=torch.float64)))
    assert not nn.Parameter(gradc.ones(2), requires_grad=False).requires_grad
    t = gradc.zeros(3)
    q = nn.Parameter(t)
    with gradc.no_grad():
        q.add_(1.0)
    assert t.tolist() == [1.0, 1.0, 1.0]  # shares memory, as torch.nn.Parameter(t) does
    assert tuple(nn.Parameter().shape) == tuple(torch.nn.Parameter().shape)
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(gradc.tensor([1, 2]))


# ---------------------------------------------------------------- structure, names, repr
def build_net(m):
    """One nested structure built with either library (m is gradc.nn or torch.nn)."""

    class Block(m.Module):
        def __init__(self, n):
            super().__init__()
            self.fc = m.Linear(n, n)
            self.act = m.ReLU()
            self.register_buffer("running", (gradc if m is nn else torch).zeros(n))
            self.register_buffer("scratch", (gradc if m is nn else torch).ones(1), persistent=False)

        def forward(self, x):
            return self.act(self.fc(x)) + self.running

    class Net(m.Module):
        def __init__(self):
            super().__init__()
            self.embed = m.Linear(4, 6, bias=False)
            self.blocks = m.ModuleList([Block(6), Block(6)])
            self.head = m.Sequential(m.Linear(6, 6), m.Tanh(), m.Linear(6, 3))
            self.extra = m.ModuleDict({"drop": m.Dropout(0.1), "out": m.Linear(3, 3)})
            self.scale = m.Parameter((gradc if m is nn else torch).ones(3))
            self.tied = self.head[0]  # the same module under a second name

        def forward(self, x):
            x = self.embed(x)
            for b in self.blocks:
                x = b(x)
            return self.extra["out"](self.extra["drop"](self.head(x))) * self.scale

    return Net()


def names(pairs):
    return [(n, tuple(t.shape)) for n, t in pairs]


def test_names_match_torch():
    g, t = build_net(nn), build_net(torch.nn)
    assert names(g.named_parameters()) == names(t.named_parameters())
    assert names(g.named_parameters(remove_duplicate=False)) == names(t.named_parameters(remove_duplicate=False))
    assert names(g.named_parameters(recurse=False)) == names(t.named_parameters(recurse=False))
    assert names(g.named_parameters(prefix="model")) == names(t.named_parameters(prefix="model"))
    assert names(g.named_buffers()) == names(t.named_buffers())
    assert [n for n, _ in g.named_modules()] == [n for n, _ in t.named_modules()]
    assert [n for n, _ in g.named_modules(remove_duplicate=False)] == [n for n, _ in t.named_modules(remove_duplicate=False)]
    assert [n for n, _ in g.named_children()] == [n for n, _ in t.named_children()]
    assert [type(c).__name__ for c in g.children()] == [type(c).__name__ for c in t.children()]
    assert len(list(g.parameters())) == len(list(t.parameters()))
    assert len(list(g.modules())) == len(list(t.modules()))
    assert len(list(g.buffers())) == len(list(t.buffers()))
    assert list(g.state_dict()) == list(t.state_dict())  # tied entries twice, non-persistent buffers absent
    assert g.get_submodule("blocks.1.fc") is g.blocks[1].fc
    assert g.tied is g.head[0]


def test_repr_matches_torch():
    same_repr(build_net(nn), build_net(torch.nn))
    for args in [(1, 1), (2, 3)]:
        layers = [nn.Linear(*args) for _ in range(3)] + [nn.ReLU(), nn.Linear(3, 1)]
        tlayers = [torch.nn.Linear(*args) for _ in range(3)] + [torch.nn.ReLU(), torch.nn.Linear(3, 1)]
        same_repr(nn.ModuleList(layers), torch.nn.ModuleList(tlayers))
        same_repr(nn.Sequential(*layers), torch.nn.Sequential(*tlayers))
    same_repr(nn.ModuleList(), torch.nn.ModuleList())
    same_repr(nn.Sequential(), torch.nn.Sequential())
    same_repr(nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True))
    same_repr(nn.Linear(2, 3, bias=False), torch.nn.Linear(2, 3, bias=False))
    same_repr(nn.Dropout(0.2), torch.nn.Dropout(0.2))


def test_custom_network_forward_backward_matches_torch():
    g, t = build_net(nn), build_net(torch.nn)
    g.eval(), t.eval()
    with torch.no_grad():
        t.blocks[0].running.uniform_(-1, 1)
    check_module(g, t, rng.standard_normal((5, 4)), "float64")


# ---------------------------------------------------------------- state dicts
def test_load_state_dict_copies_in_place():
    g = build_net(nn)
    opt = gradc.optim.SGD(g.parameters(), lr=1.0)
    arrays = {n: p._data for n, p in g.named_parameters()}
    objects = {n: p for n, p in g.named_parameters()}
    t = build_net(torch.nn)
    result = g.load_state_dict({k: gradc.tensor(v.numpy()) for k, v in t.state_dict().items()})
    assert repr(result) == "<All keys matched successfully>" == repr(t.load_state_dict(t.state_dict()))
    for n, p in g.named_parameters():
        assert p is objects[n] and p._data is arrays[n]
        np.testing.assert_array_equal(p.detach().numpy(), t.state_dict()[n].numpy())
    # the optimizer made before loading still updates the loaded parameters
    before = g.scale.detach().numpy().copy()
    g.scale.grad = gradc.ones(3)
    opt.step()
    np.testing.assert_allclose(g.scale.detach().numpy(), before - 1.0)
    # state_dict values share memory with the parameters, detached
    sd = g.state_dict()
    assert sd["scale"]._data is g.scale._data and not sd["scale"].requires_grad
    assert g.state_dict(keep_vars=True)["scale"] is g.scale


def test_load_state_dict_errors_match_torch():
    g, t = build_net(nn), build_net(torch.nn)
    sd_t = t.state_dict()
    del sd_t["head.2.bias"]
    sd_t["head.9.weight"] = torch.zeros(1)
    sd_t["embed.weight"] = torch.zeros(6, 5)
    sd_g = {k: gradc.tensor(v.numpy()) for k, v in sd_t.items()}
    with pytest.raises(RuntimeError) as torch_err:
        t.load_state_dict(sd_t)
    with pytest.raises(RuntimeError) as err:
        g.load_state_dict(sd_g)
    expected = str(torch_err.value).replace("torch.", "gradc.")
    assert str(err.value).startswith(expected) and "strict=False" in str(err.value)
    assert str(err.value).startswith("Error(s) in loading state_dict for Net:\n\tMissing key(s) in state_dict: ")
    # strict=False still refuses size mismatches, like torch
    with pytest.raises(RuntimeError, match="size mismatch for embed.weight"):
        g.load_state_dict(sd_g, strict=False)
    del sd_t["embed.weight"], sd_g["embed.weight"]
    rg, rt = g.load_state_dict(sd_g, strict=False), t.load_state_dict(sd_t, strict=False)
    assert rg.missing_keys == rt.missing_keys and rg.unexpected_keys == rt.unexpected_keys
    assert repr(rg) == repr(rt)


def test_state_dict_save_load_roundtrip(tmp_path):
    g = build_net(nn)
    gradc.save(g.state_dict(), str(tmp_path / "net.npz"))
    h = build_net(nn)
    h.load_state_dict(gradc.load(str(tmp_path / "net.npz")))
    for (n, a), (_, b) in zip(g.state_dict().items(), h.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)


# ---------------------------------------------------------------- modes, grads, dtype
def test_train_eval_propagate():
    g = build_net(nn)
    assert g.training and all(m.training for m in g.modules())
    assert g.eval() is g
    assert not any(m.training for m in g.modules())
    g.train()
    assert all(m.training for m in g.modules())
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        g.train("no")


def test_zero_grad_and_requires_grad():
    lin = nn.Linear(3, 2)
    lin(gradc.randn(4, 3)).sum().backward()
    lin.zero_grad(set_to_none=False)
    assert lin.weight.grad is not None and not lin.weight.grad.numpy().any()
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    assert lin.requires_grad_(False) is lin
    assert not any(p.requires_grad for p in lin.parameters())


def test_to_dtype_keeps_parameter_objects():
    g = build_net(nn)
    params = list(g.parameters())
    opt = gradc.optim.SGD(g.parameters(), lr=0.1)
    g(gradc.randn(2, 4)).sum().backward()
    assert g.double() is g
    assert all(a is b for a, b in zip(params, g.parameters()))
    assert all(p.dtype is gradc.float64 and p.grad.dtype is gradc.float64 for p in g.parameters())
    assert g.blocks[0].running.dtype is gradc.float64
    opt.step()  # the optimizer still holds the same (converted) parameters
    assert g.embed.weight.dtype is gradc.float64
    g.to(gradc.float32)
    assert all(p.dtype is gradc.float32 for p in g.parameters())
    g.to("cpu")
    g.to(dtype=gradc.float64)
    assert g.scale.dtype is gradc.float64
    with pytest.raises(TypeError, match="nn.Module.to only accepts floating point"):
        g.to(gradc.int64)
    with pytest.raises(RuntimeError, match="CPU only"):
        g.to("cuda")


# ---------------------------------------------------------------- attributes and registration
def test_attribute_registration():
    m = nn.Module()
    m.w = nn.Parameter(gradc.ones(2))
    m.child = nn.Linear(2, 2)
    m.plain = 3
    assert list(m._parameters) == ["w"] and list(m._modules) == ["child"] and m.plain == 3
    assert "w" in dir(m) and "child" in dir(m)
    with pytest.raises(TypeError, match="cannot assign 'gradc.Tensor' as parameter 'w'.*nn.Parameter"):
        m.w = gradc.ones(2)
    m.w = None
    assert m.w is None and list(m.parameters()) == list(m.child.parameters())
    m.child = nn.ReLU()
    assert isinstance(m.child, nn.ReLU)
    with pytest.raises(TypeError, match="as child module 'child'"):
        m.child = 5
    del m.child
    assert "child" not in m._modules
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'child'"):
        m.child
    m.register_buffer("buf", gradc.zeros(2))
    m.buf = gradc.ones(2)
    assert m.buf.tolist() == [1.0, 1.0] and "buf" in m.state_dict()
    with pytest.raises(TypeError, match="as buffer 'buf'"):
        m.buf = [1, 2]


def test_registration_errors_match_torch():
    for mod in (nn, torch.nn):
        m = mod.Module()
        m.x = 1
        with pytest.raises(KeyError, match="attribute 'x' already exists"):
            m.register_buffer("x", None)
        with pytest.raises(KeyError, match=r'contain "\."'):
            m.register_parameter("a.b", None)
        with pytest.raises(KeyError, match="be empty string"):
            m.add_module("", mod.ReLU())
        with pytest.raises(TypeError, match="is not a Module subclass"):
            m.add_module("y", 3)
        with pytest.raises(TypeError, match="cannot assign 'int' object to parameter 'p'"):
            m.register_parameter("p", 3)
    m = nn.Module()
    m.add_module("act", nn.ReLU())
    m.register_parameter("p", None)
    assert m.act is m._modules["act"] and "p" not in dict(m.named_parameters())


def test_missing_super_init_is_explained():
    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match=r"cannot assign module before Module.__init__\(\) call.*super\(\).__init__\(\)"):
        Forgot()

    class ForgotParam(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gradc.ones(1))

    with pytest.raises(AttributeError, match=r"cannot assign parameters before Module.__init__\(\) call"):
        ForgotParam()


def test_missing_forward():
    with pytest.raises(NotImplementedError, match='Module \\[Module\\] is missing the required "forward" function'):
        nn.Module()(gradc.ones(1))


def test_apply_visits_children_first():
    seq = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
    tseq = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(2, 1)))
    seen, tseen = [], []
    assert seq.apply(lambda m: seen.append(type(m).__name__)) is seq
    tseq.apply(lambda m: tseen.append(type(m).__name__))
    assert seen == tseen

    def fill(m):
        if isinstance(m, nn.Linear):
            init.constant_(m.weight, 0.5)

    seq.apply(fill)
    assert seq[1][1].weight.tolist() == [[0.5, 0.5]]


def test_deepcopy_keeps_ties_and_copies_data():
    g = build_net(nn)
    h = copy.deepcopy(g)
    assert h.tied is h.head[0] and h.tied is not g.tied
    assert isinstance(h.scale, nn.Parameter) and h.scale.requires_grad
    with gradc.no_grad():
        h.scale.add_(1.0)
    assert g.scale.tolist() == [1.0, 1.0, 1.0] and h.scale.tolist() == [2.0, 2.0, 2.0]


# ---------------------------------------------------------------- containers
def test_sequential_container_ops_match_torch():
    def run(m):
        s = m.Sequential(m.Linear(2, 3), m.ReLU(), m.Linear(3, 4), m.Tanh())
        out = [len(s), type(s[-1]).__name__, type(s[1:3]).__name__, [type(x).__name__ for x in s[1:3]],
               [n for n, _ in s[1:3].named_children()]]
        s.append(m.Sigmoid())
        del s[1]
        out.append([n for n, _ in s.named_children()])  # renumbered after deletion
        s[0] = m.Identity()
        s.insert(1, m.ReLU())
        out.append([type(x).__name__ for x in s])
        out.append(type(s.pop(1)).__name__)
        out.append([n for n, _ in s.named_children()])
        with pytest.raises(IndexError, match="index 10 is out of range"):
            s[10]
        return out

    assert run(nn) == run(torch.nn)
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]


def test_module_list_and_dict_ops_match_torch():
    def run(m):
        ml = m.ModuleList([m.Linear(2, 2), m.ReLU()])
        ml.append(m.Tanh())
        ml += [m.Sigmoid()]
        ml.extend([m.Identity()])
        ml.insert(0, m.GELU())
        del ml[2]
        out = [len(ml), [type(x).__name__ for x in ml], type(ml[1:3]).__name__, [n for n, _ in ml.named_children()]]
        ml[0] = m.SiLU()
        out.append(type(ml[-5]).__name__)
        with pytest.raises(TypeError, match="should be called with an iterable"):
            ml.extend(3)
        md = m.ModuleDict({"a": m.ReLU(), "b": m.Linear(1, 1)})
        md["c"] = m.Tanh()
        md.update([("d", m.Identity())])
        out += [len(md), list(md), list(md.keys()), "b" in md, type(md.pop("a")).__name__, list(md)]
        out.append([n for n, _ in md.named_parameters()])
        return out

    assert run(nn) == run(torch.nn)
    with pytest.raises(NotImplementedError, match="forward"):
        nn.ModuleList([nn.ReLU()])(gradc.ones(1))


# ---------------------------------------------------------------- initialisation
def test_linear_default_init_bounds_and_seed():
    gradc.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.99 * bound  # the bound is reached: not a narrower distribution
    assert abs(w.mean()) < 0.01 * bound and abs(w.var() / (bound**2 / 3) - 1) < 0.02  # U(-b, b) moments
    assert lin.weight.is_leaf and lin.weight.dtype is gradc.float32
    gradc.manual_seed(0)
    again = nn.Linear(400, 300)
    np.testing.assert_array_equal(again.weight.numpy(force=True), w)
    assert nn.Linear(2, 3, dtype=gradc.float64).weight.dtype is gradc.float64


def test_calculate_gain_matches_torch():
    for nl in ["linear", "conv2d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]:
        assert init.calculate_gain(nl) == pytest.approx(torch.nn.init.calculate_gain(nl), rel=1e-15)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.2))
    with pytest.raises(ValueError, match="Unsupported nonlinearity swish"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="negative_slope True not a valid number"):
        init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape", [(300, 200), (64, 16, 3, 3)])
def test_fan_based_initialisers(shape):
    fan_in = shape[1] * math.prod(shape[2:])
    fan_out = shape[0] * math.prod(shape[2:])
    w = nn.Parameter(gradc.empty(*shape))
    cases = [
        (init.xavier_uniform_, {"gain": 2.0}, "uniform", 2.0 * math.sqrt(6.0 / (fan_in + fan_out))),
        (init.xavier_normal_, {}, "normal", math.sqrt(2.0 / (fan_in + fan_out))),
        (init.kaiming_uniform_, {"a": math.sqrt(5)}, "uniform", 1 / math.sqrt(fan_in)),
        (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, "uniform", math.sqrt(6.0 / fan_out)),
        (init.kaiming_normal_, {"nonlinearity": "relu"}, "normal", math.sqrt(2.0 / fan_in)),
    ]
    for fn, kw, kind, scale in cases:
        assert fn(w, **kw) is w
        a = w.detach().numpy()
        assert w.is_leaf and w.grad_fn is None
        if kind == "uniform":
            assert np.abs(a).max() <= scale and np.abs(a).max() > 0.98 * scale
        else:
            assert abs(a.std() / scale - 1) < 0.03 and abs(a.mean()) < 0.03 * scale


def test_simple_initialisers():
    w = nn.Parameter(gradc.empty(3, 4))
    assert init.constant_(w, 0.3).tolist() == [[pytest.approx(0.3)] * 4] * 3
    assert not init.zeros_(w).numpy(force=True).any()
    assert (init.ones_(w).numpy(force=True) == 1).all()
    np.testing.assert_array_equal(init.eye_(w).numpy(force=True), np.eye(3, 4))
    a = init.uniform_(w, -0.5, 0.25).numpy(force=True)
    assert a.min() >= -0.5 and a.max() <= 0.25
    big = nn.Parameter(gradc.empty(20000))
    n = init.normal_(big, 2.0, 0.5).numpy(force=True)
    assert abs(n.mean() - 2.0) < 0.02 and abs(n.std() - 0.5) < 0.02
    t = init.trunc_normal_(big, 0.0, 1.0, -1.0, 1.5).numpy(force=True)
    assert t.min() >= -1.0 and t.max() <= 1.5 and t.min() < -0.99
    with pytest.raises(ValueError, match="Fan in and fan out can not be computed for tensor with fewer than 2"):
        init.xavier_uniform_(gradc.empty(3))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(w, mode="fan_avg")
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        init.kaiming_uniform_(gradc.empty(0, 3))


# ---------------------------------------------------------------- the seed tutorial and one_hot
def test_seed_linear_regression_trains_like_torch():
    def make(m, mod):
        class LinearRegression(m.Module):
            def __init__(self):
                super(LinearRegression, self).__init__()
                self.linear = m.Linear(1, 1)

            def forward(self, x):
                return self.linear(x)

        model = LinearRegression()
        return model, m.MSELoss(), mod.optim.SGD(model.parameters(), lr=0.01)

    g, gcrit, gopt = make(nn, gradc)
    t, tcrit, topt = make(torch.nn, torch)
    copy_weights(g, t)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(-1, 1)
    y = 3 * x - 0.5
    for model, crit, opt, mod in [(g, gcrit, gopt, gradc), (t, tcrit, topt, torch)]:
        xs, ys = mod.tensor(x), mod.tensor(y)
        for _ in range(50):
            loss = crit(model(xs), ys)
            loss.backward()
            opt.step()
            opt.zero_grad()
    assert_same(g.linear.weight, t.linear.weight)
    assert_same(g.linear.bias, t.linear.bias)
    assert gradc.nn is nn  # reachable as an attribute after `import gradc`


def test_one_hot_matches_torch():
    t = np.array([[0, 2], [1, 3]])
    assert_same(F.one_hot(gradc.tensor(t)), TF.one_hot(torch.tensor(t)))
    assert_same(F.one_hot(gradc.tensor(t), 6), TF.one_hot(torch.tensor(t), 6))
    with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes"):
        F.one_hot(gradc.tensor(t), 3)
    with pytest.raises(RuntimeError, match="Class values must be non-negative"):
        F.one_hot(gradc.tensor([-1, 0]))
    with pytest.raises(RuntimeError, match="only applicable to index tensor of type LongTensor"):
        F.one_hot(gradc.tensor([1.0]))
