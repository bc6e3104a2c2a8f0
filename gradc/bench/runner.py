"""Runs the benchmark: per workload, a gradc-eager reference, then every mode guarded and timed.

Each (workload, mode) lives in its own subprocess by default, so its peak
memory is its own and one mode's libraries, threads or crash cannot disturb
another. The modes of a workload are prepared one after another (built, run
for the correctness guard, calibrated), then timed in interleaved windows,
round-robin, so that a change in the machine's load hits every mode alike and
the ratios of one run compare. The guard: a mode trains 3 steps from the
shared initial weights and its losses must agree with gradc eager's to 1e-3
relative; a mode that disagrees is reported FAILED and not timed.
"""
from __future__ import annotations

import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata

import numpy as np

from . import measure, targets
from .modes import MODES, Mode
from .workloads import WORKLOADS, flop_count, init_weights, make_data

GUARD_STEPS = 3
GUARD_RTOL = 1e-3
FULL = {"min_time": 0.2, "windows": 7, "peak_n": 2048, "fma_min_time": 0.005, "fma_windows": 15}
QUICK = {"min_time": 0.01, "windows": 3, "peak_n": 512, "fma_min_time": 0.002, "fma_windows": 5}
CHILD_TIMEOUT = 1800  # seconds one request to a mode's process may take (a cold compile included)


def check_losses(losses, reference, rtol=GUARD_RTOL):
    """Why `losses` disagree with the reference's, or None when they agree."""
    for i, (a, b) in enumerate(zip(losses, reference, strict=True)):
        if not abs(a - b) <= rtol * abs(b) + 1e-7:  # written so that NaN fails
            return f"loss {a:.6g} vs gradc-eager {b:.6g} at step {i + 1}"
    return None


def reference_losses(wl, weights, x, y):
    """gradc eager's losses over the guard steps: what every mode must reproduce."""
    step = MODES["gradc-eager"].build(wl, weights, x, y)
    return [step.value(step.run()) for _ in range(GUARD_STEPS)]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


class Case:
    """One mode on one workload in this process: prepared once, then timed window by window."""

    def __init__(self, wl, mode: Mode, weights, x, y, ref_losses, min_time):
        self.args = (wl, weights, x, y)
        self.mode, self.ref_losses, self.min_time = mode, ref_losses, min_time

    def prepare(self) -> dict:
        """Build the step, time its first call, run the guard, calibrate the window."""
        self.mem = measure.PeakRSS().__enter__()
        res = {"status": "ok"}
        try:
            self.step = step = self.mode.build(*self.args)
            start = time.perf_counter()
            out = step.run()
            step.sync(out)
            res["first_call_s"] = time.perf_counter() - start
            losses = step.losses(out)
            while len(losses) < GUARD_STEPS:
                losses += step.losses(step.run())
            res["losses"] = losses[:GUARD_STEPS]
            problem = check_losses(res["losses"], self.ref_losses)
            if problem:
                res.update(status="FAILED", reason=problem)
            else:
                self.n = measure.calibrate(step.run, step.sync, self.min_time)
                res["steps_per_window"] = self.n * step.steps
        except Exception as e:  # a broken mode is a row of the table, not the end of the run
            res.update(status="ERROR", reason=_error(e), traceback=traceback.format_exc())
        return res

    def window(self) -> float:
        """Seconds per step over one window."""
        return measure.window(self.step.run, self.step.sync, self.n) / (self.n * self.step.steps)

    def finish(self) -> dict:
        self.mem.__exit__(None, None, None)
        return {"peak_rss_growth_mb": self.mem.mb, "peak_rss_exact": self.mem.exact}


# ----------------------------------------------------------------------------- subprocess
_CHILD = "from gradc.bench.runner import child_main; child_main()"


class ChildCase:
    """A `Case` in its own process, driven by one-line JSON requests and replies."""

    def __init__(self, wl, mode: Mode, case_file, ref_losses, min_time, threads):
        self.spec = {"workload": wl.name, "mode": mode.name, "case": case_file, "ref_losses": ref_losses,
                     "min_time": min_time}
        self.threads = threads

    def _ask(self, request=None) -> dict:
        if request:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CHILD_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            try:
                self.proc.wait(timeout=10 if ready else 0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stderr.seek(0)
            tail = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
            why = f"exited with code {self.proc.returncode}" if ready else f"gave no answer in {CHILD_TIMEOUT} s"
            raise RuntimeError(f"the benchmark process {why}: {tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def prepare(self) -> dict:
        """Start the process (only now, so that its start-up overlaps no other mode's work) and prepare."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
                   **measure.thread_env(self.threads))
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(self.spec)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        try:
            return self._ask()
        except RuntimeError as e:
            return {"status": "ERROR", "reason": str(e)[:300]}

    def window(self) -> float:
        return self._ask("window")["s"]

    def finish(self) -> dict:
        """The memory figures, and the end of the process (if it has not died already)."""
        try:
            if self.proc.poll() is not None:
                return {}
            reply = self._ask("finish")
            self.proc.wait(timeout=60)
            return reply
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.stderr.close()


def child_main():
    """Entry point of a mode's process: spec as JSON in argv[1], requests on stdin, replies on stdout."""
    import importlib

    spec = json.loads(sys.argv[1])
    reply_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
    wl, mode = WORKLOADS[spec["workload"]], MODES[spec["mode"]]
    with np.load(spec["case"]) as case:
        x, y = case["x"], case["y"]
        weights = [case[f"w{i}"] for i in range(len(case.files) - 2)]
    importlib.import_module("gradc")  # libraries load before the memory baseline
    if mode.requires:
        importlib.import_module(mode.requires)
    job = Case(wl, mode, weights, x, y, spec["ref_losses"], spec["min_time"])

    def reply(obj):
        reply_to.write(json.dumps(obj) + "\n")
        reply_to.flush()

    reply(job.prepare())
    for request in sys.stdin:
        try:
            if request.strip() == "window":
                reply({"s": job.window()})
            else:
                reply(job.finish())
                return
        except Exception as e:
            reply({"error": _error(e)})


def measure_workload(cases: dict, windows: int, log) -> dict:
    """Prepare every case in turn, then time them in interleaved windows; results by mode name."""
    results, live = {}, []
    for name, case in cases.items():
        log(f"preparing {name}")
        results[name] = res = case.prepare()
        if res["status"] == "ok":
            live.append(name)
            res["windows_s"] = []
    for k in range(windows):
        log(f"timing window {k + 1}/{windows}")
        order = live[k % len(live):] + live[:k % len(live)] if live else []
        for name in order:
            try:
                results[name]["windows_s"].append(cases[name].window())
            except Exception as e:
                results[name].update(status="ERROR", reason=_error(e))
                live.remove(name)
    for name, case in cases.items():
        res = results[name]
        try:
            res.update(case.finish())
        except Exception as e:  # a process that died already said why; only a new failure is news
            if res["status"] == "ok":
                res.update(status="ERROR", reason=_error(e))
        if res["status"] == "ok":
            res.update(measure.summarize(res["windows_s"]))
    return results


# ----------------------------------------------------------------------------- whole run
def machine_info() -> dict:
    import gradc
    from gradc import compiler

    info = {"python": platform.python_version(), "numpy": np.__version__, "blas": measure.blas_info(),
            "cpus": os.cpu_count(), "cpu": _cpu_name(), "platform": platform.platform(),
            "gradc": gradc.__version__, "gradc_compile_backend": compiler.default_backend().__name__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average": _load()}
    for name in ("torch", "jax"):
        try:
            info[name] = metadata.version(name)  # without importing it into this process
        except metadata.PackageNotFoundError:
            info[name] = None
    return info


def _load() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(workloads, modes, *, quick=False, isolate=True, threads=2, log=lambda msg: None) -> dict:
    """Benchmark every mode (a name or a `Mode`) on every workload (a name); returns the JSON payload.

    `threads` is what each mode's process may use (BLAS, OpenMP, PyTorch, XLA); with
    isolate=False the modes share this process and its libraries' thread counts.
    """
    opts = QUICK if quick else FULL
    modes = [MODES[m] if isinstance(m, str) else m for m in modes]
    workloads = [WORKLOADS[w] for w in workloads]
    fma_counts = sorted({1, 2, threads})
    log(f"measuring the machine's FMA peak (native kernel, {' and '.join(map(str, fma_counts))} threads)")
    fma = {str(t): measure.fma_peak(t, opts["fma_min_time"], opts["fma_windows"]) for t in fma_counts}
    counts = sorted({1, threads})
    log(f"measuring NumPy's matmul peak ({' and '.join(map(str, counts))} threads)")
    peak = {str(t): measure.sgemm_peak(t, n=opts["peak_n"]) for t in counts}
    machine_peak = max(filter(None, peak.values()), default=None)  # more threads can lose on a busy machine
    payload = {"machine": machine_info(), "config": dict(opts, quick=quick, isolate=isolate, threads=threads,
                                                         guard_steps=GUARD_STEPS, guard_rtol=GUARD_RTOL),
               "fma_peak_gflops": fma, "fma_kernel": peak_kernel_info(),
               "pct_peak_of": pct_peak_basis(fma, machine_peak, threads),
               "peak_gflops": dict(peak, machine=machine_peak), "workloads": {}, "results": []}
    basis = payload["pct_peak_of"]["gflops"]
    with tempfile.TemporaryDirectory(prefix="gradc-bench-") as tmp:
        for wl in workloads:
            x, y = make_data(wl)
            weights = init_weights(wl)
            flops = flop_count(wl)
            payload["workloads"][wl.name] = {"about": wl.about, "flops": flops}
            case_file = os.path.join(tmp, f"{wl.name}.npz")
            np.savez(case_file, x=x, y=y, **{f"w{i}": w for i, w in enumerate(weights)})
            try:
                ref = reference_losses(wl, weights, x, y)
            except Exception as e:
                ref, ref_error = None, f"gradc-eager reference failed: {type(e).__name__}: {e}"
            rows, cases = {}, {}
            for mode in modes:
                missing = mode.missing()
                if missing:
                    rows[mode.name] = {"status": "unavailable", "reason": missing}
                elif ref is None:
                    rows[mode.name] = {"status": "ERROR", "reason": ref_error}
                elif isolate:
                    if MODES.get(mode.name) is not mode:
                        raise ValueError(f"mode {mode.name!r} is not in gradc.bench.modes.MODES; "
                                         "run it with isolate=False")
                    cases[mode.name] = ChildCase(wl, mode, case_file, ref, opts["min_time"], threads)
                else:
                    cases[mode.name] = Case(wl, mode, weights, x, y, ref, opts["min_time"])
            rows.update(measure_workload(cases, opts["windows"], lambda msg: log(f"{wl.name}: {msg}")))
            for mode in modes:
                res = {"workload": wl.name, "mode": mode.name, **rows[mode.name]}
                if res["status"] == "ok":
                    res["gflops"] = flops["total"] / res["median_s"] / 1e9
                    if basis:
                        res["pct_peak"] = 100 * res["gflops"] / basis
                payload["results"].append(res)
    payload["machine"]["load_average_end"] = _load()
    payload["targets"] = targets.evaluate(payload)
    return payload


def pct_peak_basis(fma: dict, sgemm_best: float | None, threads: int) -> dict:
    """What "% peak" is of: the FMA peak on the modes' thread count, else (more threads than the
    pool of this process has) the best NumPy matmul, a lower bound of the peak."""
    if fma.get(str(threads)):
        return {"kind": "fma", "threads": threads, "gflops": fma[str(threads)]}
    return {"kind": "sgemm", "threads": None, "gflops": sgemm_best}


def peak_kernel_info() -> dict:
    from gradc.codegen import peak

    return {"accumulators": peak.accumulators(), "lanes": peak.lanes(), "iters": measure.FMA_ITERS,
            "parts_per_thread": measure.FMA_PARTS_PER_THREAD}
