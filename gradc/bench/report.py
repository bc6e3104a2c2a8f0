"""The benchmark's outputs: a markdown table, JSON, and a bar plot when matplotlib is present."""
from __future__ import annotations

import json

from . import measure, targets

BASELINES = ("gradc-eager", "torch-eager", "jax-jit")
COLUMNS = (["workload", "mode", "us/step", "steps/s"] + [f"speedup vs {b}" for b in BASELINES]
           + ["first call ms", "peak RSS growth MB", "GFLOP/s", "% peak"])


def _num(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def _times(results) -> dict:
    return {(r["workload"], r["mode"]): r["median_s"] for r in results if r["status"] == "ok"}


def rows(payload) -> list:
    """The table's rows as lists of strings, in COLUMNS order."""
    times = _times(payload["results"])
    out = []
    for r in payload["results"]:
        head = [r["workload"], r["mode"]]
        if r["status"] != "ok":
            label = "n/a" if r["status"] == "unavailable" else r["status"]
            out.append(head + [f"{label}: {r['reason']}".replace("|", "/")] + ["-"] * (len(COLUMNS) - 3))
            continue
        t = r["median_s"]
        speedups = []
        for b in BASELINES:
            tb = times.get((r["workload"], b))
            speedups.append(f"{tb / t:.2f}x" if tb else "-")
        mem = _num(r["peak_rss_growth_mb"]) + ("" if r.get("peak_rss_exact", True) else " (>=)")
        pct = f"{r['pct_peak']:.1f}" if "pct_peak" in r else "-"
        out.append(head + [_num(t * 1e6), _num(1 / t)] + speedups
                   + [_num(r["first_call_s"] * 1e3), mem, _num(r["gflops"]), pct])
    return out


def markdown(payload) -> str:
    m, cfg = payload["machine"], payload["config"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpus']} CPUs; Python {m['python']}, NumPy {m['numpy']} ({m['blas']}), "
        f"PyTorch {m['torch'] or 'not installed'}, JAX {m['jax'] or 'not installed'}; "
        f"gradc {m['gradc']} compiling with {m['gradc_compile_backend']}.",
        f"Each mode runs with {cfg['threads']} thread{'s' * (cfg['threads'] != 1)}. {_peak_line(payload)} "
        f"Times are medians of {cfg['windows']} interleaved windows of >= {cfg['min_time']} s; "
        "speedup = the baseline's time / this mode's time.",
    ]
    load = [v for v in (m.get("load_average"), m.get("load_average_end")) if v is not None]
    if load and max(load) > 0.5 * m["cpus"]:
        lines.append(f"Warning: the machine was busy (load average up to {max(load):.1f} on {m['cpus']} CPUs): "
                     "absolute figures are pessimistic; ratios measured side by side still compare.")
    lines += _busy_peak(payload["fma_peak_gflops"])
    lines += [
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(payload)]
    return "\n".join(lines + _targets_section(payload)) + "\n"


def _gf(v) -> str:
    return f"{v:.0f}" if v else "not measured"


def _per_thread_count(peaks: dict) -> str:
    return ", ".join(f"{_gf(v)} GFLOP/s on {t} thread{'s' * (t != '1')}" for t, v in peaks.items() if t != "machine")


def _peak_line(payload) -> str:
    """The measured peaks and what "% peak" is of."""
    cfg, k = payload["config"], payload["fma_kernel"]
    basis = payload["pct_peak_of"]
    of = (f"the FMA peak on {basis['threads']} thread{'s' * (basis['threads'] != 1)}, the modes' thread count"
          if basis["kind"] == "fma" else "the best NumPy matmul (no FMA peak on the modes' thread count)")
    return (f"FMA peak (native kernel, {k['accumulators']} chains of {k['lanes']}-lane FMAs per thread, "
            f"median of {cfg['fma_windows']} windows): {_per_thread_count(payload['fma_peak_gflops'])}. "
            f"NumPy float32 {cfg['peak_n']}^2 matmul: {_per_thread_count(payload['peak_gflops'])}. "
            f"% peak is of {of}.")


def _busy_peak(fma: dict) -> list:
    return [f"Warning: the FMA peak on {t} threads is less than {0.75 * int(t):g}x that on 1 thread: other work "
            "held a core while it was measured, so % of it is overstated (and not judged as a target)."
            for t in measure.contended(fma)]


def _targets_section(payload) -> list:
    """Issue 6's targets for gradc compiled: required, this run's ratio, met or not."""
    rows = payload.get("targets")
    if not rows:
        return []
    met = sum(r["met"] is True for r in rows)
    judged = sum(r["met"] is not None for r in rows)
    out = ["", f"Targets (issue {targets.ISSUE}), by ratio in this run: {met} of {len(rows)} met"
           + (f" ({len(rows) - judged} not judged)" if judged < len(rows) else "") + ".", "",
           "| workload | mode | target | this run | verdict |", "|---|---|---|---:|---|"]
    out += [f"| {r['workload']} | {r['mode']} | {r['target']} | {targets.format_measured(r)} | {targets.verdict(r)} |"
            for r in rows]
    return out


def write_json(payload, path):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def plot(payload, path) -> bool:
    """A bar chart of us/step per workload and mode (log scale); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in payload["results"] if r["status"] == "ok"]
    workloads = list(dict.fromkeys(r["workload"] for r in ok))
    modes = list(dict.fromkeys(r["mode"] for r in ok))
    times = _times(ok)
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(workloads), 4.2))
    width = 0.8 / max(1, len(modes))
    for j, mode in enumerate(modes):
        xs = [i + (j - (len(modes) - 1) / 2) * width for i, w in enumerate(workloads) if (w, mode) in times]
        ys = [times[(w, mode)] * 1e6 for w in workloads if (w, mode) in times]
        ax.bar(xs, ys, width, label=mode)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_yscale("log")
    ax.set_ylabel("us per training step (log scale, lower is better)")
    ax.set_title("gradc bench: time per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
