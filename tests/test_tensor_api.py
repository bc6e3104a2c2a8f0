"""Tensor metadata, conversions and creation functions against PyTorch."""
import numpy as np
import pytest

import gradc
from helpers import assert_same

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- metadata and conversion to Python / NumPy
@pytest.mark.parametrize("data", [
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [1, 2, 3], 3.5, 7, True, [[True, False]], [], [[[]]],
    [[1, 2], [3, 4]], [1, 2.5], [True, 2],
])
def test_metadata_and_python_conversion(data):
    g, t = gradc.tensor(data), torch.tensor(data)
    assert_same(g, t)
    assert tuple(g.shape) == tuple(t.shape) and isinstance(g.shape, tuple)
    assert g.size() == g.shape and tuple(g.size()) == tuple(t.size())
    assert g.ndim == t.ndim and g.dim() == t.dim()
    assert g.numel() == t.numel()
    assert g.tolist() == t.tolist()
    for d in range(-t.ndim, t.ndim):
        assert g.size(d) == t.size(d)
    if t.numel() == 1:
        assert g.item() == t.item() and type(g.item()) is type(t.item())
    else:
        with pytest.raises(RuntimeError):
            t.item()
        with pytest.raises(RuntimeError):
            g.item()
    arr = g.numpy()
    assert isinstance(arr, np.ndarray) and arr.dtype == t.numpy().dtype
    np.testing.assert_array_equal(arr, t.numpy())


def test_size_repr_and_len():
    g, t = gradc.zeros(2, 3), torch.zeros(2, 3)
    assert repr(g.shape) == repr(t.shape).replace("torch", "gradc")
    assert len(g) == len(t) == 2
    assert g.shape.numel() == 6
    with pytest.raises(TypeError):
        len(gradc.tensor(1.0))


def test_numpy_shares_memory():
    g = gradc.zeros(3)
    g.numpy()[1] = 5.0
    assert g.tolist() == [0.0, 5.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.bool_])
def test_from_numpy_shares_memory_and_keeps_dtype(dtype):
    a = np.zeros((2, 3), dtype=dtype)
    g, t = gradc.from_numpy(a), torch.from_numpy(a.copy())
    assert_same(g, t)
    a[0, 1] = 1
    assert bool(g[0, 1].item()) is True
    g.add_(1) if dtype is not np.bool_ else g.fill_(True)
    assert a[1, 2] == 1  # written through the tensor, seen in the array
    with pytest.raises(TypeError):
        gradc.from_numpy([1, 2])


def test_tensor_copies_numpy_data_and_keeps_its_dtype():
    for dtype in (np.float64, np.float32, np.int32, np.int64, np.bool_):
        a = np.ones(3, dtype=dtype)
        assert_same(gradc.tensor(a), torch.tensor(a))
        g = gradc.tensor(a)
        a[0] = 0
        assert g.tolist()[0] == 1  # a copy, unlike from_numpy
    assert_same(gradc.tensor(np.float64(2.5)), torch.tensor(np.float64(2.5)))


@pytest.mark.parametrize("src", ["float32", "float64", "int64", "bool"])
@pytest.mark.parametrize("conv", ["float", "double", "long", "bool", "to_float64", "to_int64", "to_tensor"])
def test_dtype_conversions(src, conv):
    data = np.array([[-1.5, 0.0], [2.7, 3.0]]).astype(src)
    outs = []
    for m in (gradc, torch):
        x = m.tensor(data)
        if conv.startswith("to_"):
            target = getattr(m, conv[3:]) if conv != "to_tensor" else m.zeros(1, dtype=m.int32)
            outs.append(x.to(target))
        else:
            outs.append(getattr(x, conv)())
    assert_same(*outs)


def test_to_same_dtype_returns_self_and_type_of():
    x = gradc.ones(2)
    assert x.to(gradc.float32) is x
    assert x.to("cpu") is x
    assert x.float().dtype is gradc.float32 and x.type(gradc.float64).dtype is gradc.float64
    with pytest.raises(RuntimeError):
        x.to("cuda")


def test_conversion_keeps_gradient_flowing():
    for m in (gradc, torch):
        x = m.tensor([1.0, 2.0], dtype=m.float32, requires_grad=True)
        (x.double() * 3).sum().backward()
        assert x.grad.dtype == m.float32 and x.grad.tolist() == [3.0, 3.0]


# ---------------------------------------------------------------- creation
CREATE = {
    "zeros": lambda m: m.zeros(2, 3),
    "zeros_tuple": lambda m: m.zeros((2, 3), dtype=m.int64),
    "zeros_list": lambda m: m.zeros([0, 2]),
    "zeros_0d": lambda m: m.zeros(()),
    "ones": lambda m: m.ones(3, dtype=m.float64),
    "ones_bool": lambda m: m.ones(2, 2, dtype=m.bool),
    "full_int": lambda m: m.full((2, 2), 3),
    "full_float": lambda m: m.full((2,), 2.5),
    "full_bool": lambda m: m.full((1, 2), True),
    "full_dtype": lambda m: m.full([3], 7, dtype=m.float64),
    "arange_int": lambda m: m.arange(5),
    "arange_start": lambda m: m.arange(2, 7),
    "arange_step": lambda m: m.arange(1, 10, 3),
    "arange_float": lambda m: m.arange(0, 1, 0.25),
    "arange_float_end": lambda m: m.arange(0.0, 3),
    "arange_neg": lambda m: m.arange(5, 0, -2),
    "arange_neg_float": lambda m: m.arange(1, 0, -0.3),
    "arange_empty": lambda m: m.arange(3, 3),
    "arange_dtype": lambda m: m.arange(4, dtype=m.float64),
    "linspace": lambda m: m.linspace(0, 1, 5),
    "linspace_one": lambda m: m.linspace(2, 3, 1),
    "linspace_empty": lambda m: m.linspace(0, 10, 0),
    "linspace_f64": lambda m: m.linspace(-1, 1, 4, dtype=m.float64),
    "eye": lambda m: m.eye(3),
    "eye_rect": lambda m: m.eye(2, 4),
    "eye_int": lambda m: m.eye(2, dtype=m.int64),
    "tensor_nested": lambda m: m.tensor([[1, 2, 3], [4, 5, 6]]),
    "tensor_float_list": lambda m: m.tensor([[1.0], [2.0]]),
    "tensor_dtype": lambda m: m.tensor([1, 2], dtype=m.float64),
    "tensor_of_tensors": lambda m: m.tensor([m.tensor(1.0), m.tensor(2.0)]),
    "zeros_like": lambda m: m.zeros_like(m.tensor([[1, 2]])),
    "ones_like": lambda m: m.ones_like(m.tensor([1.5, 2.0], dtype=m.float64)),
    "full_like": lambda m: m.full_like(m.tensor([1, 2]), 4),
    "ones_like_dtype": lambda m: m.ones_like(m.tensor([1, 2]), dtype=m.float32),
    "empty_shape": lambda m: m.empty(2, 3).shape,
    "new_zeros": lambda m: m.tensor([1, 2]).new_zeros(2, 3),
    "new_ones": lambda m: m.tensor([1.0], dtype=m.float64).new_ones((2,)),
    "new_full": lambda m: m.tensor([1.0]).new_full((2,), 3),
    "new_tensor": lambda m: m.tensor([1.0], dtype=m.float64).new_tensor([1, 2]),
}


@pytest.mark.parametrize("name", sorted(CREATE))
def test_creation(name):
    g, t = CREATE[name](gradc), CREATE[name](torch)
    if isinstance(t, torch.Size):
        assert tuple(g) == tuple(t)
    else:
        assert_same(g, t)
        assert not g.requires_grad


def test_arange_rejects_step_of_wrong_sign_or_zero():
    for args in ((3, 1), (0, 5, -1), (0, 1, 0)):
        with pytest.raises(RuntimeError):
            torch.arange(*args)
        with pytest.raises(RuntimeError):
            gradc.arange(*args)


def test_creation_requires_grad():
    for f in (lambda: gradc.zeros(2, requires_grad=True), lambda: gradc.ones(2, 2, requires_grad=True),
              lambda: gradc.tensor([1.0], requires_grad=True), lambda: gradc.randn(3, requires_grad=True),
              lambda: gradc.full((2,), 1.0, requires_grad=True), lambda: gradc.arange(3.0, requires_grad=True)):
        x = f()
        assert x.requires_grad and x.is_leaf


@pytest.mark.parametrize("name,f,dtype", [
    ("rand", lambda m: m.rand(3, 4), "float32"),
    ("rand_tuple", lambda m: m.rand((2, 5), dtype=m.float64), "float64"),
    ("randn", lambda m: m.randn(4, 2), "float32"),
    ("randn_f64", lambda m: m.randn(2, 3, dtype=m.float64), "float64"),
    ("randint", lambda m: m.randint(3, 10, (5, 5)), "int64"),
    ("randint_high", lambda m: m.randint(4, (200,)), "int64"),
    ("rand_like", lambda m: m.rand_like(m.zeros(2, 3, dtype=m.float64)), "float64"),
    ("randn_like", lambda m: m.randn_like(m.zeros(3)), "float32"),
    ("randint_like", lambda m: m.randint_like(m.zeros(2, 2), 5), "float32"),
    ("randperm", lambda m: m.randperm(6), "int64"),
])
def test_random_shapes_dtypes_ranges(name, f, dtype):
    g, t = f(gradc), f(torch)
    assert tuple(g.shape) == tuple(t.shape)
    assert g.dtype is getattr(gradc, dtype) and str(t.dtype) == f"torch.{dtype}"
    v = g.numpy()
    if name in ("rand", "rand_tuple", "rand_like"):
        assert v.min() >= 0 and v.max() < 1
    if name == "randint":
        assert v.min() >= 3 and v.max() < 10
        assert len(set(v.ravel().tolist())) > 3
    if name in ("randint_high", "randint_like"):
        assert v.min() >= 0 and v.max() < (4 if name == "randint_high" else 5)
    if name == "randperm":
        assert sorted(v.tolist()) == list(range(6))


def test_random_distributions_are_plausible():
    gradc.manual_seed(0)
    u = gradc.rand(20000, dtype=gradc.float64).numpy()
    n = gradc.randn(20000, dtype=gradc.float64).numpy()
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02
    assert abs(n.mean()) < 0.03 and abs(n.std() - 1) < 0.03


def test_manual_seed_reproducibility():
    def draw():
        return (gradc.rand(5).tolist(), gradc.randn(2, 2).tolist(), gradc.randint(0, 100, (4,)).tolist(),
                gradc.randperm(5).tolist())

    gradc.manual_seed(123)
    first = draw()
    gradc.manual_seed(123)
    assert draw() == first
    gradc.manual_seed(124)
    assert draw() != first
    gradc.manual_seed(123)
    a = gradc.rand(3)
    b = gradc.rand(3)
    assert a.tolist() != b.tolist()  # the stream advances


def test_unsupported_data_and_dtypes_raise():
    with pytest.raises(TypeError):
        gradc.tensor(np.array([1 + 2j]))
    with pytest.raises(TypeError):
        gradc.tensor(["a"])
    with pytest.raises(TypeError):
        gradc.zeros(2, dtype="complex64")
