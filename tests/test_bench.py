"""The benchmark runner: FLOP formulas, the modes' agreement, the correctness guard, the CLI's outputs.

Nothing here asserts a speed: timing goals belong to `gradc bench` itself.
"""
import functools
import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gradc.bench import main, measure, report, runner, targets
from gradc.bench.modes import MODES, Mode, Step, numpy_step
from gradc.bench.workloads import WORKLOADS, Workload, flop_count, init_weights, make_data
from gradc.codegen import peak, pool

TINY = Workload("tiny", (3, 4, 2), 5, "cross_entropy", "sgd", {"lr": 0.1, "momentum": 0.9})


def test_flops_tiny_mlp_by_hand():
    # layer 0 (3->4): forward x@W.T 2*5*3*4 = 120; backward only dW (x needs no grad) = 120
    # layer 1 (4->2): forward 2*5*4*2 = 80; backward dW 80 + dX 80 = 160
    assert flop_count(TINY)["matmul_forward"] == 120 + 80
    assert flop_count(TINY)["matmul_backward"] == 120 + 160
    # hidden layer: bias add, bias grad, ReLU, ReLU mask on 5x4; output layer: bias add and grad on 5x2
    assert flop_count(TINY)["elementwise"] == 4 * 20 + 2 * 10
    # cross-entropy on 5x2 logits: 5 forward + 3 backward per element
    assert flop_count(TINY)["loss"] == 8 * 10
    # SGD momentum: 4 per parameter; 3*4+4 + 4*2+2 = 26 parameters
    assert flop_count(TINY)["update"] == 4 * 26
    assert flop_count(TINY)["total"] == 200 + 280 + 100 + 80 + 104


def test_flops_linreg_by_hand():
    f = flop_count(WORKLOADS["linreg"])  # Linear(1,1) on 100 samples, MSE, plain SGD
    assert (f["matmul_forward"], f["matmul_backward"]) == (200, 200)
    assert f["elementwise"] == 2 * 100 and f["loss"] == 5 * 100 and f["update"] == 2 * 2
    assert f["total"] == 200 + 200 + 200 + 500 + 4


@pytest.mark.parametrize("name", ["mlp_small", "mlp_large"])
def test_matmul_flops_match_torch_flop_counter(name):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    wl = WORKLOADS[name]
    model, criterion, _ = wl.build(torch)
    x, y = (torch.from_numpy(a) for a in make_data(wl))
    with FlopCounterMode(display=False) as counter:
        criterion(model(x), y).backward()
    f = flop_count(wl)
    assert counter.get_total_flops() == f["matmul_forward"] + f["matmul_backward"]


@functools.cache
def _case(name):
    """Data, initial weights and gradc eager's guard losses of a workload."""
    wl = WORKLOADS[name]
    x, y = make_data(wl)
    weights = init_weights(wl)
    return x, y, weights, runner.reference_losses(wl, weights, x, y)


@pytest.mark.parametrize("wl", ["linreg", "mlp_small", "mlp_large"])
@pytest.mark.parametrize("mode", ["numpy", "torch-eager", "jax-jit", "gradc-compiled-run"])
def test_modes_agree_with_gradc_eager(mode, wl):
    if MODES[mode].missing():
        pytest.skip(MODES[mode].missing())
    x, y, weights, ref = _case(wl)
    step = MODES[mode].build(WORKLOADS[wl], weights, x, y)
    losses = []
    while len(losses) < runner.GUARD_STEPS:
        losses += step.losses(step.run())
    losses = losses[:runner.GUARD_STEPS]
    assert len(set(ref)) == len(ref), "the reference's loss must change from step to step"
    assert runner.check_losses(losses, ref) is None


def test_modes_start_from_the_same_weights():
    wl = WORKLOADS["mlp_small"]
    weights = init_weights(wl)
    assert [w.shape for w in weights] == [(128, 64), (128,), (64, 128), (64,), (10, 64), (10,)]
    assert all(w.dtype == np.float32 for w in weights)
    np.testing.assert_array_equal(weights[0], init_weights(wl)[0])


def test_check_losses():
    assert runner.check_losses([1.0, 2.0], [1.0005, 2.0]) is None
    assert "step 2" in runner.check_losses([1.0, 2.003], [1.0, 2.0])
    assert runner.check_losses([math.nan], [1.0]) is not None


def _wrong_lr(wl, weights, x, y):
    """A NumPy step with the learning rate doubled: right first loss, wrong afterwards."""
    return numpy_step(Workload(**{**wl.__dict__, "hyper": {**wl.hyper, "lr": 2 * wl.hyper["lr"]}}), weights, x, y)


def _raises(wl, weights, x, y):
    def run():
        raise RuntimeError("backend exploded")

    return Step(run=run)


def test_guard_marks_a_wrong_mode_failed_and_does_not_time_it():
    payload = runner.run(["linreg"], [MODES["numpy"], Mode("wrong", _wrong_lr), Mode("broken", _raises)],
                         quick=True, isolate=False)
    by_mode = {r["mode"]: r for r in payload["results"]}
    assert by_mode["numpy"]["status"] == "ok"
    assert by_mode["wrong"]["status"] == "FAILED"
    assert "step 2" in by_mode["wrong"]["reason"]
    assert "median_s" not in by_mode["wrong"]
    assert by_mode["broken"]["status"] == "ERROR" and "backend exploded" in by_mode["broken"]["reason"]
    table = report.markdown(payload)
    assert "| linreg | wrong | FAILED: loss" in table
    assert "| linreg | broken | ERROR: RuntimeError: backend exploded" in table


def test_cli_exits_nonzero_when_a_mode_fails(monkeypatch, capsys):
    monkeypatch.setitem(MODES, "wrong", Mode("wrong", _wrong_lr))
    assert main(["--quick", "--in-process", "--workloads", "linreg", "--modes", "numpy,wrong"]) == 1
    assert "| linreg | wrong | FAILED" in capsys.readouterr().out


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    js, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    argv = ["--quick", "--workloads", "linreg", "--modes", "gradc-eager,numpy",
            "--json", str(js), "--markdown", str(md), "--plot", str(png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    payload = json.loads(js.read_text())
    assert md.read_text() == out
    assert [(r["workload"], r["mode"], r["status"]) for r in payload["results"]] == [
        ("linreg", "gradc-eager", "ok"), ("linreg", "numpy", "ok")]
    flops = payload["workloads"]["linreg"]["flops"]["total"]
    for r in payload["results"]:
        assert len(r["windows_s"]) == runner.QUICK["windows"] and r["median_s"] > 0
        assert r["gflops"] == pytest.approx(flops / r["median_s"] / 1e9)
        assert r["peak_rss_growth_mb"] >= 0 and r["first_call_s"] > 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| workload"))
    assert lines[header] == "| " + " | ".join(report.COLUMNS) + " |"
    rows = [line.split(" | ") for line in lines[header + 2:header + 4]]
    assert [r[1] for r in rows] == ["gradc-eager", "numpy"]
    assert rows[0][4] == "1.00x" and rows[0][5] == "-"  # vs itself; torch was not run
    assert png.exists() == (importlib.util.find_spec("matplotlib") is not None)
    # the native FMA peak, what % peak is of, and the targets of the workload run
    assert set(payload["fma_peak_gflops"]) == {"1", "2"}
    assert payload["fma_kernel"] == {"accumulators": peak.accumulators(), "lanes": peak.lanes(),
                                     "iters": measure.FMA_ITERS, "parts_per_thread": measure.FMA_PARTS_PER_THREAD}
    basis = payload["pct_peak_of"]
    if payload["fma_peak_gflops"]["2"]:
        assert basis == {"kind": "fma", "threads": 2, "gflops": payload["fma_peak_gflops"]["2"]}
    for r in payload["results"]:
        assert r["pct_peak"] == pytest.approx(100 * r["gflops"] / basis["gflops"])
    assert [t["workload"] for t in payload["targets"]] == ["linreg"] * 3
    assert all(t["met"] is None for t in payload["targets"])  # neither gradc-compiled nor the baselines ran
    assert "FMA peak (native kernel, " in out and "% peak is of the FMA peak on 2 threads" in out
    section = lines.index("Targets (issue 6), by ratio in this run: 0 of 3 met (3 not judged).")
    assert lines[section + 4] == ("| linreg | gradc-compiled | >= 77.5x vs torch-eager (~155 us -> <= 2 us) | - "
                                  "| not measured (gradc-compiled not run) |")


def test_unknown_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--modes", "gradc-eager,tensorflow"])
    assert e.value.code == 2
    assert "unknown mode 'tensorflow'; choose from gradc-eager," in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "gradc.bench", "--help"], capture_output=True, text=True, check=True)
    assert "--workloads" in out.stdout and "--quick" in out.stdout


def test_peak_rss_counts_native_allocations():
    with measure.PeakRSS() as mem:
        a = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        del a
    if not mem.exact:
        pytest.skip("this kernel does not let the peak RSS be reset")
    assert mem.mb >= 60


class _FakeCase:
    """Stands in for a mode's process: records when each of its windows ran."""

    def __init__(self, name, journal, status="ok"):
        self.name, self.journal, self.status = name, journal, status

    def prepare(self):
        self.journal.append(("prepare", self.name))
        return {"status": self.status, "reason": "wrong"} if self.status != "ok" else {"status": "ok"}

    def window(self):
        self.journal.append(("window", self.name))
        return 1e-3

    def finish(self):
        self.journal.append(("finish", self.name))
        return {"peak_rss_growth_mb": 0.0, "peak_rss_exact": True}


def test_windows_are_interleaved_after_every_mode_is_prepared():
    journal = []
    cases = {n: _FakeCase(n, journal, "FAILED" if n == "c" else "ok") for n in "abc"}
    res = runner.measure_workload(cases, windows=3, log=lambda msg: None)
    assert journal[:3] == [("prepare", "a"), ("prepare", "b"), ("prepare", "c")]
    assert [n for kind, n in journal if kind == "window"] == ["a", "b", "b", "a", "a", "b"]
    assert sorted(n for kind, n in journal if kind == "finish") == ["a", "b", "c"]  # every process is ended
    assert res["a"]["median_s"] == 1e-3 and res["c"]["status"] == "FAILED" and "median_s" not in res["c"]


def test_a_dead_mode_process_is_an_error_row(tmp_path):
    wl = WORKLOADS["linreg"]
    case = runner.ChildCase(wl, Mode("no-such-mode", numpy_step), str(tmp_path / "none.npz"), [1.0] * 3,
                             min_time=0.01, threads=1)
    res = case.prepare()
    assert case.finish() == {}
    assert res["status"] == "ERROR"
    assert "the benchmark process exited with code 1: KeyError: 'no-such-mode'" in res["reason"]


# ----------------------------------------------------------------------------- the FMA peak
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("parts", [1, 5])
def test_peak_kernel_runs_every_fma_it_counts(threads, parts):
    """With a = b = 1 every lane of every chain of every part ends at its start plus the
    iterations: the kernel ran exactly the FMAs `peak.flops` counts, on any number of threads."""
    if threads > pool.threads():
        pytest.skip("the pool has one thread")
    rng = np.random.default_rng(0)
    start = rng.integers(-1000, 1000, (parts, peak.accumulators(), peak.lanes())).astype(np.float32)
    acc = start.copy()
    peak.kernel().run(acc, 37, threads)
    np.testing.assert_array_equal(acc, start + 37)
    assert peak.flops(37, parts) == 2 * 37 * start.size


def test_peak_kernel_computes_fma_chains():
    """acc -> acc * a + b per iteration, against NumPy (exact: a halving and small integers)."""
    start = np.arange(2 * peak.accumulators() * peak.lanes(), dtype=np.float32).reshape(2, peak.accumulators(), -1)
    acc, want = start.copy(), start.copy()
    peak.kernel().run(acc, 3, a=0.5, b=4.0)
    for _ in range(3):
        want = want * np.float32(0.5) + np.float32(4.0)
    np.testing.assert_array_equal(acc, want)


def test_peak_kernel_is_independent_vector_fmas():
    """The loop the count assumes: one vector FMA per chain per iteration (that the chains are
    independent, each from its own start, is what test_peak_kernel_computes_fma_chains checks)."""
    ir = peak.kernel().optimized_ir
    vector = f"<{peak.lanes()} x float>"
    assert ir.count(f"call {vector} @llvm.fma.v{peak.lanes()}f32(") == peak.accumulators()
    assert peak.accumulators() >= 2 * 4  # enough chains to fill 2 FMA units of 4 cycles' latency (Zen 3, Intel)


def test_peak_kernel_checks_its_arguments():
    k = peak.kernel()
    with pytest.raises(ValueError, match="C-contiguous float32"):
        k.run(np.zeros((1, peak.accumulators(), peak.lanes()), np.float64), 1)
    with pytest.raises(ValueError, match="at least 1"):
        k.run(np.zeros((1, peak.accumulators(), peak.lanes()), np.float32), 0)
    with pytest.raises(ValueError, match="the pool has"):
        k.run(np.zeros((1, peak.accumulators(), peak.lanes()), np.float32), 1, threads=pool.threads() + 1)


def test_fma_peak_is_a_positive_figure():
    gflops = measure.fma_peak(1, min_time=0.001, windows=3)
    assert math.isfinite(gflops) and gflops > 0
    assert measure.fma_peak(pool.threads() + 1) is None


# ----------------------------------------------------------------------------- issue 6's targets
def test_targets_are_the_issue_table_as_ratios():
    speedups = {(t.workload, t.baseline): t.required for t in targets.TARGETS if t.kind == "speedup"}
    assert speedups == pytest.approx({("linreg", "torch-eager"): 77.5, ("linreg", "jax-jit"): 10.0,
                                      ("mlp_small", "torch-eager"): 8.0, ("mlp_small", "jax-jit"): 2.6,
                                      ("mlp_large", "torch-eager"): 1.5, ("mlp_large", "jax-jit"): 4.6 / 3.0})
    others = [(t.workload, t.mode, t.kind, t.required) for t in targets.TARGETS if t.kind != "speedup"]
    assert others == [("linreg", "gradc-compiled-run", "us_per_step", 0.2),
                      ("mlp_large", "gradc-compiled", "pct_peak", 70)]


def _ok(wl, mode, us, gflops=1.0):
    return {"workload": wl, "mode": mode, "status": "ok", "median_s": us * 1e-6, "gflops": gflops}


def _judged(results, fma=None, workloads=("linreg", "mlp_small", "mlp_large")):
    payload = {"workloads": dict.fromkeys(workloads), "results": results, "fma_peak_gflops": fma or {}}
    return targets.evaluate(payload)


def test_targets_met_and_not_met():
    rows = _judged([_ok("linreg", "gradc-compiled", 2.5), _ok("linreg", "torch-eager", 250),
                    _ok("linreg", "jax-jit", 20), _ok("linreg", "gradc-compiled-run", 0.19),
                    _ok("mlp_large", "gradc-compiled", 3000, gflops=141.0), _ok("mlp_large", "torch-eager", 4560),
                    _ok("mlp_large", "jax-jit", 4590)], fma={"1": 100.0, "2": 200.0})
    linreg = [r for r in rows if r["workload"] == "linreg"]
    assert [(r["measured"], r["met"]) for r in linreg] == [(pytest.approx(100.0), True), (pytest.approx(8.0), False),
                                                            (pytest.approx(0.19), True)]
    large = [r for r in rows if r["workload"] == "mlp_large"]
    # 4560/3000 = 1.52 meets 4500/3000; 4590/3000 = 1.53 misses 4600/3000; 141 of 200 GFLOP/s is 70.5%
    assert [(r["measured"], r["met"]) for r in large] == [(pytest.approx(1.52), True), (pytest.approx(1.53), False),
                                                           (pytest.approx(70.5), True)]
    assert [r["target"] for r in linreg] == [">= 77.5x vs torch-eager (~155 us -> <= 2 us)",
                                            ">= 10x vs jax-jit (~20 us -> <= 2 us)", "< 0.2 us/step (step.run(n))"]
    assert targets.format_measured(linreg[1]) == "8.00x" and targets.verdict(linreg[1]) == "not met"
    assert [r["workload"] for r in rows] == ["linreg"] * 3 + ["mlp_small"] * 2 + ["mlp_large"] * 3
    assert [r["met"] for r in rows if r["workload"] == "mlp_small"] == [None, None]


def test_targets_not_measured_or_failed():
    rows = list(_judged([{"workload": "linreg", "mode": "gradc-compiled", "status": "FAILED", "reason": "loss"},
                         {"workload": "linreg", "mode": "gradc-compiled-run", "status": "unavailable"},
                         _ok("mlp_large", "gradc-compiled", 3000)], fma={"1": 100.0, "2": None},
                        workloads=("linreg", "mlp_large")))
    assert [r["workload"] for r in rows] == ["linreg"] * 3 + ["mlp_large"] * 3  # only the workloads run
    assert [(r["met"], r.get("why")) for r in rows] == [
        (False, "gradc-compiled FAILED"), (False, "gradc-compiled FAILED"), (None, "gradc-compiled-run not run"),
        (None, "torch-eager not measured"), (None, "jax-jit not measured"), (None, "no 2-thread FMA peak")]
    assert targets.verdict(rows[0]) == "not met (gradc-compiled FAILED)"
    assert targets.verdict(rows[5]) == "not measured (no 2-thread FMA peak)" and targets.format_measured(rows[5]) == "-"


def test_share_of_a_contended_peak_is_not_judged():
    """A 2-thread FMA peak below 1.5x the 1-thread one was measured while other work held a core:
    a share of it would look too high, so the target is shown but not judged."""
    results = [_ok("mlp_large", "gradc-compiled", 3000, gflops=141.0)]
    fair, busy = (_judged(results, fma={"1": 100.0, "2": v}, workloads=("mlp_large",))[-1] for v in (150.0, 149.0))
    assert (fair["measured"], fair["met"]) == (pytest.approx(94.0), True)
    assert (busy["measured"], busy["met"]) == (pytest.approx(141 / 1.49), None)
    assert targets.verdict(busy) == "not judged (the 2-thread FMA peak was measured on a busy machine)"
    assert measure.contended({"1": 100.0, "2": 149.0, "4": 310.0}) == ["2"]
    assert measure.contended({"1": None, "2": 10.0}) == []


def test_report_prints_the_targets_section_and_a_busy_peak():
    payload = {"machine": {"cpu": "cpu", "cpus": 2, "python": "3", "numpy": "2", "blas": "b", "torch": None,
                           "jax": None, "gradc": "0", "gradc_compile_backend": "c"},
               "config": {"threads": 2, "windows": 3, "min_time": 0.1, "peak_n": 512, "fma_windows": 5},
               "fma_peak_gflops": {"1": 100.0, "2": 120.0},
               "fma_kernel": {"accumulators": 12, "lanes": 8},
               "peak_gflops": {"1": 90.0, "2": 170.0, "machine": 170.0},
               "pct_peak_of": {"kind": "fma", "threads": 2, "gflops": 120.0}, "workloads": {"linreg": {}},
               "results": [_ok("linreg", "gradc-compiled", 2.0) | {"first_call_s": 0.1, "peak_rss_growth_mb": 1.0},
                           _ok("linreg", "torch-eager", 150) | {"first_call_s": 0.1, "peak_rss_growth_mb": 1.0}]}
    payload["targets"] = targets.evaluate(payload)
    out = report.markdown(payload).splitlines()
    assert ("FMA peak (native kernel, 12 chains of 8-lane FMAs per thread, median of 5 windows): "
            "100 GFLOP/s on 1 thread, 120 GFLOP/s on 2 threads.") in out[1]
    assert "Warning: the FMA peak on 2 threads is less than 1.5x that on 1 thread" in out[2]
    i = out.index("Targets (issue 6), by ratio in this run: 0 of 3 met (2 not judged).")
    assert out[i + 2:i + 5] == [
        "| workload | mode | target | this run | verdict |", "|---|---|---|---:|---|",
        "| linreg | gradc-compiled | >= 77.5x vs torch-eager (~155 us -> <= 2 us) | 75.00x | not met |"]
