"""The benchmark's outputs: a markdown table, JSON, and a bar plot when matplotlib is present."""
from __future__ import annotations

import json

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
    m, peak = payload["machine"], payload["peak_gflops"]

    def gf(v):
        return f"{v:.0f}" if v else "not measured"

    cfg = payload["config"]
    peaks = ", ".join(f"{gf(v)} GFLOP/s on {t} thread{'s' * (t != '1')}" for t, v in peak.items() if t != "machine")
    lines = [
        f"Machine: {m['cpu']}, {m['cpus']} CPUs; Python {m['python']}, NumPy {m['numpy']} ({m['blas']}), "
        f"PyTorch {m['torch'] or 'not installed'}, JAX {m['jax'] or 'not installed'}; "
        f"gradc {m['gradc']} compiling with {m['gradc_compile_backend']}.",
        f"Each mode runs with {cfg['threads']} thread{'s' * (cfg['threads'] != 1)}. Peak proxy (NumPy float32 {cfg['peak_n']}^2 matmul): {peaks}; "
        f"% peak is of the best of these. Times are medians of {cfg['windows']} interleaved windows of "
        f">= {cfg['min_time']} s; speedup = the baseline's time / this mode's time.",
    ]
    load = [v for v in (m.get("load_average"), m.get("load_average_end")) if v is not None]
    if load and max(load) > 0.5 * m["cpus"]:
        lines.append(f"Warning: the machine was busy (load average up to {max(load):.1f} on {m['cpus']} CPUs): "
                     "absolute figures are pessimistic; ratios measured side by side still compare.")
    lines += [
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(payload)]
    return "\n".join(lines) + "\n"


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
