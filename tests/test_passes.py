"""The pass manager, the passes simplify, fold, cse and dce, and `gradc opt`.

Each pass has golden IR-in/IR-out tests on small hand-written graphs (the
expected text is written by hand), and semantic tests: on random graphs
(hypothesis) and on real training steps, the reference interpreter gives
bit-identical results before and after each pass (signed zeros included),
the verifier accepts every result, and the input graph is left unchanged.
"""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradc
import gradc.nn as nn
import gradc.optim as optim
import gradc.prims as P
from gradc.ir import Graph, VerifyError, interpret, parse, verify
from gradc.ir.builder import GraphBuilder, symbolic_tensor
from gradc.passes import PASSES, DEFAULT_PIPELINE, format_report, parse_pipeline, register_pass, run_pipeline
from gradc.passes import manager
from gradc.passes.autodiff import grad
from gradc.passes.opt_cli import main as opt_main

import golden_steps

GOLDEN = Path(__file__).parent / "golden" / "passes"
F32 = gradc.float32


def run(name, text, **opts):
    return PASSES[name](parse(text), **opts)


def expect(graph, text):
    """`graph` prints as the hand-written `text` (formatting normalized by the parser)."""
    assert str(graph) == str(parse(text)), f"got:\n{graph}"


def same_bits(a, b, what=""):
    """Equal arrays, bit for bit (the sign of zero counts); NaNs only need to be NaN in both."""
    a, b = np.asarray(a), np.asarray(b)
    assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        assert np.array_equal(nan, np.isnan(b)), f"{what}: NaN positions differ"
        assert a[~nan].tobytes() == b[~nan].tobytes(), f"{what}: {a} vs {b}"
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def same_results(before, after, feeds, exact=True):
    """The interpreter gives the same outputs (by position) and updates (by
    target) for both graphs; an update dce dropped as a no-op must have
    written the input back."""

    def results(g):
        r = interpret(g, feeds)
        outs = [r[v.name] if v.producer is not None else feeds[v.name] for v in g.outputs]
        return outs, {t.name: r[t.name] for t, _ in g.updates}

    (o0, u0), (o1, u1) = results(before), results(after)
    assert [v.type_str for v in before.outputs] == [v.type_str for v in after.outputs]
    pairs = [(f"output {i}", a, b) for i, (a, b) in enumerate(zip(o0, o1))]
    pairs += [(f"update %{k}", v, u1.get(k, feeds[k])) for k, v in u0.items()]
    for what, want, got in pairs:
        if exact:
            same_bits(want, got, what)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=what)


# ================================================================ golden tests: simplify
def test_simplify_collapses_identities_and_chains():
    g = run("simplify", """
graph g(
    %x: f32[2,3] input,
    %y: f32[2,3] input,
    %i: i64[2,1] input
) {
  %1: f32[2,3] = mul %x, 1.0
  %2: f32[2,3] = neg %1
  %3: f32[2,3] = neg %2
  %4: f32[3,2] = transpose %3 {perm=(1, 0)}
  %5: f32[2,3] = transpose %4 {perm=(1, 0)}
  %6: f32[6] = reshape %5 {shape=(6,)}
  %7: f32[3,2] = reshape %6 {shape=(3, 2)}
  %8: bool[2,3] = gt %x, %y
  %9: f32[2,3] = where %8, %y, %y
  %10: f32[2,3] = sub %9, 0.0
  %11: f32[2,3] = add -0.0, %10
  %12: f32[2,3] = div %11, 1.0
  %13: f64[2,3] = convert %12 {dtype=f64}
  %14: f32[2,3] = convert %13 {dtype=f32}
  %15: f32[2,3] = broadcast %14 {shape=(2, 3)}
  %16: i64[2] = sum %i {axes=(1,)}
  return %7, %15, %16
}""")
    expect(g, """
graph g(
    %x: f32[2,3] input,
    %y: f32[2,3] input,
    %i: i64[2,1] input
) {
  %7: f32[3,2] = reshape %x {shape=(3, 2)}
  %16: i64[2] = reshape %i {shape=(2,)}
  return %7, %y, %16
}""")


SIGNED_ZEROS = """
graph g(
    %x: f32[4] input
) {
  %1: f32[4] = add %x, 0.0
  %2: f32[4] = sub %x, -0.0
  %3: f32[4] = mul %x, 0.0
  %4: f32[4] = add %1, %2
  %5: f32[4] = add %4, %3
  %6: f32[1,4] = reshape %x {shape=(1, 4)}
  %7: f32[4] = sum %6 {axes=(0,)}
  %8: f32[4] = max %6 {axes=(0,)}
  return %5, %7, %8
}"""


def test_simplify_keeps_rewrites_that_would_change_signed_zeros_or_nan():
    # x + 0.0 and x - (-0.0) turn -0.0 into 0.0, x * 0.0 is NaN for inf; a sum
    # over a size-1 axis is x + 0.0, a max over one is x
    expect(run("simplify", SIGNED_ZEROS), """
graph g(
    %x: f32[4] input
) {
  %1: f32[4] = add %x, 0.0
  %2: f32[4] = sub %x, -0.0
  %3: f32[4] = mul %x, 0.0
  %4: f32[4] = add %1, %2
  %5: f32[4] = add %4, %3
  %7: f32[4] = add %x, 0.0
  return %5, %7, %x
}""")
    x = np.array([-0.0, 0.0, np.inf, -2.5], np.float32)
    same_results(parse(SIGNED_ZEROS), run("simplify", SIGNED_ZEROS), {"x": x})


def test_simplify_fast_math_drops_zero_terms():
    g = run("simplify", SIGNED_ZEROS, fast_math=True)
    expect(g, """
graph g(
    %x: f32[4] input
) {
  %4: f32[4] = add %x, %x
  return %4, %x, %x
}""")
    x = np.array([-1.0, 0.5, 3.0, -2.5], np.float32)  # finite: where fast-math rules hold
    same_results(parse(SIGNED_ZEROS), g, {"x": x}, exact=False)


def test_simplify_keeps_types_by_reshape_or_broadcast():
    g = run("simplify", """
graph g(
    %x: f32[3] input,
    %c: bool[2,3] input
) {
  %1: f32[2,3] = const {value=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}
  %2: f32[2,3] = mul %x, %1
  %3: f32[1,3] = reshape %x {shape=(1, 3)}
  %4: f32[] = const {value=[1.0]}
  %5: f32[1,3] = div %3, %4
  %6: f32[2,3] = where %c, %x, %x
  %7: f32[2,3] = where %c, 2.0, 2.0
  %8: i64[3] = convert %x {dtype=i64}
  %9: i64[3] = mul %8, 0
  return %2, %5, %6, %7, %9
}""")
    expect(g, """
graph g(
    %x: f32[3] input,
    %c: bool[2,3] input
) {
  %2: f32[2,3] = broadcast %x {shape=(2, 3)}
  %3: f32[1,3] = reshape %x {shape=(1, 3)}
  %6: f32[2,3] = broadcast %x {shape=(2, 3)}
  %10: f32[] = const {value=[2.0]}
  %7: f32[2,3] = broadcast %10 {shape=(2, 3)}
  %11: i64[] = const {value=[0]}
  %9: i64[3] = broadcast %11 {shape=(3,)}
  return %2, %3, %6, %7, %9
}""")


def test_simplify_composes_transposes_and_constant_selects():
    g = run("simplify", """
graph g(
    %x: f32[2,3,4] input,
    %y: f32[2,3,4] input
) {
  %1: f32[3,4,2] = transpose %x {perm=(1, 2, 0)}
  %2: f32[4,3,2] = transpose %1 {perm=(1, 0, 2)}
  %3: bool[] = const {value=[True]}
  %4: f32[2,3,4] = where %3, %x, %y
  %5: bool[3,4] = const {value=[False, False, False, False, False, False, False, False, False, False, False, False]}
  %6: f32[2,3,4] = where %5, %x, %y
  %7: f32[2,3,4] = transpose %x {perm=(0, 1, 2)}
  return %2, %4, %6, %7
}""")
    # transpose(transpose(x, p1), p2) == transpose(x, p1[p2])
    expect(g, """
graph g(
    %x: f32[2,3,4] input,
    %y: f32[2,3,4] input
) {
  %2: f32[4,3,2] = transpose %x {perm=(2, 1, 0)}
  return %2, %x, %y, %x
}""")


def test_simplify_convert_through_a_wider_type_only():
    g = run("simplify", """
graph g(
    %x: f32[2] input,
    %i: i64[2] input
) {
  %1: f64[2] = convert %x {dtype=f64}
  %2: i64[2] = convert %1 {dtype=i64}
  %3: f64[2] = convert %i {dtype=f64}
  %4: i64[2] = convert %3 {dtype=i64}
  return %2, %4
}""")
    # f32 -> f64 is exact, so f32 -> f64 -> i64 is f32 -> i64; i64 -> f64 rounds, so it stays
    expect(g, """
graph g(
    %x: f32[2] input,
    %i: i64[2] input
) {
  %2: i64[2] = convert %x {dtype=i64}
  %3: f64[2] = convert %i {dtype=f64}
  %4: i64[2] = convert %3 {dtype=i64}
  return %2, %4
}""")


def test_rule_table_is_data():
    from gradc.passes.simplify import RULES, Rule

    assert all(isinstance(r, Rule) for r in RULES)
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert {r.name for r in RULES if r.fast_math} >= {"add-zero", "mul-zero"}


# ================================================================ golden tests: fold
FOLD_IN = """
graph g(
    %x: f32[2,3] input
) {
  %1: f32[2] = const {value=[1.0, 2.0]}
  %2: f32[2] = mul %1, 3.0
  %3: f32[2,1] = reshape %2 {shape=(2, 1)}
  %4: f32[2,3] = broadcast %3 {shape=(2, 3)}
  %5: f32[2,3] = add %x, %4
  %6: f32[] = const {value=[4.0]}
  %7: f32[] = sqrt %6
  %8: f32[2,3] = mul %5, %7
  %9: i64[2,1] = const {value=[0, 7]}
  %10: f32[2,1] = gather %3, %9 {axis=1}
  return %8, %10
}"""


def test_fold_evaluates_constant_chains_but_not_growing_broadcasts_or_failures():
    # the broadcast would only copy %3; the gather's index 7 is out of range: it fails at run time
    expect(run("fold", FOLD_IN), """
graph g(
    %x: f32[2,3] input
) {
  %3: f32[2,1] = const {value=[3.0, 6.0]}
  %4: f32[2,3] = broadcast %3 {shape=(2, 3)}
  %5: f32[2,3] = add %x, %4
  %7: f32[] = const {value=[2.0]}
  %8: f32[2,3] = mul %5, %7
  %9: i64[2,1] = const {value=[0, 7]}
  %10: f32[2,1] = gather %3, %9 {axis=1}
  return %8, %10
}""")


def test_fold_size_limit_and_shape_arithmetic():
    text = """
graph g(
    %x: f32[3,2] input
) {
  %1: f32[2,3] = const {value=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
  %2: f32[3,2] = transpose %1 {perm=(1, 0)}
  %3: f32[6] = reshape %2 {shape=(6,)}
  %4: f32[3] = index %3 {spec=[0:6:2]}
  %5: f32[3,1] = reshape %4 {shape=(3, 1)}
  %6: f32[3,2] = add %x, %5
  return %6, %2
}"""
    expect(run("fold", text), """
graph g(
    %x: f32[3,2] input
) {
  %2: f32[3,2] = const {value=[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]}
  %5: f32[3,1] = const {value=[1.0, 2.0, 3.0]}
  %6: f32[3,2] = add %x, %5
  return %6, %2
}""")
    small = run("fold", text, max_elements=4)  # the 6-element transpose stays; its users cannot fold
    assert [n.op for n in small.nodes] == ["const", "transpose", "reshape", "index", "reshape", "add"]


# ================================================================ golden tests: cse
def test_cse_merges_identical_nodes_exactly():
    g = run("cse", """
graph g(
    %x: f32[2,3] input,
    %y: f32[2,4] input,
    %w: f32[4,3] param
) {
  %1: f32[3,4] = transpose %w {perm=(1, 0)}  # model.py:3  forward
  %2: f32[2,4] = matmul %x, %1
  %3: f32[3,4] = transpose %w {perm=(1, 0)}  # model.py:9  backward
  %4: f32[2,4] = matmul %x, %3
  %5: f32[2,4] = add %2, %y
  %6: f32[2,4] = add %y, %4
  %7: f32[2,4] = sub %5, %y
  %8: f32[2,4] = sub %y, %6
  %9: f32[4] = const {value=[0.0, 0.0, 0.0, 0.0]}
  %10: f32[4] = const {value=[0.0, 0.0, 0.0, 0.0]}
  %11: f32[4] = const {value=[-0.0, 0.0, 0.0, 0.0]}
  %12: f32[2,4] = add %7, %9
  %13: f32[2,4] = add %8, %10
  %14: f32[2,4] = add %13, %11
  %15: f32[2] = sum %12 {axes=(1,)}
  %16: f32[4] = sum %12 {axes=(0,)}
  %17: f32[2,4] = mul %7, 2.0
  %18: f32[2,4] = mul 2.0, %7
  %19: f32[2,4] = mul %7, -0.0
  %20: f32[2,4] = mul %7, 0.0
  return %12, %13, %14, %15, %16, %17, %18, %19, %20
}""")
    expect(g, """
graph g(
    %x: f32[2,3] input,
    %y: f32[2,4] input,
    %w: f32[4,3] param
) {
  %1: f32[3,4] = transpose %w {perm=(1, 0)}  # model.py:3  forward
  %2: f32[2,4] = matmul %x, %1
  %5: f32[2,4] = add %2, %y
  %7: f32[2,4] = sub %5, %y
  %8: f32[2,4] = sub %y, %5
  %9: f32[4] = const {value=[0.0, 0.0, 0.0, 0.0]}
  %11: f32[4] = const {value=[-0.0, 0.0, 0.0, 0.0]}
  %12: f32[2,4] = add %7, %9
  %13: f32[2,4] = add %8, %9
  %14: f32[2,4] = add %13, %11
  %15: f32[2] = sum %12 {axes=(1,)}
  %16: f32[4] = sum %12 {axes=(0,)}
  %17: f32[2,4] = mul %7, 2.0
  %19: f32[2,4] = mul %7, -0.0
  %20: f32[2,4] = mul %7, 0.0
  return %12, %13, %14, %15, %16, %17, %17, %19, %20
}""")


def test_cse_compares_index_specs_and_dtypes():
    g = run("cse", """
graph g(
    %x: f32[4,3] input,
    %i: i64[2] input
) {
  %1: f32[2,3] = index %x, %i {spec=[$0, 0:3]}
  %2: f32[2,3] = index %x, %i {spec=[$0, 0:3]}
  %3: f32[2,3] = index %x {spec=[0:2, 0:3]}
  %4: f32[2,3] = index %x {spec=[0:4:2, 0:3]}
  %5: f64[4,3] = convert %x {dtype=f64}
  %6: i64[4,3] = convert %x {dtype=i64}
  %7: f64[4,3] = convert %x {dtype=f64}
  return %1, %2, %3, %4, %5, %6, %7
}""")
    assert [n.out.name for n in g.nodes] == ["1", "3", "4", "5", "6"]
    assert [v.name for v in g.outputs] == ["1", "1", "3", "4", "5", "6", "5"]


# ================================================================ golden tests: dce
def test_dce_drops_loss_frozen_gradients_and_no_op_updates():
    g = run("dce", """
graph step(
    %w: f32[3] param,
    %f: f32[3] param,
    %x: f32[3] input,
    %lr: f32[] scalar
) {
  %1: f32[3] = mul %x, %w
  %2: f32[3] = mul %1, %f
  %loss: f32[] = sum %2 {axes=(0,)}
  %d.loss: f32[] = const {value=[1.0]}
  %d.2: f32[3] = broadcast %d.loss {shape=(3,)}
  %d.1: f32[3] = mul %d.2, %f
  %d.w: f32[3] = mul %d.1, %x
  %d.f: f32[3] = mul %d.2, %1
  %3: f32[3] = mul %d.w, %lr
  %4: f32[3] = sub %w, %3
  %w <- %4
  %f <- %f
  return %d.w
}""")
    expect(g, """
graph step(
    %w: f32[3] param,
    %f: f32[3] param,
    %x: f32[3] input,
    %lr: f32[] scalar
) {
  %d.loss: f32[] = const {value=[1.0]}
  %d.2: f32[3] = broadcast %d.loss {shape=(3,)}
  %d.1: f32[3] = mul %d.2, %f
  %d.w: f32[3] = mul %d.1, %x
  %3: f32[3] = mul %d.w, %lr
  %4: f32[3] = sub %w, %3
  %w <- %4
  return %d.w
}""")


def test_dce_drops_the_forward_loss_when_only_gradients_are_returned():
    g = Graph("f")
    x = g.add_input("x", gradc.float64, (3, 4), "input")
    with GraphBuilder(g):
        loss = (gradc.exp(symbolic_tensor(x)) * 2.0).sum() / 7.0
    g.outputs = [loss._data]
    both = grad(g, ["x"])
    only = both.copy()
    only.outputs = only.outputs[1:]
    out = run_pipeline(only, "dce").graph
    names = {n.out.name for n in out.nodes}
    assert both.outputs[0].name not in names and len(out.nodes) < len(both.nodes)  # the loss went
    xv = np.random.default_rng(0).standard_normal((3, 4))
    same_bits(interpret(out, {"x": xv})["d.x"], interpret(both, {"x": xv})["d.x"])


def test_rewrites_leave_no_garbage_but_keep_dead_code_for_dce():
    text = """
graph g(
    %x: f32[3] input
) {
  %1: f32[3] = exp %x
  %2: f32[3] = neg %x
  %3: f32[3] = neg %2
  return %3
}"""
    g = run("simplify", text)
    assert [n.out.name for n in g.nodes] == ["1"]  # %2 lost its user to the rewrite; %1 was dead already
    assert run_pipeline(g, "dce").graph.nodes == []


# ================================================================ golden tests: pipelines on real steps
@pytest.mark.parametrize("name", ["linreg", "mlp_adam"])
def test_default_pipeline_golden(name):
    # the default pipeline's rewrites; what fuse and plan add is pinned in test_fuse.py and test_plan.py
    g = parse((GOLDEN / f"{name}.autodiff.ir").read_text())
    out = run_pipeline(g, "simplify,fold,cse,dce").graph
    assert str(out) == (GOLDEN / f"{name}.optimized.ir").read_text()


# ================================================================ the pass manager
def test_parse_pipeline():
    assert parse_pipeline("simplify, cse ,dce") == [("simplify", {}), ("cse", {}), ("dce", {})]
    assert parse_pipeline("default") == parse_pipeline(DEFAULT_PIPELINE) == parse_pipeline(None)
    assert parse_pipeline("simplify<fast-math>,fold<max-elements=16>") == [
        ("simplify", {"fast_math": True}), ("fold", {"max_elements": 16})]
    assert parse_pipeline("") == []
    with pytest.raises(ValueError, match=r"unknown pass 'fuze'.*known passes: .*cse"):
        parse_pipeline("simplify,fuze")
    with pytest.raises(ValueError, match="pass 'cse' has no option 'fast-math'"):
        parse_pipeline("cse<fast-math>")
    with pytest.raises(ValueError, match="registered twice"):
        register_pass("cse")(lambda g: g)


def test_records_statistics_time_and_diff():
    g = parse("""
graph g(
    %a: f32[2,3] input,
    %b: f32[3,4] input
) {
  %1: f32[2,4] = matmul %a, %b
  %2: f32[4,2] = transpose %1 {perm=(1, 0)}
  %3: f32[4,2] = transpose %1 {perm=(1, 0)}
  %4: f32[4,2] = add %2, %3
  %5: f32[4] = sum %4 {axes=(1,)}
  return %5
}""")
    text = str(g)
    res = run_pipeline(g, "dce,cse")
    assert str(g) == text  # the input graph is not changed
    assert res["optimized"] is res.graph and res.pipeline == "dce,cse"
    dce_rec, cse_rec = res.records
    # matmul 2*M*N*K = 2*2*4*3, add 8 elements, sum reads 8; bytes: f32 outputs 8+8+8+8+4
    def counts(stats):  # the arena depends on the host's GEMM scratch size: test_plan.py checks it
        return {k: v for k, v in stats.items() if k != "arena"}

    assert counts(dce_rec.before) == counts(dce_rec.after) == {
        "nodes": 5, "kernels": 5, "flops": 48 + 8 + 8, "bytes": 4 * (8 + 8 + 8 + 8 + 4)}
    assert counts(cse_rec.after) == {"nodes": 4, "kernels": 4, "flops": 64, "bytes": 4 * (8 + 8 + 8 + 4)}
    assert dce_rec.diff == "" and cse_rec.seconds >= 0
    assert "-  %3: f32[4,2] = transpose %1 {perm=(1, 0)}\n" in cse_rec.diff
    assert "+  %4: f32[4,2] = add %2, %2\n" in cse_rec.diff
    table = format_report(res.records)
    lines = table.splitlines()
    assert lines[0].split() == ["pass", "nodes", "kernels", "flops", "bytes", "arena", "ms"]
    assert lines[1].split()[:2] == ["(input)", "5"] and lines[3].split()[:3] == ["cse", "4", "(-1)"]


def test_print_after_and_diff(capsys):
    g = parse((GOLDEN / "linreg.autodiff.ir").read_text())
    buf = io.StringIO()
    run_pipeline(g, "simplify,fold,cse", print_after="cse", file=buf)
    assert buf.getvalue().count("// *** IR after") == 1 and "// *** IR after cse ***" in buf.getvalue()
    run_pipeline(g, "simplify,fold,cse", print_after_all=True, diff=True)
    out = capsys.readouterr().out
    assert out.count("// *** IR after") == 3
    assert "// simplify: no change" in out and "--- before fold" in out and "+++ after cse" in out
    after_cse = out.split("// *** IR after cse ***\n")[1].split("--- before cse")[0]
    assert parse(after_cse).nodes  # the dumps are IR text again


def test_verify_each_names_the_pass_that_broke_the_graph(monkeypatch):
    def breaker(graph):
        g = graph.copy()
        g.outputs[0].shape = (7,)
        return g

    monkeypatch.setitem(PASSES, "breaker", breaker)
    g = parse((GOLDEN / "linreg.autodiff.ir").read_text())
    with pytest.raises(VerifyError, match="after pass breaker"):
        run_pipeline(g, "cse,breaker")
    run_pipeline(g, "breaker", verify_each=False)
    monkeypatch.delenv("GRADC_CHECK_IR")  # outside the tests only the code generator verifies
    run_pipeline(g, "cse,breaker")
    with pytest.raises(VerifyError, match="after pass breaker"):
        run_pipeline(g, "cse,breaker", verify_each=True)


def test_empty_pipeline_gives_a_copy():
    g = parse((GOLDEN / "linreg.autodiff.ir").read_text())
    res = run_pipeline(g, "")
    assert res.graph is not g and str(res.graph) == str(g) and res.records == []


# ================================================================ semantics on random graphs
RECIPES = {
    "neg": lambda a, b: -a,
    "exp_tanh": lambda a, b: gradc.exp(gradc.tanh(a)),
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "maximum": gradc.maximum,
    "div": lambda a, b: a / (gradc.abs(b) + 1.0),
    "mul_one": lambda a, b: a * 1.0,
    "one_mul": lambda a, b: P.mul(1.0, a),
    "mul_ones_const": lambda a, b: a * gradc.ones(3),
    "add_neg_zero": lambda a, b: P.add(a, -0.0),
    "add_zero": lambda a, b: a + 0.0,
    "sub_zero": lambda a, b: a - 0.0,
    "sub_neg_zero": lambda a, b: P.sub(a, -0.0),
    "signed_zeros": lambda a, b: P.add(a, -0.0) - (a + 0.0),  # -0.0 for a = -0.0, unless cse confused them
    "div_one": lambda a, b: a / 1.0,
    "mul_zero": lambda a, b: a * 0.0,
    "neg_neg": lambda a, b: -(-a),
    "transpose2": lambda a, b: a.t().t(),
    "permute3": lambda a, b: a.reshape(1, 2, 3).permute(2, 0, 1).permute(1, 2, 0).reshape(2, 3),
    "reshape_chain": lambda a, b: a.reshape(6).reshape(3, 2).reshape(2, 3),
    "sum_unit": lambda a, b: a.reshape(2, 1, 3).sum(1),
    "sum_none": lambda a, b: a.sum(()),
    "max_unit": lambda a, b: gradc.amax(a.reshape(1, 2, 3), 0),
    "broadcast_same": lambda a, b: P.broadcast(a, shape=(2, 3)),
    "broadcast2": lambda a, b: P.broadcast(P.broadcast(a[0], shape=(1, 3)), shape=(2, 3)) + a,
    "convert_same": lambda a, b: P.convert(a, dtype=F32),
    "convert_roundtrip": lambda a, b: a.double().float(),
    "where_same": lambda a, b: gradc.where(a > b, a, a),
    "where_const": lambda a, b: gradc.where(gradc.tensor(np.ones(3, bool)), a, b),
    "duplicate": lambda a, b: gradc.tanh(a) + gradc.tanh(a),
    "commuted": lambda a, b: (a * b) - (b * a),
    "fold": lambda a, b: a + (gradc.tensor(np.arange(6.0).reshape(2, 3), dtype=F32) * 2.0).reshape(3, 2).t(),
    "matmul": lambda a, b: (a @ b.t()) @ a / 4.0,
    "softmax": lambda a, b: gradc.softmax(a, 1),
}
PALETTE = np.array([-0.0, 0.0, 1.0, -1.5, 0.5, 2.0, -3.0, 0.25], np.float32)


def random_graph(program, outs):
    g = Graph("rand")
    vals = [g.add_input("x0", F32, (2, 3), "input"), g.add_input("x1", F32, (2, 3), "input"),
            g.add_input("p", F32, (2, 3), "param")]
    pool = [symbolic_tensor(v) for v in vals]
    with GraphBuilder(g):
        for name, i, j in program:
            pool.append(RECIPES[name](pool[i % len(pool)], pool[j % len(pool)]))
    g.outputs = [pool[k % len(pool)]._data for k in outs]
    g.updates = [(vals[2], pool[-1]._data)]
    return g.verify()


programs = st.lists(st.tuples(st.sampled_from(sorted(RECIPES)), st.integers(0, 50), st.integers(0, 50)),
                    min_size=1, max_size=14)


def feeds_for(seed, special):
    rng = np.random.default_rng(seed)
    pal = np.concatenate([PALETTE, np.array([np.inf, -np.inf], np.float32)]) if special else PALETTE
    return {k: rng.choice(pal, (2, 3)).astype(np.float32) for k in ("x0", "x1", "p")}


EXACT_PIPELINES = ["simplify", "fold", "cse", "dce", DEFAULT_PIPELINE, "cse,simplify,dce,fold,cse"]


@settings(max_examples=60, deadline=None)
@given(programs, st.lists(st.integers(0, 60), min_size=1, max_size=3), st.integers(0, 2**16), st.booleans())
def test_passes_keep_meaning_on_random_graphs(program, outs, seed, special):
    g = random_graph(program, outs)
    text = str(g)
    feeds = feeds_for(seed, special)
    for pipeline in EXACT_PIPELINES:
        out = run_pipeline(g, pipeline).graph  # verifies after every pass
        same_results(g, out, feeds)
        assert str(g) == text, f"{pipeline} changed its input graph"
    out = run_pipeline(g, "simplify<fast-math>,fold,cse,dce").graph
    same_results(g, out, feeds_for(seed, False), exact=False)


def test_random_graph_patterns_do_get_rewritten():
    names = sorted(RECIPES)
    g = random_graph([(n, 0, 1) for n in names], [len(names) + 2 - k for k in range(len(names))])
    out = run_pipeline(g).graph
    assert len(out.nodes) < len(g.nodes) / 2
    same_results(g, out, feeds_for(0, True))


# ================================================================ semantics on training steps
def mlp_momentum():
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    model[0].bias.requires_grad_(False)  # a frozen parameter
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9,
                          weight_decay=1e-4)

    def mlp_momentum_step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return mlp_momentum_step, (gradc.randn(5, 6), gradc.tensor([0, 3, 1, 2, 3]))


def mse_adamw():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    criterion = nn.MSELoss()
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)

    def mse_adamw_step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return mse_adamw_step, (gradc.randn(4, 3), gradc.randn(4, 1))


STEPS = {"linreg": golden_steps.linreg, "mlp_adam": golden_steps.mlp_adam, "mlp_momentum": mlp_momentum,
         "mse_adamw": mse_adamw}


def step_graph(name):
    step, args = STEPS[name]()
    g = gradc.trace(step, *args).ir("autodiff")
    rng = np.random.default_rng(1)
    examples = iter(np.asarray(a.numpy()) for a in args)
    feeds = {v.name: next(examples) if v.kind == "input" else rng.uniform(0.1, 1.0, v.shape).astype(v.dtype.np)
             for v in g.inputs}
    return g, feeds


@pytest.mark.parametrize("name", sorted(STEPS))
def test_passes_keep_meaning_on_training_steps(name):
    g, feeds = step_graph(name)
    text = str(g)
    for pipeline in ["simplify", "fold", "cse", "dce", DEFAULT_PIPELINE]:
        res = run_pipeline(g, pipeline)
        same_results(g, res.graph, feeds)
        verify(res.graph)
    assert str(g) == text


def test_default_pipeline_shrinks_the_mlp_adam_step(capsys):
    g, _ = step_graph("mlp_adam")
    res = run_pipeline(g, "simplify,fold,cse,dce")
    before, after = len(g.nodes), len(res.graph.nodes)
    with capsys.disabled():
        print(f"\nmlp_adam autodiff graph: {before} nodes -> {after} after simplify,fold,cse,dce")
    assert after < before
    assert res.records[-1].after["nodes"] == after and res.records[0].before["nodes"] == before
    for r, nxt in zip(res.records, res.records[1:]):  # each pass starts from the last one's result
        assert nxt.before == r.after == manager.graph_stats(r.graph_after)


def test_compiled_step_runs_the_pipeline():
    step, args = golden_steps.linreg()
    compiled = gradc.compile(step, passes="simplify,cse,dce")
    compiled(*args)
    assert len(compiled.ir("optimized").nodes) < len(compiled.ir("autodiff").nodes)


# ================================================================ gradc opt
def opt(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = opt_main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_opt_runs_a_pipeline_on_a_file(capsys):
    path = str(GOLDEN / "linreg.autodiff.ir")
    rc, out, err = opt(capsys, path, "--passes=simplify,fold,cse,dce", "--stats", "--verify")
    assert rc == 0 and out == (GOLDEN / "linreg.optimized.ir").read_text()
    assert [line.split()[0] for line in err.splitlines()] == ["pass", "(input)", "simplify", "fold", "cse", "dce"]


def test_opt_reads_stdin_and_prints_dumps_to_stderr(capsys, monkeypatch):
    text = """
graph g(
    %x: f32[3] input
) {
  %1: f32[3] = neg %x
  %2: f32[3] = neg %1
  return %2
}"""
    rc, out, err = opt(capsys, "--passes=simplify", "--print-after-all", "--diff", stdin=text, monkeypatch=monkeypatch)
    assert rc == 0
    assert out == "graph g(\n    %x: f32[3] input\n) {\n  return %x\n}\n"
    assert "// *** IR after simplify ***" in err and "-  %2: f32[3] = neg %1" in err
    rc, out, _ = opt(capsys, "-", stdin=text, monkeypatch=monkeypatch)  # no passes: parse, verify, print
    assert rc == 0 and out == str(parse(text))


def test_opt_emits_dot_and_writes_files(capsys, tmp_path):
    path = str(GOLDEN / "linreg.autodiff.ir")
    rc, out, _ = opt(capsys, path, "--passes=cse", "--emit=dot")
    assert rc == 0 and out.startswith('digraph "linreg_step"')
    dest = tmp_path / "o.ir"
    rc, out, _ = opt(capsys, path, "--passes=dce", "-o", str(dest))
    assert rc == 0 and out == "" and parse(dest.read_text()).nodes


def test_opt_llvm_and_asm_go_through_codegen(capsys, monkeypatch):
    import gradc.codegen

    class Fake:
        def __init__(self, graph):
            self.graph = graph

        def llvm_ir(self):
            return f"; llvm for {self.graph.name} with {len(self.graph.nodes)} nodes\n"

        def asm(self):
            return "; asm\n"

    monkeypatch.setattr(gradc.codegen, "compile_graph", Fake, raising=False)
    path = str(GOLDEN / "linreg.autodiff.ir")
    assert opt(capsys, path, "--passes=default", "--emit=llvm")[1] == "; llvm for linreg_step with 20 nodes\n"
    assert opt(capsys, path, "--emit=asm")[1] == "; asm\n"
    monkeypatch.delattr(gradc.codegen, "compile_graph")
    rc, out, err = opt(capsys, path, "--emit=llvm")
    assert rc == 1 and out == "" and "needs the code generator" in err


def test_opt_errors(capsys, tmp_path):
    path = str(GOLDEN / "linreg.autodiff.ir")
    rc, _, err = opt(capsys, path, "--passes=simplify,nope")
    assert rc == 1 and "unknown pass 'nope'" in err
    rc, _, err = opt(capsys, str(tmp_path / "missing.ir"))
    assert rc == 1 and "cannot read" in err
    bad = tmp_path / "bad.ir"
    bad.write_text("graph g(\n    %x: f32[3] input\n) {\n  %1: f32[4] = neg %x\n  return %1\n}\n")
    rc, _, err = opt(capsys, str(bad))
    assert rc == 1 and "bad.ir" in err and "does not match the neg rule" in err
    rc, out, _ = opt(capsys, "--list-passes")
    assert rc == 0 and {line.split()[0] for line in out.splitlines()} >= {"simplify", "fold", "cse", "dce"}


def test_opt_on_graphs_dumped_by_gradc_dump(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GRADC_DUMP", str(tmp_path))
    step, args = golden_steps.linreg()
    traced = gradc.trace(step, *args)
    traced.ir("autodiff")
    feeds = {"x": args[0].numpy(), "y": args[1].numpy(), "lr": np.float64(0.01),
             "linear.weight": np.array([[0.5]], np.float32), "linear.bias": np.array([-0.25], np.float32)}
    want = interpret(traced.ir("autodiff"), feeds)
    for stage, passes in [("autodiff", "default"), ("traced", "autodiff,default")]:
        rc, out, err = opt(capsys, str(tmp_path / f"linreg_step.{stage}.ir"), f"--passes={passes}", "--verify")
        assert rc == 0, err
        got = interpret(parse(out), feeds)
        for k in want:
            same_bits(got[k], want[k], k)


def test_opt_as_a_module_and_as_the_gradc_command():
    path = str(GOLDEN / "linreg.autodiff.ir")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    for cmd in ([sys.executable, "-m", "gradc.passes.opt_cli"], [sys.executable, "-m", "gradc", "opt"]):
        r = subprocess.run(cmd + [path, "--passes=simplify,fold,cse,dce"], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == (GOLDEN / "linreg.optimized.ir").read_text()


# ---------------------------------------------------------------- the disk cache of pipeline results
def _counting(monkeypatch, name):
    """Replace gradc's pass `name` by a wrapper (still one of gradc's passes) that counts its runs."""
    real, calls = PASSES[name], []

    def counted(graph, **opts):
        calls.append(1)
        return real(graph, **opts)

    counted.__module__ = real.__module__
    monkeypatch.setitem(PASSES, name, counted)
    return calls


def test_pipeline_results_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_CHECK_IR")
    g, feeds = step_graph("mlp_adam")
    calls = _counting(monkeypatch, "cse")
    first = run_pipeline(g)
    second = run_pipeline(g)
    assert len(calls) == 1 and str(second.graph) == str(first.graph)
    assert second.pipeline == first.pipeline == DEFAULT_PIPELINE
    verify(second.graph)
    same_results(g, second.graph, feeds)
    # the records (statistics, diffs, fusion notes) are made by running the passes when asked for
    assert [r.name for r in second.records] == [r.name for r in first.records] and len(calls) == 2
    assert str(second.records[-1].graph_after) == str(first.graph)

    run_pipeline(g, "simplify,cse")  # another pipeline, another input, no cache, verification: the passes run
    run_pipeline(step_graph("mlp_momentum")[0])
    run_pipeline(g, cache=False)
    run_pipeline(g, verify_each=True)
    assert len(calls) == 6
    monkeypatch.setenv("GRADC_CHECK_IR", "1")
    run_pipeline(g)
    assert len(calls) == 7

    monkeypatch.delenv("GRADC_CHECK_IR")
    for entry in tmp_path.glob("*.passes"):
        entry.write_bytes(entry.read_bytes()[:-40])
    assert str(run_pipeline(g).graph) == str(first.graph) and len(calls) == 8  # damaged: run again


def test_pipelines_with_a_users_pass_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_CHECK_IR")
    calls = []

    def mine(graph):
        calls.append(1)
        return graph.copy()

    monkeypatch.setitem(PASSES, "mine", mine)
    g, _ = step_graph("mlp_momentum")
    run_pipeline(g, "cse,mine")
    run_pipeline(g, "cse,mine")
    assert len(calls) == 2 and not list(tmp_path.glob("*.passes"))
