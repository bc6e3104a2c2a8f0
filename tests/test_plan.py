"""The `plan` pass: arena offsets with buffer reuse, and in-place updates.

Golden tests run hand-written IR through fuse and plan and compare with
offsets worked out by hand. A plan is checked against liveness computed
here, independently of the pass, from the printed kernels alone: no two
buffers live at the same time share a byte. Compiled planned steps match
the interpreter over several steps (updates written in place feed the next
step), and a step that fails an index check changes no param even when its
updates are written in place. On the MLP step the arena shrinks.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradc.codegen import compile_graph, gemm
from gradc.ir import interpret, parse
from gradc.passes import PASSES, STATS, run_pipeline
from gradc.passes.fuse import role
from gradc.passes.plan import STATUS_BYTES

from test_fuse import expect, mlp_small_graph
from test_passes import STEPS, feeds_for, programs, random_graph, same_results, step_graph

STEP = """
graph g(
    %x: f32[16] input,
    %i: i64[4] input,
    %p: f32[16] param,
    %m: f32[16] state
) {
  %1: f32[16] = exp %x
  %2: f32[] = sum %1 {axes=(0,)}
  %3: f32[16] = div %1, %2
  %4: f32[16] = mul %m, 0.9
  %5: f32[16] = add %4, %3
  %6: f32[4] = gather %5, %i {axis=0}
  %7: f32[4] = neg %6
  %8: f32[16] = sub %p, %5
  %p <- %8
  %m <- %5
  return %2, %7
}"""
BODY = """
graph g(
    %x: f32[16] input,
    %i: i64[4] input,
    %p: f32[16] param,
    %m: f32[16] state
) {{
  kernel k1 [exp+sum] -> %1{}, %2{}
    %1: f32[16] = exp %x
    %2: f32[] = sum %1 {{axes=(0,)}}
  kernel k2 [div+mul+add+sub] -> %5{}, %8{}
    %3: f32[16] = div %1, %2
    %4: f32[16] = mul %m, 0.9
    %5: f32[16] = add %4, %3
    %8: f32[16] = sub %p, %5
  kernel k3 [gather] -> %6{}
    %6: f32[4] = gather %5, %i {{axis=0}}
  kernel k4 [neg] -> %7{}
    %7: f32[4] = neg %6
  %p <- %8
  %m <- %5
  return %2, %7
}}"""


def planned(text, pipeline="fuse,plan"):
    return run_pipeline(parse(text), pipeline)


# ================================================================ golden tests
def test_plan_reuses_dead_buffers_and_updates_in_place():
    # 64-byte slots after the status word: %1 dies after k2, so k3's %6 takes its bytes; %2 is
    # returned (live to the end); %5 and %8 are written straight into %m and %p: no later
    # kernel reads the old values and k2 reads them only where it writes
    res = planned(STEP)
    expect(res.graph, BODY.format(" @64", " @128", " @%m", " @%p", " @64", " @192"))
    fuse_rec, plan_rec = res.records
    assert fuse_rec.after["arena"] == STATUS_BYTES + 6 * 64 == plan_rec.before["arena"]
    assert plan_rec.after["arena"] == 256


def test_plan_options_turn_off_in_place_and_reuse():
    # without in-place the updates' values live to the end (they are copied then)
    g = planned(STEP, "fuse,plan<in-place=False>").graph
    expect(g, BODY.format(" @64", " @128", " @192", " @256", " @64", " @320"))
    assert STATS["arena"](g) == 384
    g = planned(STEP, "fuse,plan<reuse=False>").graph
    expect(g, BODY.format(" @64", " @128", " @%m", " @%p", " @192", " @256"))


def test_unfused_graphs_get_one_kernel_per_node():
    g = planned("""
graph g(
    %x: f32[8] input
) {
  %1: f32[8] = exp %x
  %2: f32[8] = neg %1
  %3: f32[8] = tanh %2
  return %3
}""", "plan").graph
    expect(g, """
graph g(
    %x: f32[8] input
) {
  kernel k1 [exp] -> %1 @64
    %1: f32[8] = exp %x
  kernel k2 [neg] -> %2 @128
    %2: f32[8] = neg %1
  kernel k3 [tanh] -> %3 @64
    %3: f32[8] = tanh %2
  return %3
}""")


IN_PLACE_CASES = {
    # the old value is read after the kernel that writes the new one
    "read later": ("""
  %1: f32[4,4] = mul %p, 2.0
  %2: f32[4,4] = exp %1
  %3: f32[4] = sum %2 {axes=(1,)}
  %4: f32[4] = gather %3, %i {axis=0}
  %5: f32[4,4] = add %p, %4
  %p <- %1
  return %5""", False),
    # read transposed where it is written: element (i, j) is overwritten before (j, i) reads it
    "transposed read": ("""
  %1: f32[4,4] = transpose %p {perm=(1, 0)}
  %2: f32[4,4] = add %p, %1
  %p <- %2
  return""", False),
    "also returned": ("""
  %1: f32[4,4] = mul %p, 2.0
  %p <- %1
  return %1""", False),
    "param returned": ("""
  %1: f32[4,4] = mul %p, 2.0
  %p <- %1
  return %p""", False),
    # an index check runs after the write: a failed step must leave %p as it was
    "checked index after": ("""
  %1: f32[4,4] = mul %p, 2.0
  %2: i64[4] = add %i, -1
  %3: f32[4] = sum %1 {axes=(1,)}
  %4: f32[4] = gather %3, %2 {axis=0}
  %p <- %1
  return %4""", False),
    "checked index before": ("""
  %1: i64[4] = add %i, -1
  %2: i64[4,1] = reshape %1 {shape=(4, 1)}
  %3: f32[4,1] = gather %p, %2 {axis=0}
  %4: f32[4,4] = sub %q, %3
  %q <- %4
  return""", True),
    # a sum is filled with zeros before its loop reads the param
    "reduced into itself": ("""
  %1: f32[4,1,4] = reshape %p {shape=(4, 1, 4)}
  %2: f32[4,4] = sum %1 {axes=(1,)}
  %p <- %2
  return""", False),
    # the same elements read through a reshape after the new value is stored: one load, before it
    "read again through a reshape": ("""
  %1: f32[4,4] = mul %p, 2.0
  %2: f32[4,1,4] = reshape %p {shape=(4, 1, 4)}
  %3: f32[4,1,4] = exp %2
  %4: f32[4,1,4] = reshape %1 {shape=(4, 1, 4)}
  %5: f32[4,1,4] = add %3, %4
  %p <- %1
  return %5""", True),
    "elementwise": ("""
  %1: f32[4,4] = mul %p, 0.5
  %2: f32[4,4] = add %1, %q
  %p <- %2
  return""", True),
}


@pytest.mark.parametrize("case", sorted(IN_PLACE_CASES))
def test_in_place_only_where_safe(case):
    body, want = IN_PLACE_CASES[case]
    text = ("graph g(\n    %p: f32[4,4] param,\n    %q: f32[4,4] param,\n    %i: i64[4] input\n) {"
            + body + "\n}")
    g = planned(text).graph
    assert len(g.kernels) == 1 or case.startswith("checked") or case == "read later", g
    target = g.updates[0][0].name
    in_place = [v for k in g.kernels.values() for v, at in k.offsets.items() if at == target]
    assert bool(in_place) == want, g
    rng = np.random.default_rng(0)
    feeds = {"p": rng.standard_normal((4, 4)).astype(np.float32), "q": rng.standard_normal((4, 4)).astype(np.float32),
             "i": np.array([0, 2, 1, 2])}
    same_compiled(parse(text), g, feeds)


def same_compiled(reference, graph, feeds, steps=1):
    """`steps` compiled calls (bind/call: params and state updated in place) equal the
    interpreter run `steps` times, feeding the updates back."""
    cg = compile_graph(graph)
    arrays = {k: np.array(a) for k, a in feeds.items()}
    cg.bind(arrays)
    state = dict(feeds)
    for _ in range(steps):
        outs = cg.call()
        want = interpret(reference, state)
        for v, got in zip(reference.outputs, outs):
            np.testing.assert_allclose(got, want[v.name] if v.producer is not None else state[v.name],
                                       rtol=2e-5, atol=1e-6)
        for t, _ in reference.updates:
            state[t.name] = want[t.name]
            np.testing.assert_allclose(arrays[t.name], want[t.name], rtol=2e-5, atol=1e-6, err_msg=t.name)


def test_a_failed_step_changes_no_param_even_in_place():
    text = """
graph g(
    %x: f32[5] input,
    %i: i64[3] input,
    %p: f32[3] param
) {
  %1: i64[3] = add %i, 1
  %2: f32[3] = gather %x, %1 {axis=0}
  %3: f32[3] = add %p, %2
  %p <- %3
  return %2
}"""
    g = planned(text).graph
    assert g.kernels["k3"].offsets == {"3": "p"}  # after the index check: in place, behind a status check
    cg = compile_graph(g)
    p = np.array([1.0, 2.0, 3.0], np.float32)
    cg.bind({"x": np.arange(5, dtype=np.float32), "i": np.array([0, 1, 2]), "p": p})
    cg.call()
    np.testing.assert_array_equal(p, [2.0, 4.0, 6.0])
    cg.bind({"i": np.array([0, 4, 1])})  # 4 + 1 is out of range for x's 5 elements
    with pytest.raises(IndexError, match="out of range"):
        cg.call()
    np.testing.assert_array_equal(p, [2.0, 4.0, 6.0])


# ================================================================ no overlap, checked independently
def independent_liveness(g):
    """[(first byte, end byte, first kernel, last kernel, name)] from the printed kernels alone."""
    order = list(g.kernels)
    members = {k: [n for n in g.nodes if n.kernel == k] for k in order}
    produced = {n.out.name: n.kernel for n in g.nodes}
    end = len(order)
    at_end = {v.name for v in g.outputs} | {v.name for _, v in g.updates}
    spans, live = [], {}
    for t, k in enumerate(order):
        head = g.kernels[k]
        for name in head.stores + head.temps:
            if isinstance(head.offsets[name], int):
                live[name] = [t, end if name in at_end and name in head.stores else t]
        gemms = [n for n in members[k] if n.op == "matmul" and n.out.dtype.is_floating_point and role(n) == "matmul"]
        if gemms:  # (a matmul too small for a GEMM is a loop: no scratch)
            size = gemm.scratch_bytes(gemms[0].out.dtype.itemsize)
            spans.append((head.scratch, head.scratch + size, t, t, "#" + k))
    for t, k in enumerate(order):
        for n in members[k]:
            for o in n.inputs:
                if o.name in live and produced.get(o.name) != k:
                    live[o.name][1] = max(live[o.name][1], t)
    values = {v.name: v for v in g.values()}
    for name, (first, last) in live.items():
        off = g.kernels[produced[name]].offsets[name]
        size = int(np.prod(values[name].shape)) * values[name].dtype.itemsize
        spans.append((off, off + size, first, last, name))
    return spans


def assert_no_overlap(g):
    spans = independent_liveness(g)
    for i, (lo, hi, f, l, a) in enumerate(spans):
        assert lo >= STATUS_BYTES and lo % 64 == 0, (a, lo)
        for lo2, hi2, f2, l2, b in spans[i + 1:]:
            if f <= l2 and f2 <= l and lo < hi2 and lo2 < hi:
                raise AssertionError(f"%{a} [{lo},{hi}) and %{b} [{lo2},{hi2}) overlap while both live\n{g}")


@settings(max_examples=40, deadline=None)
@given(programs, st.lists(st.integers(0, 60), min_size=1, max_size=3), st.integers(0, 2**16), st.booleans(),
       st.sampled_from(["fuse,plan", "plan", "simplify,fold,cse,dce,fuse,plan"]))
def test_plans_of_random_graphs_never_overlap_and_keep_meaning(program, outs, seed, special, pipeline):
    g = random_graph(program, outs)
    out = run_pipeline(g, pipeline).graph
    assert_no_overlap(out)
    same_results(g, out, feeds_for(seed, special))


@pytest.mark.parametrize("name", sorted(STEPS))
def test_planned_training_steps_never_overlap_and_match_over_steps(name):
    g, feeds = step_graph(name)
    out = run_pipeline(g).graph
    assert_no_overlap(out)
    assert any(isinstance(at, str) for k in out.kernels.values() for at in k.offsets.values())
    same_compiled(g, out, feeds, steps=3)


def test_mlp_step_arena_is_smaller_with_plan(capsys):
    g, (x, y) = mlp_small_graph()
    res = run_pipeline(g)
    before, after = res.records[-1].before["arena"], res.records[-1].after["arena"]
    with capsys.disabled():
        print(f"\nmlp_small arena: {before:,} bytes after fuse, {after:,} after plan")
    assert res.records[-1].name == "plan" and after < before
    assert compile_graph(res.graph).arena_bytes == after
    assert_no_overlap(res.graph)


def test_plan_round_trips_and_the_verifier_rejects_bad_plans():
    g = planned(STEP).graph
    assert str(parse(str(g))) == str(g)
    with pytest.raises(Exception, match="share arena bytes while both are live"):
        parse(str(g).replace("-> %6 @64", "-> %6 @128")).verify()  # onto %2, returned: live to the end
    with pytest.raises(Exception, match="has no place in the plan"):
        parse(str(g).replace("-> %1 @64, %2 @128", "-> %1, %2 @128")).verify()
    transposed = planned("""
graph g(
    %p: f32[4,4] param
) {
  %1: f32[4,4] = transpose %p {perm=(1, 0)}
  %2: f32[4,4] = exp %1
  %p <- %2
  return
}""").graph
    assert str(transposed).count("-> %2 @64") == 1
    with pytest.raises(Exception, match="writing %2 into %p in place is not safe"):
        parse(str(transposed).replace("-> %2 @64", "-> %2 @%p")).verify()
    assert PASSES["plan"](g).kernels["k1"].offsets == g.kernels["k1"].offsets  # planning again: the same plan


@pytest.mark.parametrize("body, want", [
    # the reduction's loop reads %w anywhere; its epilogue writes the new %w after the loop
    ("%1: f32[5,4] = mul %x, %w\n  %2: f32[4] = sum %1 {axes=(0,)}\n  %3: f32[4] = sub %w, %2\n"
     "  %w <- %3\n  return %2", True),
    # the GEMM writes the new %p; its epilogue then reads the old one
    ("%1: f32[4,4] = matmul %q, %q\n  %2: f32[4,4] = add %1, %p\n  %p <- %1\n  return %2", False),
], ids=["read by an earlier loop", "read after the GEMM wrote it"])
def test_in_place_across_the_loops_of_one_kernel(body, want):
    text = ("graph g(\n    %w: f32[4] param,\n    %p: f32[4,4] param,\n    %q: f32[4,4] param,\n"
            "    %x: f32[5,4] input\n) {\n  " + body + "\n}")
    g = planned(text).graph
    assert len(g.kernels) == 1, g
    target = g.updates[0][0].name
    assert any(at == target for k in g.kernels.values() for at in k.offsets.values()) == want, g
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    same_compiled(parse(text), g, feeds, steps=2)


def test_large_buffers_start_at_different_offsets_in_a_page():
    """Buffers of a page or more (here 16 KB, live together) start at staggered page offsets, so a
    kernel's loads and stores of different arrays do not alias in their low 12 address bits;
    smaller ones fill the gaps; the plan still verifies and computes the same."""
    from gradc.passes.plan import ALIGN, PAGE, colour

    text = """
graph g(
    %x: f32[64,64] input,
    %s: f32[8] input
) {
  %1: f32[64,64] = exp %x
  %2: f32[64] = sum %1 {axes=(0,)}
  %3: f32[64,64] = mul %1, %2
  %4: f32[8] = exp %s
  return %3, %4
}"""
    g = planned(text).graph
    at = {name: off for k in g.kernels.values() for name, off in k.offsets.items()}
    assert {at["1"] % PAGE, at["3"] % PAGE} == {colour(0), colour(1)} and colour(0) != colour(1)
    assert STATS["arena"](g) <= STATUS_BYTES + 2 * (64 * 64 * 4 + PAGE) + 2 * ALIGN
    assert len({colour(i) for i in range(PAGE // ALIGN)}) == PAGE // ALIGN  # every line of a page, in turn
    assert_no_overlap(g)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((64, 64)).astype(np.float32), "s": rng.standard_normal(8).astype(np.float32)}
    same_compiled(parse(text), g, feeds)
