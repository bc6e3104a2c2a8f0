"""`step.run(n, *stacks)`: n training steps in one native call over stacked batches.

The oracle is the same compiled step called n times: losses, parameters and
optimizer state must agree bitwise (the same native code runs either way),
for SGD, SGD with momentum and Adam (whose step counter advances per step),
in float32 and float64, on the native backend and on the interpreter."""
import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim
from gradc import compiler


@pytest.fixture(scope="module", autouse=True)
def object_cache(tmp_path_factory):
    """A disk cache private to this file."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADC_CACHE_DIR", str(tmp_path_factory.mktemp("gradc-cache")))
        for var in ("GRADC_CACHE", "GRADC_DUMP", "GRADC_LOG", "GRADC_BACKEND"):
            mp.delenv(var, raising=False)
        yield


OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05),
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1),
    "adam": lambda p: optim.Adam(p, lr=1e-2),
}
BACKENDS = {"native": None, "interpreter": compiler.InterpretedGraph}


def classifier(opt, dtype, backend, seed=0):
    """An MLP 5-7-3 with cross-entropy (class targets are an index input) and its compiled step."""
    gradc.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)
    criterion = nn.CrossEntropyLoss()
    optimizer = OPTIMIZERS[opt](model.parameters())

    def step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return model, optimizer, gradc.compile(step, backend=BACKENDS[backend])


def stacks(n, dtype, batch=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, batch, 5)).astype(dtype), rng.integers(0, 3, (n, batch))


def snapshot(model, optimizer):
    out = [p.detach().numpy().copy() for p in model.parameters()]
    for st in optimizer.state.values():
        out += [np.array(t.numpy(), copy=True) for t in st.values() if isinstance(t, gradc.Tensor)]
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_run_equals_single_calls(opt, dtype, backend):
    n = 9
    xs, ys = stacks(2 * n + 1, dtype)
    one = classifier(opt, dtype, backend)
    many = classifier(opt, dtype, backend)
    singles = [one[2](xs[i], ys[i]).item() for i in range(2 * n + 1)]
    # from a fresh optimizer (the first step creates its state), then once more from steady state,
    # then a single step, with tensors as stacks
    losses = np.concatenate([many[2].run(n, xs[:n], ys[:n]).numpy(),
                             many[2].run(n, gradc.tensor(xs[n:2 * n]), gradc.tensor(ys[n:2 * n])).numpy(),
                             many[2].run(1, xs[2 * n:], ys[2 * n:]).numpy()])
    assert losses.shape == (2 * n + 1,) and losses.dtype == dtype
    np.testing.assert_array_equal(losses, np.array(singles, dtype))
    assert_same(snapshot(*many[:2]), snapshot(*one[:2]))
    if opt == "adam":
        assert all(st["step"].item() == 2 * n + 1 for st in many[1].state.values())
    assert many[2].versions == one[2].versions


def test_native_run_agrees_with_the_interpreter():
    xs, ys = stacks(5, np.float64)
    native, interp = classifier("adam", np.float64, "native"), classifier("adam", np.float64, "interpreter")
    np.testing.assert_allclose(native[2].run(5, xs, ys).numpy(), interp[2].run(5, xs, ys).numpy(), rtol=1e-12)
    for a, b in zip(snapshot(*native[:2]), snapshot(*interp[:2])):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_batch_anywhere_raises_before_any_step(backend):
    model, optimizer, step = classifier("sgd_momentum", np.float32, backend)
    xs, ys = stacks(4, np.float32)
    step.run(4, xs, ys)
    before = snapshot(model, optimizer)
    bad = ys.copy()
    bad[3, 2] = 3  # the last batch holds a class out of range
    with pytest.raises(IndexError, match="out of"):
        step.run(4, xs, bad)
    with pytest.raises(ValueError, match="expected 4 batches stacked along the first axis"):
        step.run(4, xs[:3], ys[:3])
    with pytest.raises(ValueError, match="expected 4 batches"):
        step.run(4, xs, ys[0])
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        step.run(4, xs.astype(np.complex128), ys)
    with pytest.raises(ValueError, match="n >= 1"):
        step.run(0, xs[:0], ys[:0])
    assert_same(snapshot(model, optimizer), before)
    step.run(4, xs, ys)  # still usable
    after = snapshot(model, optimizer)
    with pytest.raises(IndexError, match="out of"):
        step.run(4, xs, bad)
    assert_same(snapshot(model, optimizer), after)
    assert step.versions == 2


def test_run_reads_the_learning_rate_once_per_run_and_never_recompiles_for_it():
    xs, ys = stacks(6, np.float64)
    one, many = classifier("sgd_momentum", np.float64, "native"), classifier("sgd_momentum", np.float64, "native")
    singles = []
    for i, lr in enumerate([0.05, 0.05, 0.05, 0.2, 0.2, 0.2]):
        one[1].param_groups[0]["lr"] = lr
        singles.append(one[2](xs[i], ys[i]).item())
    losses = list(many[2].run(3, xs[:3], ys[:3]).numpy())
    many[1].param_groups[0]["lr"] = 0.2
    losses += list(many[2].run(3, xs[3:], ys[3:]).numpy())
    np.testing.assert_array_equal(losses, singles)
    assert_same(snapshot(*many[:2]), snapshot(*one[:2]))
    assert many[2].versions == 2  # the step creating the momentum buffers, then the steady state


def test_new_batch_shapes_recompile_and_mixing_run_and_calls_is_seamless():
    xs, ys = stacks(8, np.float32, batch=6)
    xs5, ys5 = stacks(8, np.float32, batch=5, seed=2)
    one, many = classifier("adam", np.float32, "native"), classifier("adam", np.float32, "native")
    singles = [one[2](a, b).item() for a, b in [*zip(xs[:3], ys[:3]), *zip(xs5, ys5), *zip(xs[3:], ys[3:])]]
    losses = list(many[2].run(3, xs[:3], ys[:3]).numpy()) + [many[2](xs5[0], ys5[0]).item()]
    losses += list(many[2].run(7, xs5[1:], ys5[1:]).numpy()) + list(many[2].run(5, xs[3:], ys[3:]).numpy())
    np.testing.assert_array_equal(losses, np.array(singles, np.float32))
    assert_same(snapshot(*many[:2]), snapshot(*one[:2]))
    assert many[2].versions == one[2].versions == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_results_none_and_constant_arguments(backend):
    models = []
    for _ in range(2):  # the same initial weights
        gradc.manual_seed(0)
        models.append(nn.Linear(3, 2).double())
    opts = [optim.SGD(m.parameters(), lr=0.1) for m in models]

    def make(model, optimizer):
        def step(x, scale):
            out = model(x)
            loss = (out * out).mean() * scale
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss, out

        return step

    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 5, 3))
    single = gradc.compile(make(models[0], opts[0]), backend=BACKENDS[backend])
    many = gradc.compile(make(models[1], opts[1]), backend=BACKENDS[backend])
    want = [single(x, 0.5) for x in xs]
    losses, outs = many.run(4, xs, 0.5)
    assert losses.shape == (4,) and outs.shape == (4, 5, 2)
    np.testing.assert_array_equal(losses.numpy(), [w[0].item() for w in want])
    np.testing.assert_array_equal(outs.numpy(), np.stack([w[1].numpy() for w in want]))

    def nothing(x):
        return None

    assert gradc.compile(nothing, backend=BACKENDS[backend]).run(3, xs[:3]) is None


def test_runs_and_calls_from_threads_are_serialized():
    import threading

    xs, ys = stacks(1, np.float64)
    xs10, ys10 = np.repeat(xs, 10, axis=0), np.repeat(ys, 10, axis=0)  # one batch for every step
    threaded, sequential = (classifier("sgd_momentum", np.float64, "native") for _ in range(2))
    threaded[2](xs[0], ys[0])
    sequential[2](xs[0], ys[0])
    start = threading.Barrier(4)

    def worker(i):
        start.wait()
        for _ in range(20):
            if i % 2:
                threaded[2].run(10, xs10, ys10)
            else:
                threaded[2](xs[0], ys[0])

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for _ in range(20):
        sequential[2].run(10, xs10, ys10)
        sequential[2].run(10, xs10, ys10)
    for _ in range(40):
        sequential[2](xs[0], ys[0])
    for a, b in zip(snapshot(*threaded[:2]), snapshot(*sequential[:2])):
        np.testing.assert_allclose(a, b, rtol=1e-12)
