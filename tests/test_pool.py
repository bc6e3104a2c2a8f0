"""The process's GEMM thread pool (gradc.codegen.pool).

Compiled graphs whose GEMMs are split over threads give the interpreter's
results when several run at once from Python threads (one shares the pool,
the others run alone), in a forked child (whose pool is restarted), and
after many compiles the process has no more threads than the pool's helpers.
The pool's address reaches the code through the constants blob.
"""
from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import gradc
from gradc import prims as P
from gradc.codegen import compile_graph, gemm, pool
from gradc.ir import interpret
from gradc.passes.fuse import kernels

from test_codegen import assert_close, make

F32 = gradc.float32


@pytest.fixture
def split(monkeypatch):
    """Every float GEMM split over 2 threads, however small."""
    monkeypatch.setattr(gemm, "threads", lambda: 2)
    monkeypatch.setattr(gemm, "PARALLEL_FLOPS", 0)


def layer(m=33, k=70, n=90, name="f"):
    g = make([("x", F32, (m, k)), ("w", F32, (n, k), "param"), ("b", F32, (n,), "param")],
             lambda x, w, b: P.maximum(P.add(P.matmul(x, P.transpose(w, perm=(1, 0))), b), 0.0), name)
    rng = np.random.default_rng(m)
    feeds = {v.name: rng.integers(-3, 4, v.shape).astype(np.float32) for v in g.inputs}
    return g, feeds


def threads_now() -> int:
    return len(os.listdir("/proc/self/task"))


def test_constants_blob_holds_the_pool_address(split):
    from gradc.codegen.lower import lower_graph

    g, _ = layer()
    low = lower_graph(g)
    assert pool.GLOBAL in low.text
    assert int.from_bytes(low.consts[pool.SLOT:pool.SLOT + 8].tobytes(), "little") == pool.address()
    assert all(b.offset >= 8 for b in low.buffers.values() if b.region == "const")


@pytest.mark.parametrize("m,k,n", [(33, 70, 90), (91, 70, 33), (97, 5, 7)])
def test_split_layer_with_its_epilogue(split, m, k, n):
    """A fused layer's bias and ReLU run on each thread's share: column panels (m <= n) or row
    tiles (m > n, the last one short); repeated, so that parts go to both threads, from both ends."""
    from gradc.passes import run_pipeline

    g, feeds = layer(m, k, n, name=f"l{m}_{n}")
    fused = run_pipeline(g, "fuse").graph
    assert any(len(spec.stages) == 2 and gemm.fuses_epilogue(*spec.stages) == "panels" for _, spec in kernels(fused))
    c = compile_graph(fused)
    want = interpret(g, feeds)
    for _ in range(20):
        got = c.run(feeds)
        for name, w in want.items():
            assert_close(got[name], w, name)


def test_jobs_after_the_helpers_fell_asleep(split):
    """A burst of jobs that starts while the helpers sleep (after SPIN_CYCLES idle) wakes them
    and computes the same."""
    import time

    g, feeds = layer(40, 30, 50, name="sleepy")
    c = compile_graph(g)
    want = interpret(g, feeds)
    for _ in range(3):
        time.sleep(pool.SPIN_CYCLES / 1e9 + 0.01)  # at least SPIN_CYCLES at any clock over 1 GHz
        for _ in range(5):
            got = c.run(feeds)
            for name, w in want.items():
                assert_close(got[name], w, name)


def test_graphs_run_at_once_from_python_threads(split):
    graphs = [layer(m, name=f"g{m}") for m in (33, 40, 7)]
    compiled = [compile_graph(g) for g, _ in graphs]
    want = [interpret(g, f) for g, f in graphs]
    errors = []

    def work(i):
        try:
            for _ in range(30):
                got = compiled[i].run(graphs[i][1])
                for name, w in want[i].items():
                    assert_close(got[name], w, name)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(graphs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:os.fork")  # the child only runs gradc's native code and NumPy
def test_split_gemm_in_a_forked_child(split):
    g, feeds = layer()
    c = compile_graph(g)
    c.run(feeds)  # the pool is busy in the parent before the fork
    want = interpret(g, feeds)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports by its exit status
        ok = False
        signal.alarm(60)  # a hang fails the test instead of the suite
        try:
            got = c.run(feeds)
            ok = all(np.array_equal(got[k], w) for k, w in want.items())
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_compiles_start_no_threads_of_their_own(split):
    g, feeds = layer()
    compile_graph(g).run(feeds)  # starts the pool if no test did
    before = threads_now()
    for m in (9, 10, 11):
        g, feeds = layer(m, name=f"t{m}")
        c = compile_graph(g)
        c.run(feeds)
        c.close()
    assert threads_now() == before


def test_thread_count_is_capped(monkeypatch):
    pool.threads.cache_clear()
    try:
        monkeypatch.setenv("GRADC_NUM_THREADS", "64")
        assert pool.threads() == (pool.MAX_THREADS if os.uname().machine == "x86_64" else 1)
        monkeypatch.setenv("GRADC_NUM_THREADS", "1")
        pool.threads.cache_clear()
        assert pool.threads() == 1
    finally:
        pool.threads.cache_clear()
