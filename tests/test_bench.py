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

from gradc.bench import main, measure, report, runner
from gradc.bench.modes import MODES, Mode, Step, numpy_step
from gradc.bench.workloads import WORKLOADS, Workload, flop_count, init_weights, make_data

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
    rows = [line.split(" | ") for line in lines[header + 2:]]
    assert [r[1] for r in rows] == ["gradc-eager", "numpy"]
    assert rows[0][4] == "1.00x" and rows[0][5] == "-"  # vs itself; torch was not run
    assert png.exists() == (importlib.util.find_spec("matplotlib") is not None)


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
