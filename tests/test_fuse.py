"""The `fuse` pass, kernels in the IR text, their code generation, and `explain`.

Golden tests run hand-written IR through the pass and compare with expected
text written by hand from the fusion rules; the reasons fusion stopped are
checked too. Semantic tests: on random graphs (hypothesis) and training
steps the reference interpreter gives bit-identical results before and
after fusing (fusion only groups and reorders nodes), and compiled fused
graphs match the interpreter (odd sizes, size-1 dims, broadcasting inside
kernels, every dtype a kernel can hold). The MLP step of the benchmark has
at least 3x fewer kernels than its autodiff graph has nodes.
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradc
from gradc import prims as P
from gradc.codegen import compile_graph
from gradc.ir import Graph, IRParseError, VerifyError, interpret, parse, verify
from gradc.ir.builder import GraphBuilder, symbolic_tensor
from gradc.passes import PASSES, STATS, run_pipeline
from gradc.passes.explain import explain
from gradc.passes.fuse import kernels

import golden_steps
from test_codegen import assert_close, make, sample
from test_codegen_random import RandomGraph, _broadcastable, compare_compiled
from test_passes import STEPS, feeds_for, programs, random_graph, same_results, step_graph

GOLDEN = Path(__file__).parent / "golden" / "fuse"
F32, F64, I64, BOOL = gradc.float32, gradc.float64, gradc.int64, gradc.bool


def fused(text):
    return PASSES["fuse"](parse(text))


def expect(graph, text):
    assert str(graph) == str(parse(text)), f"got:\n{graph}"


def compiled_matches(graph, feeds, reference=None):
    """Compile `graph`; its results equal the interpreter's on `reference` (default: graph)."""
    want = interpret(reference or graph, feeds)
    got = compile_graph(graph).run(feeds)
    for k, w in want.items():
        assert_close(got[k], w, f"%{k}")


# ================================================================ golden tests
SOFTMAX = """
graph softmax(
    %x: f32[4,5] input,
    %b: f32[5] param
) {
  %1: f32[4,5] = add %x, %b
  %2: f32[4] = max %1 {axes=(1,)}
  %3: f32[4,1] = reshape %2 {shape=(4, 1)}
  %4: f32[4,5] = sub %1, %3
  %5: f32[4,5] = exp %4
  %6: f32[4] = sum %5 {axes=(1,)}
  %7: f32[4,1] = reshape %6 {shape=(4, 1)}
  %8: f32[4,5] = div %5, %7
  return %8
}"""


def test_reductions_take_their_producers_and_consumers():
    g = fused(SOFTMAX)
    expect(g, """
graph softmax(
    %x: f32[4,5] input,
    %b: f32[5] param
) {
  kernel k1 [add+max+reshape] -> %1, %3; temps %2
    %1: f32[4,5] = add %x, %b
    %2: f32[4] = max %1 {axes=(1,)}
    %3: f32[4,1] = reshape %2 {shape=(4, 1)}
  kernel k2 [sub+exp+sum+reshape] -> %5, %7; temps %6
    %4: f32[4,5] = sub %1, %3
    %5: f32[4,5] = exp %4
    %6: f32[4] = sum %5 {axes=(1,)}
    %7: f32[4,1] = reshape %6 {shape=(4, 1)}
  kernel k3 [div] -> %8
    %8: f32[4,5] = div %5, %7
  return %8
}""")
    second_pass = "needs the {} whole: it would take a second loop over [4, 5]"
    assert g.fusion_notes == {
        ("1", "4"): "%4 f32[4,5] " + second_pass.format("max %2 f32[4]"),
        ("3", "4"): "%4 f32[4,5] " + second_pass.format("max %2 f32[4]"),
        ("5", "8"): "%8 f32[4,5] " + second_pass.format("sum %6 f32[4]"),
        ("7", "8"): "%8 f32[4,5] " + second_pass.format("sum %6 f32[4]"),
    }


LAYER = """
graph layer(
    %x: f32[8,4] input,
    %w: f32[3,4] param,
    %b: f32[3] param,
    %g: f32[8,3] input
) {
  %1: f32[4,3] = transpose %w {perm=(1, 0)}
  %2: f32[8,3] = matmul %x, %1
  %3: f32[8,3] = add %2, %b
  %4: bool[8,3] = le %3, 0.0
  %5: f32[8,3] = where %4, 0.0, %3
  %6: f32[8,3] = where %4, 0.0, %g
  %7: f32[4,8] = transpose %x {perm=(1, 0)}
  %8: f32[4,3] = matmul %7, %6
  %9: f32[3,4] = transpose %8 {perm=(1, 0)}
  %10: f32[3,4] = mul %9, 0.1
  %11: f32[3,4] = sub %w, %10
  %w <- %11
  return %5
}"""


def test_matmul_epilogues_transposed_operands_and_results():
    # relu(x @ w.T + b) and its mask in one kernel, the transposes read in place; the
    # weight gradient is written transposed, in w's layout, and w's update is its epilogue
    g = fused(LAYER)
    expect(g, """
graph layer(
    %x: f32[8,4] input,
    %w: f32[3,4] param,
    %b: f32[3] param,
    %g: f32[8,3] input
) {
  kernel k1 [transpose+matmul+add+le+where] -> %5, %6; temps %2
    %1: f32[4,3] = transpose %w {perm=(1, 0)}
    %2: f32[8,3] = matmul %x, %1
    %3: f32[8,3] = add %2, %b
    %4: bool[8,3] = le %3, 0.0
    %5: f32[8,3] = where %4, 0.0, %3
    %6: f32[8,3] = where %4, 0.0, %g
  kernel k2 [transpose+matmul+mul+sub] -> %11; temps %9
    %7: f32[4,8] = transpose %x {perm=(1, 0)}
    %8: f32[4,3] = matmul %7, %6
    %9: f32[3,4] = transpose %8 {perm=(1, 0)}
    %10: f32[3,4] = mul %9, 0.1
    %11: f32[3,4] = sub %w, %10
  %w <- %11
  return %5
}""")
    assert g.fusion_notes == {
        ("6", "8"): "a GEMM's kernel holds no other matmul or reduction: %2 is a matmul, %8 a matmul"}
    (_, k1), (_, k2) = kernels(g)
    assert [st.kind for st in k1.stages] == ["matmul", "epilogue"] and k1.stages[0].views == (g.nodes[0].out,)
    assert [st.kind for st in k2.stages] == ["matmul", "epilogue"] and k2.stages[0].result.name == "9"
    rng = np.random.default_rng(0)
    compiled_matches(g, {v.name: sample(rng, v.dtype, v.shape) for v in g.inputs}, parse(LAYER))


ODD_LAYER = (LAYER.replace("[8,4]", "[37,45]").replace("[3,4]", "[35,45]").replace("[3]", "[35]")
             .replace("[8,3]", "[37,35]").replace("[4,3]", "[45,35]").replace("[4,8]", "[45,37]"))


@pytest.mark.parametrize("nthreads", [1, 2, 3])
@pytest.mark.parametrize("tall", [False, True], ids=["panels", "rows"])
def test_matmul_epilogues_run_with_the_gemm(nthreads, tall, monkeypatch):
    """The bias/ReLU/mask epilogue and the transposed weight gradient's update run on each
    finished column panel of their GEMM (by the thread that computed it), odd sizes giving
    vector, row and panel tails and k blocks; over buffers too tall for that, split by rows
    between the threads after the GEMM (or, on one thread, in a loop of their own)."""
    from gradc.codegen import gemm

    monkeypatch.setattr(gemm, "threads", lambda: nthreads)
    monkeypatch.setattr(gemm, "PARALLEL_FLOPS", 0)
    if tall:
        monkeypatch.setattr(gemm, "EPILOGUE_PANEL_BYTES", 0)
        monkeypatch.setattr(gemm, "PARALLEL_ELEMENTS", 0)
    text = ODD_LAYER.replace("[37,45]", "[37,300]").replace("[35,45]", "[35,300]").replace("[45,", "[300,")
    g = fused(text)
    for _, spec in kernels(g):
        assert gemm.fuses_epilogue(*spec.stages) == ("panels" if not tall else "rows" if nthreads > 1 else None)
    rng = np.random.default_rng(nthreads)  # small integers: every sum is exact, in any order
    compiled_matches(g, {v.name: rng.integers(-3, 4, v.shape).astype(np.float32) for v in g.inputs}, parse(text))


def test_gemm_epilogues_only_on_whole_matrices():
    """No panel epilogue for a product with a size-1 dim (its loop drops the dim), an empty sum,
    or too few rows (nor, that small, a shared one)."""
    from gradc.codegen import gemm

    for shapes in ([("x", F32, (1, 5)), ("w", F32, (5, 7))], [("x", F32, (6, 0)), ("w", F32, (0, 7))],
                   [("x", F32, (gemm.EPILOGUE_MIN_ROWS - 1, 9)), ("w", F32, (9, 40))]):
        g = fused(str(make(shapes, lambda x, w: P.maximum(P.matmul(x, w), 0.0))))
        (_, spec), = kernels(g)
        assert [st.kind for st in spec.stages] == ["matmul", "epilogue"]
        assert not gemm.fuses_epilogue(*spec.stages)
        rng = np.random.default_rng(1)
        compiled_matches(g, {v.name: sample(rng, v.dtype, v.shape) for v in g.inputs})


def test_index_ops_stay_alone_and_cycles_are_refused():
    g = fused("""
graph g(
    %x: f32[6] input,
    %i: i64[3] input
) {
  %1: f32[6] = exp %x
  %2: f32[3] = gather %1, %i {axis=0}
  %3: f32[3] = mul %2, 2.0
  %4: f32[] = sum %1 {axes=(0,)}
  %5: f32[3] = add %3, %4
  %6: f32[] = sum %2 {axes=(0,)}
  %7: f32[6] = mul %1, %6
  return %5, %7
}""")
    expect(g, """
graph g(
    %x: f32[6] input,
    %i: i64[3] input
) {
  kernel k1 [exp+sum] -> %1, %4
    %1: f32[6] = exp %x
    %4: f32[] = sum %1 {axes=(0,)}
  kernel k2 [gather] -> %2
    %2: f32[3] = gather %1, %i {axis=0}
  kernel k3 [mul+add] -> %5
    %3: f32[3] = mul %2, 2.0
    %5: f32[3] = add %3, %4
  kernel k4 [sum] -> %6
    %6: f32[] = sum %2 {axes=(0,)}
  kernel k5 [mul] -> %7
    %7: f32[6] = mul %1, %6
  return %5, %7
}""")
    notes = g.fusion_notes
    assert notes[("1", "2")] == notes[("2", "3")] == "gather is lowered on its own"
    # %5 needs %3, computed from the gather of %1: %1's kernel cannot take it
    assert notes[("4", "5")] == ("fusing would form a cycle: %3 is computed in another kernel from this kernel's "
                                 "results, and is needed here")
    # %7 = %1 * sum(gather(%1)): the sum's kernel would need a second loop, %1's has the gather in between
    assert notes[("6", "7")] == "%7 f32[6] needs the sum %6 f32[] whole: it would take a second loop over [6]"
    assert notes[("1", "7")] == ("fusing would form a cycle: %6 is computed in another kernel from this kernel's "
                                 "results, and is needed here")


def test_elementwise_chain_with_small_operands_is_one_loop():
    g = fused("""
graph g(
    %x: f32[3,5] input,
    %s: f64[] scalar,
    %r: f32[3,1] input
) {
  %1: f32[] = convert %s {dtype=f32}
  %2: f32[3,5] = mul %x, %1
  %3: f32[3,5] = sub %2, %r
  %4: f32[5,3] = transpose %3 {perm=(1, 0)}
  %5: f32[5,3] = tanh %4
  %6: f32[15] = reshape %x {shape=(15,)}
  %7: f32[15] = reshape %5 {shape=(15,)}
  %8: f32[15] = add %6, %7
  return %8, %1
}""")
    expect(g, """
graph g(
    %x: f32[3,5] input,
    %s: f64[] scalar,
    %r: f32[3,1] input
) {
  kernel k1 [convert+mul+sub+transpose+tanh] -> %1, %5
    %1: f32[] = convert %s {dtype=f32}
    %2: f32[3,5] = mul %x, %1
    %3: f32[3,5] = sub %2, %r
    %4: f32[5,3] = transpose %3 {perm=(1, 0)}
    %5: f32[5,3] = tanh %4
  kernel k2 [reshape+add] -> %8
    %6: f32[15] = reshape %x {shape=(15,)}
    %7: f32[15] = reshape %5 {shape=(15,)}
    %8: f32[15] = add %6, %7
  return %8, %1
}""")
    assert g.fusion_notes[("5", "7")] == "the reshape %7 regroups the dims of %5, computed in the same kernel"
    (_, k1), _ = kernels(g)
    assert [st.kind for st in k1.stages] == ["pre", "loop"]  # the scalar is stored once, outside the loop
    rng = np.random.default_rng(1)
    feeds = {"x": sample(rng, F32, (3, 5)), "s": np.array(0.5), "r": sample(rng, F32, (3, 1))}
    compiled_matches(g, feeds)


def test_optimizer_updates_are_one_loop_per_parameter():
    g, _ = step_graph("mlp_adam")
    g = run_pipeline(g, "simplify,fold,cse,dce,fuse").graph
    by_value = {n.out.name: n.kernel for n in g.nodes}
    updates = {t.name: by_value[v.name] for t, v in g.updates}
    for p in ("0.weight", "0.bias", "2.weight", "2.bias"):
        # the param, its two moments and its step count: one kernel
        assert len({updates[p], updates[f"{p}.step"], updates[f"{p}.exp_avg"], updates[f"{p}.exp_avg_sq"]}) == 1
    assert len(set(updates[p] for p in ("0.weight", "0.bias", "2.weight", "2.bias"))) == 4


@pytest.mark.parametrize("name", ["linreg", "mlp_adam"])
def test_fused_training_steps_golden(name):
    # reviewed by hand: linreg (Linear(1,1)) is one loop over the batch, its [1,1] matmuls a
    # product and a dot product: the forward, the loss's sum and both gradients folded in one
    # pass, the updates its epilogue; in mlp_adam each weight's update is one kernel with its
    # gradient's matmul, the hidden layer's bias gradient is summed in the epilogue of the
    # GEMM that computes the gradient it sums (its update a loop of its own), and the
    # softmax's row sums of the forward and of the backward (over the same [2,3]) share one loop
    g = parse((Path(__file__).parent / "golden" / "passes" / f"{name}.optimized.ir").read_text())
    assert str(PASSES["fuse"](g)) == (GOLDEN / f"{name}.fused.ir").read_text()


# ================================================================ IR text, verifier
def test_kernels_round_trip_and_are_verified():
    g = fused(LAYER)
    text = str(g)
    again = parse(text)
    assert str(again) == text and [n.kernel for n in again.nodes] == [n.kernel for n in g.nodes]
    assert list(again.kernels) == ["k1", "k2"] and again.kernels["k1"].temps == ["2"]
    bad = text.replace("    %6: f32[8,3] = where %4, 0.0, %g\n", "").replace(
        "  kernel k2", "  %6: f32[8,3] = where %4, 0.0, %g\n  kernel k2")
    with pytest.raises(VerifyError, match="belongs to no kernel"):
        parse(bad).verify()
    with pytest.raises(VerifyError, match=r"kernel k1: header stores %5, but the values used after it are %5, %6"):
        parse(text.replace("-> %5, %6; temps %2", "-> %5; temps %2")).verify()
    split = text.replace("    %3: f32[8,3] = add %2, %b\n", "  kernel k9 [add] -> %3\n    %3: f32[8,3] = add %2, %b\n"
                         "  kernel k1 [x]\n")
    with pytest.raises(IRParseError, match="kernel k1 is defined twice"):
        parse(split)
    with pytest.raises(VerifyError, match=r"a kernel cannot be generated: gather is lowered on its own \(%1\)"):
        parse("""
graph g(
    %x: f32[6] input,
    %i: i64[3] input
) {
  kernel k1 [gather+exp] -> %2
    %1: f32[3] = gather %x, %i {axis=0}
    %2: f32[3] = exp %1
  return %2
}""").verify()


def test_rewrites_after_fuse_drop_the_kernels_and_fuse_refuses_grad_markers():
    g = fused(SOFTMAX)
    again = run_pipeline(g, "cse").graph
    assert not again.kernels and all(n.kernel is None for n in again.nodes)
    step, args = golden_steps.linreg()
    traced = gradc.trace(step, *args).graph
    with pytest.raises(ValueError, match="run the autodiff pass first"):
        PASSES["fuse"](traced)


# ================================================================ semantics: interpreter before/after
@settings(max_examples=40, deadline=None)
@given(programs, st.lists(st.integers(0, 60), min_size=1, max_size=3), st.integers(0, 2**16), st.booleans())
def test_fuse_keeps_meaning_on_random_graphs(program, outs, seed, special):
    g = random_graph(program, outs)
    text = str(g)
    out = run_pipeline(g, "fuse").graph
    verify(out)
    same_results(g, out, feeds_for(seed, special))
    assert str(g) == text
    assert sorted(n.out.name for n in out.nodes) == sorted(n.out.name for n in g.nodes)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_fuse_keeps_meaning_on_training_steps(name):
    g, feeds = step_graph(name)
    for pipeline in ["fuse", "simplify,fold,cse,dce,fuse"]:
        same_results(g, run_pipeline(g, pipeline).graph, feeds)


# ================================================================ compiled fused graphs
@settings(max_examples=25, deadline=None)
@given(st.data(), st.sampled_from([F32, F64]), st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_compiled_fused_random_graphs_match_interpreter(data, dtype, n_ops, seed):
    g = RandomGraph(data, dtype).build(n_ops)
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype.np) for v in g.inputs}
    with np.errstate(all="ignore"):
        compare_compiled(run_pipeline(g, "fuse").graph, feeds, g)


def test_compiled_kernels_over_dtypes_size_one_dims_and_broadcasts():
    def fn(x, y, i, b):
        m = P.gt(x, y)  # bool inside a kernel
        s = P.reduce_sum(P.where(m, x, P.mul(y, 2.0)), axes=(0, 2))  # leading and trailing axes
        cnt = P.reduce_sum(P.logical_and(m, b), axes=(1,))  # bool -> i64 sum
        big = P.reduce_max(P.sub(x, P.exp(y)), axes=(1,))
        prod = P.reduce_prod(P.tanh(x), axes=(2,))
        ints = P.mul(P.add(i, 3), P.convert(b, dtype=I64))  # integer chain with a converted mask
        return [P.add(s, 1.0), cnt, P.neg(big), P.mul(prod, 2.0), ints]

    g = make([("x", F32, (3, 1, 7)), ("y", F32, (1, 5, 7)), ("i", I64, (5, 1)), ("b", BOOL, (3, 5, 7))], fn)
    fg = run_pipeline(g, "fuse").graph
    assert len(fg.kernels) < len([n for n in g.nodes if n.op != "const"]) / 2
    rng = np.random.default_rng(2)
    feeds = {v.name: sample(rng, v.dtype, v.shape, special=True) for v in g.inputs}
    with np.errstate(all="ignore"):
        compiled_matches(fg, feeds, g)


def test_compiled_matmul_kernels_batched_integer_and_transposed():
    def fn(a, b, c, ia, ib):
        t = P.transpose(P.matmul(P.transpose(b, perm=(0, 2, 1)), P.transpose(a, perm=(0, 2, 1))), perm=(0, 2, 1))
        ep = P.maximum(P.add(t, c), 0.0)  # batched, both operands and the result transposed
        ii = P.add(P.matmul(P.transpose(ia, perm=(1, 0)), ib), 1)  # integer: the transpose is copied
        return [P.mul(ep, 3.0), ii]

    g = make([("a", F32, (2, 5, 17)), ("b", F32, (2, 17, 3)), ("c", F32, (1, 3)), ("ia", I64, (4, 3)),
              ("ib", I64, (4, 2))], fn)
    fg = run_pipeline(g, "fuse").graph
    specs = [spec for _, spec in kernels(fg)]
    assert len(specs) == 2, fg
    assert [v.name for v in specs[1].temps][:1] and specs[1].stages[0].kind == "copy"
    rng = np.random.default_rng(3)
    compiled_matches(fg, {v.name: sample(rng, v.dtype, v.shape) for v in g.inputs}, g)


# ================================================================ the MLP step, explain
def mlp_small_graph():
    from gradc.bench.workloads import WORKLOADS, make_data, training_step

    wl = WORKLOADS["mlp_small"]
    gradc.manual_seed(0)
    step = training_step(*wl.build(gradc))
    x, y = (gradc.tensor(a) for a in make_data(wl))
    step(x, y)  # creates the momentum buffers
    return gradc.trace(step, x, y).ir("autodiff"), (x, y)


def test_mlp_step_has_3x_fewer_kernels_than_autodiff_nodes(capsys):
    g, (x, y) = mlp_small_graph()
    res = run_pipeline(g)
    n_kernels = STATS["kernels"](res.graph)
    with capsys.disabled():
        print(f"\nmlp_small step: {len(g.nodes)} autodiff nodes -> {n_kernels} kernels")
    assert n_kernels * 3 <= len(g.nodes)
    rng = np.random.default_rng(4)
    feeds = {v.name: x.numpy() if v.name == "x" else y.numpy() if v.name == "y" else
             (rng.standard_normal(v.shape) * 0.1).astype(v.dtype.np) for v in g.inputs}
    feeds["lr"] = np.array(0.05)
    with np.errstate(all="ignore"):
        compiled_matches(res.graph, feeds, g)


def test_explain_reports_pipeline_stats_kernels_lines_and_boundaries():
    step, args = golden_steps.mlp_adam()
    g = gradc.trace(step, *args).ir("autodiff")
    res = run_pipeline(g)
    text = explain(res)
    assert text.startswith("graph mlp_step: pipeline simplify,fold,cse,dce,fuse,plan\n")
    assert "  pass " in text and " kernels " in text and " arena " in text
    assert f"{len(res.graph.kernels)} kernels for {len(res.graph.nodes)} nodes:" in text
    assert "  k1 [transpose+matmul+add+le+where]: gemm [2,4] @ [4,8] (%1 read transposed); epilogue [2,8]" in text
    assert "      from golden_steps.py:41  loss = criterion(model(x), y)" in text
    assert "      from golden_steps.py:43  optimizer.step()" in text
    assert "where fusion stopped:\n  %5 (k1) -> %7 (k2): a GEMM's kernel holds no other matmul or reduction" in text
    assert "in place: %" in text
    # every value that crosses kernels is explained
    crossing = {(o.name, n.out.name) for n in res.graph.nodes for o in n.inputs
                if o.producer is not None and o.producer.kernel not in (None, n.kernel)}
    assert crossing and all(f"%{v} (" in text for v, _ in crossing)
    assert all(f": " in line for line in text.split("where fusion stopped:\n")[1].split("\n\n")[0].splitlines())
    assert "not fused" in explain(run_pipeline(g, "dce"))
    from_text = explain(run_pipeline(parse(str(res.graph)), ""))  # fused elsewhere: no reasons to give
    assert "the reasons are recorded when 'fuse' runs" in from_text and "%5 (k1) -> %7 (k2)\n" in from_text


def test_matmul_reads_a_transpose_stored_by_another_kernel_where_it_was_stored():
    """Found by hypothesis: the operand %5 = transpose(%3) where another kernel stored %3 =
    transpose(%2); reading %5 through both transposes reached %2, which is not in memory.
    (Found with [1,1] matrices, which are now a loop, not a GEMM: 2x2 keeps the GEMM.)"""
    g = parse("""
graph stored_transpose(
    %x0: f32[3,2,2] input,
    %x1: f32[2,2] input
) {
  %1: i64[2,2] = argmax %x0 {axis=0}
  %2: f32[2,2] = convert %1 {dtype=f32}
  %3: f32[2,2] = transpose %2 {perm=(0, 1)}
  %4: f32[2,2] = transpose %x1 {perm=(1, 0)}
  %5: f32[2,2] = transpose %3 {perm=(1, 0)}
  %6: f32[2,2] = matmul %4, %5
  return %6
}""")
    rng = np.random.default_rng(0)
    feeds = {"x0": rng.standard_normal((3, 2, 2)).astype(np.float32),
             "x1": rng.standard_normal((2, 2)).astype(np.float32)}
    fused_graph = run_pipeline(g, "fuse").graph
    kernel_of = {n.out.name: n.kernel for n in fused_graph.nodes}
    assert kernel_of["3"] != kernel_of["5"] and "3" in fused_graph.kernels[kernel_of["3"]].stores
    (_, spec), = [ks for ks in kernels(fused_graph) if ks[0].name == kernel_of["6"]]
    assert [st.kind for st in spec.stages] == ["matmul"] and [v.name for v in spec.stages[0].views] == ["4", "5"]
    compiled_matches(fused_graph, feeds, g)


# ================================================================ tiny matmuls, reductions sharing a loop
TINY = """
graph tiny(
    %x: f32[5,1] input,
    %w: f32[1,3] param,
    %y: f32[5,1] input
) {
  %1: f32[5,3] = matmul %x, %w
  %2: f32[5,3] = tanh %1
  %3: f32[3] = sum %2 {axes=(0,)}
  %4: f32[5] = max %2 {axes=(1,)}
  %5: f32[3] = mul %3, 0.5
  %6: f32[1,5] = transpose %x {perm=(1, 0)}
  %7: f32[1,1] = matmul %6, %y
  %8: f32[] = sum %y {axes=(0, 1)}
  %9: f32[1,1] = div %7, %8
  %10: f32[5] = add %4, %8
  %11: f32[] = prod %4 {axes=(0,)}
  return %5, %9, %10, %11
}"""


def test_tiny_matmuls_are_loops_and_reductions_over_one_space_share_one():
    # x @ w contracts one element: a product in the loop; the column sum and row max of its
    # tanh run in one loop over [5,3]; x.T @ y (a dot product) and y's sum in one loop over [5]
    g = fused(TINY)
    expect(g, """
graph tiny(
    %x: f32[5,1] input,
    %w: f32[1,3] param,
    %y: f32[5,1] input
) {
  kernel k1 [matmul+tanh+sum+max+mul] -> %4, %5; temps %3
    %1: f32[5,3] = matmul %x, %w
    %2: f32[5,3] = tanh %1
    %3: f32[3] = sum %2 {axes=(0,)}
    %4: f32[5] = max %2 {axes=(1,)}
    %5: f32[3] = mul %3, 0.5
  kernel k2 [transpose+matmul+sum+div] -> %8, %9; temps %7
    %6: f32[1,5] = transpose %x {perm=(1, 0)}
    %7: f32[1,1] = matmul %6, %y
    %8: f32[] = sum %y {axes=(0, 1)}
    %9: f32[1,1] = div %7, %8
  kernel k3 [add] -> %10
    %10: f32[5] = add %4, %8
  kernel k4 [prod] -> %11
    %11: f32[] = prod %4 {axes=(0,)}
  return %5, %9, %10, %11
}""")
    assert g.fusion_notes == {
        ("4", "10"): "%10 f32[5] would take a second epilogue loop: the kernel's runs over [3]",
        ("8", "10"): "%10 f32[5] needs the sum %8 f32[] whole: it would take a second loop over [5]",
        ("4", "11"): "%11 f32[] needs the max %4 f32[5] whole: it would take a second loop over [5]",
    }
    (_, k1), (_, k2), _, _ = kernels(g)
    assert [st.kind for st in k1.stages] == ["reduce", "epilogue"] and k1.stages[0].dims == (5, 3)
    assert [st.kind for st in k2.stages] == ["reduce", "epilogue"] and k2.stages[0].dims == (5,)
    assert [step[3].out.name for step in k2.stages[0].steps if step[0] == "acc"] == ["7", "8"]
    rng = np.random.default_rng(5)
    feeds = {v.name: sample(rng, v.dtype, v.shape) for v in g.inputs}
    same_results(parse(TINY), g, feeds)
    compiled_matches(g, feeds, parse(TINY))


def test_reductions_over_different_spaces_keep_their_own_loops():
    g = fused("""
graph two_spaces(
    %x: f32[4,3] input,
    %y: f32[3,4] input
) {
  %1: f32[] = sum %x {axes=(0, 1)}
  %2: f32[] = sum %y {axes=(0, 1)}
  %3: f32[] = add %1, %2
  return %3
}""")
    assert len(g.kernels) == 2
    assert g.fusion_notes[("1", "3")] == ("reductions in one kernel share one loop: the sum %1 f32[] runs over "
                                          "[4, 3], the sum %2 f32[] over [3, 4]")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_compiled_tiny_matmuls_fused_and_alone(dtype):
    """Products (one contracted element) and dot products (one-element matrices) as loops:
    batch dims broadcast, transposed operands, an empty contraction, odd lengths; in fused
    kernels with the reductions beside them and as kernels of their own."""
    def fn(a, b, c, d, e, f, u):
        prods = [P.matmul(a, b), P.matmul(P.transpose(c, perm=(0, 2, 1)), b),  # [3,7,1] x [1,1,5]: batch 3
                 P.matmul(P.transpose(u, perm=(1, 0)), P.transpose(a, perm=(1, 0)))]  # [1,1] x [1,7]
        dots = [P.matmul(P.transpose(a, perm=(1, 0)), a),  # [1,7] x [7,1]
                P.matmul(d, e),  # [2,1,13] x [13,1]: batch 2
                P.matmul(P.transpose(e, perm=(1, 0)), P.transpose(d, perm=(0, 2, 1))),  # [1,13] x [2,13,1]
                P.matmul(f, P.transpose(f, perm=(1, 0)))]  # [1,0] x [0,1]: an empty sum
        sums = [P.reduce_sum(P.exp(a), axes=(0,)), P.reduce_max(d, axes=(2,))]
        return [P.mul(P.tanh(p), 2.0) for p in prods] + [P.add(t, 1.0) for t in dots] + sums

    g = make([("a", dtype, (7, 1)), ("b", dtype, (1, 5)), ("c", dtype, (3, 1, 7)), ("d", dtype, (2, 1, 13)),
              ("e", dtype, (13, 1)), ("f", dtype, (1, 0)), ("u", dtype, (1, 1))], fn)
    rng = np.random.default_rng(6)
    feeds = {v.name: sample(rng, v.dtype, v.shape) for v in g.inputs}
    fg = run_pipeline(g, "fuse").graph
    same_results(g, fg, feeds)
    for _, spec in kernels(fg):
        assert all(st.kind != "matmul" for st in spec.stages)
    compiled_matches(fg, feeds, g)
    compiled_matches(g, feeds)  # unfused: each matmul a kernel of its own, still a loop
    assert all(st.kind != "matmul" for _, spec in kernels(g) for st in spec.stages)


class LoopGraph:
    """Random graphs rich in what shares a loop: reductions over random axes of functions of
    one batch (x [n,m], y [n,1]), products y @ w and dot products u.T @ v of its columns,
    and consumers combining the reduced results."""

    def __init__(self, data, dtype):
        self.data, self.g = data, Graph("loops")
        n, m = data.draw(st.sampled_from([1, 2, 5, 17])), data.draw(st.sampled_from([1, 3]))
        self.inputs = [self.g.add_input(name, dtype, shape, "input")
                       for name, shape in (("x", (n, m)), ("y", (n, 1)), ("w", (1, m)))]

    def draw(self, options):
        return self.data.draw(st.sampled_from(options))

    def build(self, n_ops):
        with GraphBuilder(self.g):
            x, y, w = (symbolic_tensor(v) for v in self.inputs)
            batch, results = [x, y], []
            for _ in range(n_ops):
                kind = self.draw(["unary", "binary", "reduce", "reduce", "reduce", "product", "dot", "dot", "combine"])
                a = self.draw(batch)
                if kind == "unary":
                    batch.append(getattr(P, self.draw(["tanh", "exp", "neg", "abs"]))(a))
                elif kind == "binary":
                    batch.append(getattr(P, self.draw(["add", "mul", "sub", "maximum"]))(a, self.draw(batch)))
                elif kind == "reduce":
                    axes = tuple(sorted(self.data.draw(st.sets(st.integers(0, 1)))))
                    name = self.draw(["reduce_sum", "reduce_max", "reduce_prod"])
                    results.append(getattr(P, name)(P.tanh(a) if name == "reduce_prod" else a, axes=axes))
                elif kind == "product":
                    batch.append(P.matmul(self.draw([c for c in batch if c.shape[1] == 1]), w))
                elif kind == "dot":
                    u = self.draw([c for c in batch if c.shape[1] == 1])
                    results.append(P.matmul(P.transpose(u, perm=(1, 0)), self.draw(batch)))
                elif results:  # combine: a result with another, or with a batch value (an epilogue or a new loop)
                    r = self.draw(results)
                    o = self.draw([v for v in results + batch if _broadcastable(v.shape, r.shape)])
                    (results if any(o is t for t in results) else batch).append(P.add(P.mul(r, 0.5), o))
            outs = results + batch[-2:]
        self.g.outputs = list(dict.fromkeys(v._data for v in outs if v._data.producer is not None)) or \
            [self.g.inputs[0]]
        return self.g.verify()


@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from([F32, F64]), st.integers(2, 9), st.integers(0, 2**32 - 1))
def test_fuse_shares_loops_on_random_reduction_graphs(data, dtype, n_ops, seed):
    g = LoopGraph(data, dtype).build(n_ops)
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype.np) for v in g.inputs}
    fg = run_pipeline(g, "fuse").graph  # verified
    same_results(g, fg, feeds)
    with np.errstate(all="ignore"):
        compare_compiled(fg, feeds, g)


# ================================================================ column sums in a GEMM's kernel
def bias_layer(m, k, n, dtype="f32"):
    """The backward of a hidden Linear layer: the input gradient's GEMM and ReLU mask, the bias
    gradient (a column sum of it) and an SGD update of the bias."""
    return f"""
graph bias(
    %g: {dtype}[{m},{k}] input,
    %w: {dtype}[{k},{n}] param,
    %mask: bool[{m},{n}] input,
    %b: {dtype}[{n}] param
) {{
  %1: {dtype}[{m},{n}] = matmul %g, %w
  %2: {dtype}[{m},{n}] = where %mask, 0.0, %1
  %3: {dtype}[{n}] = sum %2 {{axes=(0,)}}
  %4: {dtype}[{n}] = mul %3, 0.5
  %5: {dtype}[{n}] = sub %b, %4
  %b <- %5
  return %2
}}"""


def test_bias_gradient_is_summed_in_the_epilogue_of_its_gemm():
    g = fused(bias_layer(8, 5, 3))
    expect(g, """
graph bias(
    %g: f32[8,5] input,
    %w: f32[5,3] param,
    %mask: bool[8,3] input,
    %b: f32[3] param
) {
  kernel k1 [matmul+where+sum] -> %2, %3; temps %1
    %1: f32[8,3] = matmul %g, %w
    %2: f32[8,3] = where %mask, 0.0, %1
    %3: f32[3] = sum %2 {axes=(0,)}
  kernel k2 [mul+sub] -> %5
    %4: f32[3] = mul %3, 0.5
    %5: f32[3] = sub %b, %4
  %b <- %5
  return %2
}""")
    assert g.fusion_notes == {("3", "4"): "%4 f32[3] needs the sum %3 f32[3] whole: it would take a loop after the "
                                          "GEMM %1"}
    (_, k1), _ = kernels(g)
    assert [st.kind for st in k1.stages] == ["matmul", "epilogue"]
    assert [step[0] for step in k1.stages[1].steps][-1] == "acc"


ROW_SUMS = (bias_layer(8, 5, 3).replace("%3: f32[3] = sum %2 {axes=(0,)}", "%3: f32[8] = sum %2 {axes=(1,)}")
            .replace("%4: f32[3] = mul %3, 0.5", "%4: f32[8] = mul %3, 0.5")
            .replace("%5: f32[3] = sub %b, %4", "%5: f32[3] = sub %b, %b"))


@pytest.mark.parametrize("text", [ROW_SUMS, bias_layer(1, 5, 3)], ids=["row sums", "one row"])
def test_other_reductions_keep_out_of_a_gemm_kernel(text):
    """Row sums would need every column panel (threads would share them); over one row the
    product has no rows to sum in its epilogue."""
    g = fused(text)
    assert g.nodes[2].kernel != g.nodes[0].kernel
    assert "only reductions over the rows of its result" in g.fusion_notes[("2", "3")]
    rng = np.random.default_rng(0)
    compiled_matches(g, {v.name: sample(rng, v.dtype, v.shape) for v in g.inputs}, parse(text))


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("nthreads", [1, 2, 3])
@pytest.mark.parametrize("tall", [False, True], ids=["panels", "own loop"])
def test_column_sums_in_gemm_epilogues_compiled(dtype, nthreads, tall, monkeypatch):
    """On each column panel by the thread that computed it (odd sizes: row tiles, rows left after
    folding them 4 at a time, a rest panel of a few columns, k blocks); too tall for panels, in a
    loop after the GEMM even on several threads (their rows would share the accumulators)."""
    from gradc.codegen import gemm

    monkeypatch.setattr(gemm, "threads", lambda: nthreads)
    monkeypatch.setattr(gemm, "PARALLEL_FLOPS", 0)
    if tall:
        monkeypatch.setattr(gemm, "EPILOGUE_PANEL_BYTES", 0)
        monkeypatch.setattr(gemm, "PARALLEL_ELEMENTS", 0)
    for m, k, n in [(37, 300, 45), (34, 3, 19), (64, 17, 8)]:
        text = bias_layer(m, k, n, dtype)
        g = fused(text)
        (_, spec), _ = kernels(g)
        assert [m.op for m in spec.members] == ["matmul", "where", "sum"]
        assert gemm.fuses_epilogue(*spec.stages) == (None if tall else "panels")
        rng = np.random.default_rng(m)  # small integers: every sum is exact, in any order
        feeds = {v.name: rng.integers(-3, 4, v.shape).astype(v.dtype.np) for v in g.inputs}
        feeds["mask"] = rng.random((m, n)) < 0.5
        compiled_matches(g, feeds, parse(text))
