"""What makes compiling fast, checked for correctness: a graph compiled as one LLVM
module per kernel (in parallel, each kernel's object code cached by its text, so
another model or version reuses it), and pipeline results cached pickled.
Results are compared with the reference interpreter. No timings here."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim
from gradc.codegen import compile_graph, jit
from gradc.codegen.lower import lower_graph
from gradc.ir import interpret
from gradc.passes import manager, run_pipeline


def step_graph(momentum: float, batch: int = 6):
    """The optimized graph of an MLP training step (SGD with `momentum`, baked into the code as
    a constant, unlike the learning rate), and feeds for it."""
    gradc.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 3))
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    for p in model.parameters():  # the steady state: momentum buffers exist
        optimizer.state[p] = {"momentum_buffer": gradc.zeros_like(p)}

    def step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    x, y = gradc.randn(batch, 5), gradc.tensor(np.arange(batch) % 3)
    g = run_pipeline(gradc.trace(step, x, y).ir("autodiff"), cache=False).graph
    rng = np.random.default_rng(2)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype.np) if v.dtype.is_floating_point
             else np.arange(batch) % 3 for v in g.inputs}
    return g, feeds


def assert_like_interpreter(compiled, g, feeds):
    want, got = interpret(g, feeds), compiled.run(feeds)
    assert list(got) == list(want)
    for name, a in want.items():
        np.testing.assert_allclose(got[name], a, rtol=2e-5, atol=2e-6, err_msg=name)


def split_everything(monkeypatch):
    """Every graph compiled one module per kernel, however small (these graphs are)."""
    monkeypatch.setattr(jit, "SPLIT_BYTES", 0)
    monkeypatch.setattr(jit, "KERNEL_BYTES", 0)


@pytest.fixture
def split_cache(tmp_path, monkeypatch):
    """A private cache; every graph compiled one module per kernel; LLVM's runs counted."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    split_everything(monkeypatch)
    runs = []
    real = jit._optimize

    def counted(tm, text, context=None):
        if context is not None:  # a graph's module (the thread pool's own compiles without one)
            runs.append(text)
        return real(tm, text, context)

    monkeypatch.setattr(jit, "_optimize", counted)
    return tmp_path, runs


def module_texts(g) -> set:
    return {m.text for m in jit.split_module(lower_graph(g).text)}


def test_another_model_reuses_the_kernels_it_shares(split_cache):
    tmp_path, runs = split_cache
    first, feeds = step_graph(0.9)
    assert_like_interpreter(compile_graph(first), first, feeds)
    assert len(runs) == len(module_texts(first)) == len(list(tmp_path.glob("*.kobj")))

    # another momentum: the forward and input-gradient kernels are the same code, the updates not
    second, feeds = step_graph(0.5)
    shared = module_texts(first) & module_texts(second)
    assert shared and module_texts(second) - shared
    runs.clear()
    c = compile_graph(second)
    assert not c.from_cache and set(runs) == module_texts(second) - shared
    assert_like_interpreter(c, second, feeds)


def test_kernel_objects_alone_rebuild_a_graph(split_cache):
    tmp_path, runs = split_cache
    g, feeds = step_graph(0.9, batch=1)
    compile_graph(g)
    for bundle in tmp_path.glob("*.obj"):  # the graph's own entry: gone
        bundle.unlink()
    runs.clear()
    c = compile_graph(g)
    assert runs == [] and not c.from_cache
    assert_like_interpreter(c, g, feeds)


def test_a_damaged_kernel_object_is_compiled_again(split_cache):
    tmp_path, runs = split_cache
    g, feeds = step_graph(0.9, batch=7)
    compile_graph(g)
    entries = sorted(tmp_path.glob("*.kobj"))
    blobs = {p: p.read_bytes() for p in entries}
    for damaged in (lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b[: len(b) // 2], lambda b: b"junk"):
        for bundle in tmp_path.glob("*.obj"):
            bundle.unlink()
        entries[1].write_bytes(damaged(blobs[entries[1]]))
        runs.clear()
        c = compile_graph(g)
        assert len(runs) == 1  # that kernel alone
        assert_like_interpreter(c, g, feeds)
        assert {p: p.read_bytes() for p in entries} == blobs  # rewritten whole


def test_kernels_are_named_after_their_code(monkeypatch):
    split_everything(monkeypatch)
    g, _ = step_graph(0.9)
    text = lower_graph(g).text
    modules = jit.split_module(text)
    kernels, entry = modules[:-1], modules[-1]
    # every kernel the entry calls is declared there under the name of its module's code
    for m in kernels:
        symbol = _symbol(m)
        assert f"define void @{symbol}(" in m.text and f"declare void @{symbol}(" in entry.text
        assert f'@"{m.names[symbol]}"' in text  # and stands for a kernel the lowering named
    # the same code under other kernel numbers: the same modules (another entry)
    renamed = jit.split_module(text.replace('@"k', '@"kernel'))
    assert [m.text for m in renamed[:-1]] == [m.text for m in kernels] and renamed[-1].names != entry.names
    # other code in one kernel: another module, under another key; the others stay
    start = text.index(f'define internal void @"{kernels[0].names[_symbol(kernels[0])]}"(')
    at = text.index("\n  ret void", start)
    other = jit.split_module(text[:at] + "\n  fence seq_cst" + text[at:])
    changed = [a.text != b.text for a, b in zip(other, modules)]
    assert changed[0] and not any(changed[1:-1])
    assert jit.cache_key(other[0].text) != jit.cache_key(kernels[0].text)


def _symbol(module) -> str:
    return next(s for s in module.names if s.startswith("gradc.kernel."))


def test_the_optimized_ir_and_assembly_show_the_lowerings_names(split_cache):
    g, feeds = step_graph(0.9)
    c = compile_graph(g)
    shown, asm = c.llvm_ir(optimized=True), c.asm()
    assert "gradc.kernel." not in shown and "gradc.fn." not in shown
    kernels = [m.names[_symbol(m)] for m in jit.split_module(c.llvm_ir())[:-1]]
    assert all(f"define void {jit._token(k)}(" in shown for k in kernels)
    assert f"{c._lowered.entry}:" in asm and all(k in asm for k in kernels)


def test_threads_compile_the_same_objects_as_one(monkeypatch):
    monkeypatch.setenv("GRADC_CACHE", "0")
    g, _ = step_graph(0.9)
    text = lower_graph(g).text
    split_everything(monkeypatch)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("GRADC_COMPILE_THREADS", threads)
        results.append(jit.compile_module(text))
    assert results[0] == results[1]
    assert len(jit.unpack_objects(results[0][1])) == len({m.text for m in jit.split_module(text)})


def test_small_kernels_compile_with_the_entry(split_cache, monkeypatch):
    g, feeds = step_graph(0.9, batch=4)
    text = lower_graph(g).text
    alone = jit.split_module(text)
    sizes = sorted(len(m.text) for m in alone[:-1])
    monkeypatch.setattr(jit, "KERNEL_BYTES", sizes[len(sizes) // 2])
    together = jit.split_module(text)
    assert len(together) < len(alone) and together[-1].text not in {m.text for m in alone}
    assert all(len(m.text) >= jit.KERNEL_BYTES for m in together[:-1])
    assert {m.text for m in together[:-1]} <= {m.text for m in alone}
    assert_like_interpreter(compile_graph(g), g, feeds)
    monkeypatch.setattr(jit, "KERNEL_BYTES", sizes[-1] + 1)
    assert jit.split_module(text) is None  # no kernel worth a module of its own


def test_an_error_in_a_compiling_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setenv("GRADC_COMPILE_THREADS", "2")
    good = "define void @f(ptr %p) {\n  store i32 1, ptr %p\n  ret void\n}\n"
    with pytest.raises(RuntimeError, match="parsing error"):
        jit.optimize_all([good, "define void @g() {\n  ret i32 0\n}\n", good])
    assert len(jit.optimize_all([good, good])) == 2  # and the next compile works


def test_a_damaged_pack_of_objects_is_refused():
    blob = jit.pack_objects([b"\x7fELF one", b"\x7fELF two"])
    assert jit.unpack_objects(blob) == [b"\x7fELF one", b"\x7fELF two"]
    assert jit.unpack_objects(b"\x7fELF plain") == [b"\x7fELF plain"]
    with pytest.raises(ValueError):
        jit.unpack_objects(blob[:-1])


# ---------------------------------------------------------------- pipeline results on disk
def test_pipeline_results_load_pickled_or_as_text(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_CHECK_IR", raising=False)
    from test_passes import step_graph as autodiff_graph

    g, feeds = autodiff_graph("mlp_adam")
    first = run_pipeline(g)
    (entry,) = tmp_path.glob("*.passes")
    again = run_pipeline(g).graph  # unpickled: the same graph, fusion notes included
    assert str(again) == str(first.graph) and again.fusion_notes.keys() == first.graph.fusion_notes.keys()
    assert next(again._counter) == next(first.graph._counter)
    consts = [n.attrs["value"] for n in again.nodes if n.op == "const"]
    assert consts and not any(a.flags.writeable for a in consts)  # shared between graphs: read-only
    assert_same_results(again, g, feeds)

    # a graph whose name counter cannot be pickled as a plain count is stored as text
    entry.unlink()
    odd = first.graph.copy()
    odd._counter = itertools.count(5, 2)
    key = entry.name.removesuffix(".passes")
    manager._store(key, odd)
    text, blob = jit.cache_load(key, ".passes")
    assert blob == b"" and text == str(first.graph)
    assert str(run_pipeline(g).graph) == str(first.graph)


def assert_same_results(a, b, feeds):
    ra, rb = interpret(a, feeds), interpret(b, feeds)
    for v, w in zip(a.outputs, b.outputs):
        np.testing.assert_allclose(ra[v.name], rb[w.name], rtol=1e-5, atol=1e-6)
