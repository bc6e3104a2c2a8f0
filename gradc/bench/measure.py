"""How the benchmark measures: timing windows, peak memory, and the machine's peak FLOP/s.

Time per step is the median over several windows, each running the step
enough times to last at least `min_time` (calibrated by doubling), so the
clock's resolution and one-off hiccups do not count; the runner interleaves
the windows of all modes, so a change in the machine's load hits them alike. Memory is the growth of
the process's peak resident set (VmHWM) from the moment the mode starts
building its step: it counts native code and buffers that tracemalloc cannot
see. The peak is reset through /proc/self/clear_refs where Linux allows it.
The machine's peak FLOP/s is measured twice: natively, by a kernel of
independent vector FMA chains compiled by gradc's JIT (the ceiling "% peak"
is of), and by NumPy's BLAS on a large matmul (what a tuned library reaches).
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np


def calibrate(run, sync, min_time, max_steps=1_000_000) -> int:
    """How many steps a timing window needs to last at least `min_time` seconds."""
    n = 1
    while True:
        elapsed = window(run, sync, n)
        if elapsed >= min_time or n >= max_steps:
            return n
        n = min(max_steps, max(2 * n, int(n * 1.2 * min_time / max(elapsed, 1e-9))))


def window(run, sync, n) -> float:
    """Seconds taken by n back-to-back steps, waiting for the last one to finish."""
    start = time.perf_counter()
    out = None
    for _ in range(n):
        out = run()
    sync(out)
    return time.perf_counter() - start


def summarize(per_step: list) -> dict:
    med = statistics.median(per_step)
    return {"median_s": med, "min_s": min(per_step), "max_s": max(per_step),
            "spread": (max(per_step) - min(per_step)) / med if med else 0.0}


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class PeakRSS:
    """Growth of the peak resident set size over a block of work, in MB.

    `exact` is False when the peak could not be reset: the figure is then the
    growth of the process's lifetime peak, a lower bound.
    """

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.exact = True
        except OSError:
            self.exact = False
        self.base = _status_kb("VmRSS" if self.exact else "VmHWM")
        if self.base is None:  # no /proc: ru_maxrss is the lifetime peak, in kB on Linux
            import resource

            self.exact = False
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        peak = _status_kb("VmHWM")
        if peak is None:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mb = max(0, peak - self.base) / 1024
        return False


# ----------------------------------------------------------------------------- machine peak
FMA_ITERS = 1 << 14  # iterations of one part of the FMA kernel: a call of about 0.1 ms (see fma_peak)
FMA_PARTS_PER_THREAD = 4  # parts claimed one at a time: a thread that joins late leaves its share to the others


def fma_peak(threads: int, min_time: float = 0.005, windows: int = 15) -> float | None:
    """GFLOP/s of the native FMA kernel (gradc.codegen.peak) on `threads` threads, the median
    of `windows` windows of at least `min_time` seconds; None when the process's pool cannot
    run that many threads. Many short calls rather than a few long ones: after a call that
    waited for a preempted helper the pool runs its next jobs alone (pool.BACKOFF_JOBS), which
    should cost a sliver of the windows, not all of them."""
    from gradc.codegen import peak, pool

    if threads > pool.threads():
        return None
    parts = FMA_PARTS_PER_THREAD * threads
    acc = np.zeros((parts, peak.accumulators(), peak.lanes()), np.float32)
    run = peak.kernel().bind(acc, FMA_ITERS, threads, a=0.5, b=1.0)  # acc -> acc / 2 + 1: stays near 2
    n = calibrate(run, _no_sync, min_time)
    seconds = statistics.median(window(run, _no_sync, n) / n for _ in range(windows))
    return peak.flops(FMA_ITERS, parts) / seconds / 1e9


def _no_sync(out):
    pass


def contended(fma: dict) -> list:
    """The thread counts (keys of `fma`, GFLOP/s by thread count) whose FMA peak is below 3/4 of
    that many times one thread's: other work held a core while they were measured."""
    one = fma.get("1")
    return [t for t, v in fma.items() if one and v and t != "1" and v < 0.75 * int(t) * one]


_PEAK_CODE = """
import sys, time, numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
c = np.empty((n, n), np.float32)
np.matmul(a, b, out=c)
best = float("inf")
for _ in range(reps):
    t = time.perf_counter(); np.matmul(a, b, out=c); best = min(best, time.perf_counter() - t)
print(2 * n ** 3 / best / 1e9)
"""


def thread_env(threads: int) -> dict:
    """Environment that gives a new process's BLAS, OpenMP, PyTorch, XLA and gradc's pool `threads` threads."""
    env = {k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                      "GRADC_BENCH_THREADS", "GRADC_NUM_THREADS")}
    if threads == 1:
        env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false",
                                                  "intra_op_parallelism_threads=1"]))
    return env


def sgemm_peak(threads: int, n: int = 2048, reps: int = 5) -> float | None:
    """GFLOP/s of NumPy's float32 matmul of two n x n matrices on `threads` BLAS threads.

    A proxy for the FMA peak: a tuned BLAS reaches most of it on a large
    square product. Run in a subprocess, since BLAS fixes its thread count at load.
    """
    env = dict(os.environ, **thread_env(threads))
    try:
        out = subprocess.run([sys.executable, "-c", _PEAK_CODE, str(n), str(reps)], env=env,
                             capture_output=True, text=True, timeout=300, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def blas_info() -> str:
    """Which BLAS NumPy runs and its kernel family, when threadpoolctl can tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')})" for i in libs) or "none"
