"""What each graph pass does to a training step, and what it buys.

    python examples/study_passes.py [--pipeline simplify,fold,cse,dce,fuse,plan] [--explain]

Traces one training step of the benchmark's `mlp_small` workload (an MLP
64-128-64-10 with ReLU, batch 64, cross-entropy, SGD with momentum 0.9),
differentiates it, then cuts the pass pipeline after each pass and, for
every prefix, prints the graph's node count, its kernel count (the
functions the code generator emits), the arena (bytes of buffers the
compiled step allocates) and the time of one compiled step (the median of
repeated windows of calls, on the same arrays for every prefix). Each
compiled prefix is checked against the reference interpreter first.
"""
import argparse
import time

import numpy as np

import gradc
from gradc.bench.workloads import WORKLOADS, make_data, training_step
from gradc.codegen import compile_graph
from gradc.ir import interpret
from gradc.passes import DEFAULT_PIPELINE, STATS, parse_pipeline, run_pipeline
from gradc.passes.explain import explain


def autodiff_graph():
    """The workload's step as an IR graph after the reverse-mode pass, and example inputs."""
    wl = WORKLOADS["mlp_small"]
    gradc.manual_seed(0)
    model, criterion, optimizer = wl.build(gradc)
    step = training_step(model, criterion, optimizer)
    x, y = (gradc.tensor(a) for a in make_data(wl))
    step(x, y)  # one eager step creates the momentum buffers: the steady-state step is traced
    graph = gradc.trace(step, x, y).ir("autodiff")
    rng = np.random.default_rng(0)
    arrays = {}
    for v in graph.inputs:
        if v.kind == "input":
            arrays[v.name] = (x if v.name == "x" else y).numpy()
        elif v.kind == "scalar":
            arrays[v.name] = np.array(wl.hyper["lr"], v.dtype.np)
        else:
            arrays[v.name] = (rng.standard_normal(v.shape) * 0.1).astype(v.dtype.np)
    return graph, arrays


def step_seconds(compiled: dict, arrays, windows=25, calls=100) -> dict:
    """Per compiled graph, the median over `windows` of the mean time of `calls` steps.

    The graphs take turns window by window, so a change in the machine's load
    (it is shared) affects them all alike; each updates its own copy of the
    params in place."""
    for c in compiled.values():
        c.bind({k: a.copy() for k, a in arrays.items()})
        for _ in range(calls):
            c.call()
    times = {name: [] for name in compiled}
    for _ in range(windows):
        for name, c in compiled.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                c.call()
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: float(np.median(t)) for name, t in times.items()}


def check(graph, compiled, arrays) -> None:
    want = interpret(graph, arrays)
    got = compiled.run(arrays)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"%{k}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"passes to study (default {DEFAULT_PIPELINE})")
    ap.add_argument("--explain", action="store_true", help="print explain() of the whole pipeline at the end")
    args = ap.parse_args()
    graph, arrays = autodiff_graph()
    steps = [name for name, _ in parse_pipeline(args.pipeline)]
    print(f"mlp_small training step: {len(graph.inputs)} inputs; pipeline {args.pipeline}\n")
    print(f"{'after':10} {'nodes':>6} {'kernels':>8} {'arena bytes':>12} {'step us':>9}")
    compiled, rows = {}, {}
    for i in range(len(steps) + 1):
        name = steps[i - 1] if i else "autodiff"
        g = run_pipeline(graph, ",".join(steps[:i])).graph
        compiled[name] = compile_graph(g)
        check(g, compiled[name], arrays)
        rows[name] = (len(g.nodes), STATS["kernels"](g), compiled[name].arena_bytes)
    seconds = step_seconds(compiled, arrays)
    for c in compiled.values():
        c.close()
    for name, (nodes, kernels, arena) in rows.items():
        rows[name] += (seconds[name] * 1e6,)
        print(f"{name:10} {nodes:6d} {kernels:8d} {arena:12,d} {seconds[name] * 1e6:9.1f}")
    nodes0 = rows["autodiff"][0]
    final = rows[steps[-1]] if steps else rows["autodiff"]
    print(f"\nkernels: {final[1]} in the optimized step for {nodes0} nodes in the autodiff graph "
          f"({nodes0 / final[1]:.1f}x fewer; the goal is at least 3x)")
    if "plan" in steps:
        with_plan = final[2]
        without = STATS["arena"](run_pipeline(graph, ",".join(s for s in steps if s != "plan")).graph)
        print(f"arena: {with_plan:,} bytes with plan, {without:,} without ({without / with_plan:.1f}x smaller)")
    print(f"step: {final[3]:.1f} us optimized, {rows['autodiff'][3]:.1f} us for the autodiff graph as it is "
          "(timings from a shared machine: compare ratios within one run)")
    if args.explain:
        print("\n" + explain(run_pipeline(graph, args.pipeline)))


if __name__ == "__main__":
    main()
