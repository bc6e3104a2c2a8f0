"""Issue 6's performance targets for gradc compiled, judged by ratios measured in one run.

The issue gives absolute times measured once on this machine (PyTorch eager,
JAX jit, and gradc's target); absolute times move with the machine's load, so
a target is the ratio of those times, e.g. linreg's PyTorch ~155 us against
gradc's <= 2 us asks for a speedup of 77.5x over torch-eager in the same run.
Two targets have no baseline and stay absolute: run(n)'s time per step, and
the share of the FMA peak measured at the start of the run (not judged when
that peak shows other work held a core: a low peak makes a share look high).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import measure

ISSUE = 6
JUDGED = "gradc-compiled"


@dataclass(frozen=True)
class Target:
    workload: str
    mode: str          # the mode judged
    kind: str          # "speedup" (over `baseline`), "us_per_step" (below), "pct_peak" (of the FMA peak)
    required: float
    baseline: str = ""  # the mode to beat, for "speedup"
    threads: int = 0   # the FMA peak's threads, for "pct_peak"
    source: str = ""   # where the number comes from in the issue

    def describe(self) -> str:
        if self.kind == "speedup":
            return f">= {self.required:.3g}x vs {self.baseline} ({self.source})"
        if self.kind == "us_per_step":
            return f"< {self.required:g} us/step ({self.source})"
        return f">= {self.required:g}% of the {self.threads}-thread FMA peak ({self.source})"


def _speedups(workload, torch_us, jax_us, gradc_us) -> list:
    """A row of the issue's table: gradc's target time against PyTorch's and JAX's, as two ratios."""
    return [Target(workload, JUDGED, "speedup", base_us / gradc_us, baseline,
                   source=f"~{base_us:g} us -> <= {gradc_us:g} us")
            for baseline, base_us in (("torch-eager", torch_us), ("jax-jit", jax_us))]


TARGETS = [
    *_speedups("linreg", 155, 20, 2),
    Target("linreg", "gradc-compiled-run", "us_per_step", 0.2, source="step.run(n)"),
    *_speedups("mlp_small", 400, 130, 50),
    *_speedups("mlp_large", 4500, 4600, 3000),
    Target("mlp_large", JUDGED, "pct_peak", 70, threads=2, source="the step's FLOPs"),
]


def evaluate(payload, targets=TARGETS) -> list:
    """The targets of the run's workloads, each against its results: a dict with `measured`
    (None when this run could not measure it) and `met` (True, False, or None when it was not
    measured or cannot be judged; `why` says)."""
    results = {(r["workload"], r["mode"]): r for r in payload["results"]}
    return [_judge(t, results, payload.get("fma_peak_gflops", {})) for t in targets
            if t.workload in payload["workloads"]]


def _judge(t: Target, results: dict, fma_peak: dict) -> dict:
    row = {"workload": t.workload, "mode": t.mode, "kind": t.kind, "required": t.required,
           "target": t.describe(), "measured": None, "met": None}
    mine = results.get((t.workload, t.mode))
    if mine is None or mine["status"] == "unavailable":
        return dict(row, why=f"{t.mode} not run")
    if mine["status"] != "ok":
        return dict(row, met=False, why=f"{t.mode} {mine['status']}")
    if t.kind == "speedup":
        base = results.get((t.workload, t.baseline))
        if base is None or base["status"] != "ok":
            return dict(row, why=f"{t.baseline} not measured")
        measured = base["median_s"] / mine["median_s"]
    elif t.kind == "us_per_step":
        measured = mine["median_s"] * 1e6
    else:
        peak = fma_peak.get(str(t.threads))
        if not peak:
            return dict(row, why=f"no {t.threads}-thread FMA peak")
        measured = 100 * mine["gflops"] / peak
        if str(t.threads) in measure.contended(fma_peak):  # a low peak would make a low share look high
            return dict(row, measured=measured, why=f"the {t.threads}-thread FMA peak was measured on a busy machine")
    met = measured < t.required if t.kind == "us_per_step" else measured >= t.required
    return dict(row, measured=measured, met=met)


def format_measured(row: dict) -> str:
    if row["measured"] is None:
        return "-"
    v = row["measured"]
    return {"speedup": f"{v:.2f}x", "us_per_step": f"{v:.3g} us", "pct_peak": f"{v:.1f}%"}[row["kind"]]


def verdict(row: dict) -> str:
    if row["met"] is None:
        return f"not {'measured' if row['measured'] is None else 'judged'} ({row['why']})"
    return "met" if row["met"] else "not met" + (f" ({row['why']})" if "why" in row else "")
