"""Memory: calling a compiled step many times, and compiling and freeing many
models, keep the process's resident set flat. Each check runs in a fresh
interpreter (RSS in a process that already ran the suite is noise)."""
import gc
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")


def _in_fresh_process(name, **env):
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_memory; test_memory.{name}()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stdout + r.stderr


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _growth(fn, n, warmup) -> int:
    for i in range(warmup):  # allocator pools, caches, the target machine
        fn(i)
    gc.collect()
    before = _rss()
    for i in range(warmup, warmup + n):
        fn(i)
    gc.collect()
    return _rss() - before


def test_many_calls_of_a_compiled_step_keep_memory_flat(tmp_path):
    _in_fresh_process("check_calls", GRADC_CACHE_DIR=str(tmp_path))


def check_calls():
    import gradc
    from gradc.bench.workloads import WORKLOADS, make_data, training_step

    wl = WORKLOADS["linreg"]
    x, y = make_data(wl)
    X, Y = gradc.from_numpy(x), gradc.from_numpy(y)
    step = gradc.compile(training_step(*wl.build(gradc)))
    grown = _growth(lambda i: step(x, y) if i % 2 else step(X, Y), 20_000, 2_000)  # arrays or tensors
    assert grown < 3 * 2**20, f"RSS grew by {grown / 2**20:.2f} MB over 20,000 calls of a compiled step"

    # a compiled module's forward and backward, recorded on the autograd tape each call
    gradc.manual_seed(0)
    model = gradc.nn.Sequential(gradc.nn.Linear(4, 8), gradc.nn.Tanh(), gradc.nn.Linear(8, 1))
    fast = gradc.compile(model)
    xs = gradc.randn(16, 4)

    def forward_backward(i):
        fast(xs).sum().backward()
        model.zero_grad()

    grown = _growth(forward_backward, 3_000, 300)
    assert grown < 2**20, f"RSS grew by {grown / 2**20:.2f} MB over 3,000 compiled forward+backward calls"


# A compile takes about 150 ms here, so the suite measures 60 models after 15;
# `GRADC_LEAK_MODELS=200 pytest tests/test_memory.py` runs the full count.
MODELS = int(os.environ.get("GRADC_LEAK_MODELS", "60"))


def test_compiling_and_freeing_models_does_not_leak():
    _in_fresh_process("check_compiles", GRADC_CACHE="0", GRADC_CHECK_IR="")


def _malloc_in_use():
    """Bytes malloc has handed out and not taken back (glibc), or None elsewhere."""
    import ctypes

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    mallinfo2.restype = Info
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def check_compiles():
    """Distinct models (a different constant each: no two share object code), each traced,
    optimized by LLVM, linked, called and freed. Nothing of gradc's stays alive; what native
    memory remains is llvmlite's PassInstrumentationCallbacks, about 1.5 KB per pass builder
    (see gradc/codegen/jit.py); RSS grows by more than that as the allocators fragment."""
    import gradc
    import gradc.nn as nn
    import gradc.optim as optim

    x, y = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    alive = []

    def compile_and_free(i):
        model, criterion = nn.Linear(3, 2), nn.MSELoss()
        optimizer = optim.SGD(model.parameters(), lr=0.01)

        def step(x, y):
            loss = criterion(model(x), y) * float(i + 1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss

        compiled = gradc.compile(step)
        compiled(x, y)
        assert not compiled._current.executable.from_cache
        alive.append(weakref.ref(compiled._current.executable))

    for i in range(15):  # allocator pools, caches, the target machine
        compile_and_free(i)
    gc.collect()
    objects, native, rss = len(gc.get_objects()), _malloc_in_use(), _rss()
    for i in range(15, 15 + MODELS):
        compile_and_free(i)
    gc.collect()
    assert not [r for r in alive if r() is not None], "a compiled graph outlived its step"
    more = len(gc.get_objects()) - objects - MODELS  # less the weakrefs in `alive`
    assert more < 10, f"{more} more Python objects"
    if native is not None:
        kept = (_malloc_in_use() - native) / MODELS
        assert kept < 4 * 2**10, f"native memory kept: {kept / 2**10:.1f} KB per compiled and freed model"
    grown = (_rss() - rss) / MODELS
    assert grown < 20 * 2**10, f"RSS grew by {grown / 2**10:.1f} KB per compiled and freed model"
