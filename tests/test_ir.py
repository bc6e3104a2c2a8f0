"""The IR itself: printer/parser round trip, verifier errors, DOT, interpreter."""
import numpy as np
import pytest

import gradc
from gradc.ir import Graph, IRParseError, VerifyError, interpret, parse, verify
from gradc.ir.builder import GraphBuilder, symbolic_tensor

HAND_WRITTEN = """\
graph affine(
    %w: f32[2,3] param,
    %b: f32[2] param,
    %x: f32[4,3] input,
    %lr: f32[] scalar
) {
  %t: f32[3,2] = transpose %w {perm=(1, 0)}
  %y: f32[4,2] = matmul %x, %t
  %z: f32[4,2] = add %y, %b
  %s: f32[] = sum %z {axes=(0, 1)}
  %k: f32[2] = mul %b, %lr
  %nb: f32[2] = sub %b, %k
  %b <- %nb
  return %s
}
"""


def test_hand_written_ir_parses_verifies_runs_and_round_trips():
    g = parse(HAND_WRITTEN)
    verify(g)
    assert str(parse(str(g))) == str(g)
    w, b, x = np.ones((2, 3), np.float32), np.array([1.0, 2.0], np.float32), np.arange(12, dtype=np.float32).reshape(4, 3)
    r = interpret(g, {"w": w, "b": b, "x": x, "lr": np.float32(0.5)})
    np.testing.assert_allclose(r["s"], (x @ w.T + b).sum())
    np.testing.assert_allclose(r["b"], b - b * 0.5)


def small_graph():
    g = Graph("f")
    x = g.add_input("x", gradc.float32, (3, 4), "input")
    with GraphBuilder(g):
        t = symbolic_tensor(x)
        y = (t[1:, ::2] * 2.5 + gradc.tensor([1.0, -np.inf])).exp() > 0.5
        z = gradc.where(y, 1.0, t[:2, :2]).sum()
    g.outputs = [z._data]
    return g


def test_round_trip_keeps_literals_specs_constants_and_locations():
    g = small_graph()
    text = str(g)
    assert "spec=[1:3, 0:4:2]" in text and "-inf" in text and "test_ir.py:" in text
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("graph f(\n) {\n  %1: f32[2] = add %2, %2\n  return %1\n}\n", "used before it is defined"),
        ("graph f(\n    %x: f32[2] input\n) {\n  %1: f32[2] = frobnicate %x\n  return %1\n}\n", "unknown op"),
        ("graph f(\n    %x: f32[2] banana\n) {\n  return %x\n}\n", "expected an input"),
        ("nonsense", r"expected 'graph NAME\('"),
    ],
)
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(IRParseError, match=message):
        parse(text)


@pytest.mark.parametrize(
    "body, message",
    [
        ("  %1: f32[3] = add %x, %x\n  return %1", "does not match the add rule"),
        ("  %1: f64[2] = add %x, %x\n  return %1", "does not match the add rule"),
        ("  %1: f32[2] = matmul %x, %x\n  return %1", "the matmul rule rejects"),
        ("  %1: f32[2] = neg %x\n  %x <- %1\n  return %1", "only param and state inputs can be updated"),
        ("  %1: f32[] = sum %x {axes=(0,)}\n  %w <- %1\n  return %1", "differs from"),
        ("  %1: f32[2] = neg %w\n  %w <- %1\n  %w <- %1\n  return %1", "updated twice"),
    ],
)
def test_verifier_names_node_and_rule(body, message):
    text = f"graph f(\n    %x: f32[2] input,\n    %w: f32[2] param\n) {{\n{body}\n}}\n"
    with pytest.raises(VerifyError, match=message):
        verify(parse(text))


def test_verifier_catches_ssa_violation_made_in_memory():
    g = parse(HAND_WRITTEN)
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]
    with pytest.raises(VerifyError, match="not defined before its use"):
        verify(g)


def test_dot_has_edges_with_shapes_and_coloured_parts():
    from gradc.passes.autodiff import grad

    g = parse(HAND_WRITTEN)
    g2 = Graph("loss")
    x = g2.add_input("x", gradc.float64, (3,), "input")
    w = g2.add_input("w", gradc.float64, (3,), "param")
    with GraphBuilder(g2):
        s = (symbolic_tensor(x) * symbolic_tensor(w)).sum()
    g2.outputs = [s._data]
    dot = grad(g2, ["w"]).to_dot()
    assert dot.startswith('digraph "loss"') and 'label="f64[3]"' in dot
    assert "#ffd8b0" in dot and "#cfe2ff" in dot  # backward and forward colours
    assert 'style=dashed' in g.to_dot()  # the update edge


def test_interpreter_rejects_missing_and_misshapen_inputs():
    g = parse(HAND_WRITTEN)
    with pytest.raises(KeyError, match="missing input %x"):
        interpret(g, {"w": np.ones((2, 3)), "b": np.ones(2), "lr": 1.0})
    with pytest.raises(ValueError, match="expected shape"):
        interpret(g, {"w": np.ones((2, 3)), "b": np.ones(2), "lr": 1.0, "x": np.ones((3, 3))})


def test_interpreter_matches_eager_on_recorded_graph():
    g = small_graph()
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    t = gradc.tensor(x)
    y = (t[1:, ::2] * 2.5 + gradc.tensor([1.0, -np.inf])).exp() > 0.5
    want = gradc.where(y, 1.0, t[:2, :2]).sum()
    np.testing.assert_array_equal(interpret(g, {"x": x})[g.outputs[0].name], want.numpy())


def test_node_inputs_follow_a_replaced_operand_list():
    g = parse(HAND_WRITTEN)
    add = next(n for n in g.nodes if n.op == "add")
    y, b = add.operands
    assert add.inputs == [y, b]
    add.operands = [y, 2.0]  # a literal is not an input
    assert add.inputs == [y] and add.operands == [y, 2.0]
    add.operands = (b, y)
    assert add.inputs == [b, y] and add.operands == [b, y]


def test_copy_equals_the_parsed_text_and_is_independent():
    import golden_steps
    from gradc.passes import run_pipeline

    step, args = golden_steps.mlp_adam()
    g = run_pipeline(gradc.trace(step, *args).ir("autodiff")).graph  # fused and planned: kernels, offsets
    c = g.copy()
    assert str(c) == str(g) == str(parse(str(g))) and c.kernels.keys() == g.kernels.keys()
    assert not {id(v) for v in c.values()} & {id(v) for v in g.values()}
    c.nodes[0].attrs["marker"] = 1
    c.kernels[next(iter(c.kernels))].stores.append("x")
    c.outputs.clear()
    assert str(g) == str(parse(str(g))) and g.outputs and "marker" not in g.nodes[0].attrs
    assert c.fresh_name() == g.copy().fresh_name() == parse(str(g)).fresh_name()


def test_large_uniform_constants_are_traced_as_a_broadcast_scalar():
    w = gradc.randn(300, 4)

    def f(x):
        return x * gradc.zeros(300, 4) + gradc.ones(300, 4) + gradc.tensor([[1.0, 2.0, 3.0, 4.0]] * 300)

    g = gradc.trace(f, w).graph
    consts = [n for n in g.nodes if n.op == "const"]
    assert sorted(n.attrs["value"].size for n in consts) == [1, 1, 1200]  # the non-uniform one stays whole
    assert [n.attrs["shape"] for n in g.nodes if n.op == "broadcast"] == [(300, 4), (300, 4)]
    np.testing.assert_array_equal(interpret(g, {"x": w.numpy()})[g.outputs[0].name], f(w).numpy())
