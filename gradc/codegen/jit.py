"""llvmlite: the host target, the O3 pipeline, and one LLJIT per compiled graph.

A graph's module is optimized here (new pass manager, loop and SLP
vectorization), turned into object code by the host target machine, and
linked into a fresh LLJIT. Closing the `NativeLibrary` disposes that JIT,
which frees its code (MCJIT, or one JIT shared by all graphs, would keep
memory until the process exits).

Known cost outside gradc's control: llvmlite 0.50 keeps about 50-170 KB per
run of the O3 pipeline (`LLVMPY_CreatePassBuilder` allocates a
PassInstrumentationCallbacks that is never freed, and every run registers
StandardInstrumentations callbacks into it), whether or not the module,
pass builder and pass manager are closed.
"""
from __future__ import annotations

import functools
import itertools

import llvmlite.binding as llvm

_tm = None
_ids = itertools.count()


def target_machine():
    """The host CPU's target machine (made once: its CPU name and features are the host's)."""
    global _tm
    if _tm is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_triple(llvm.get_process_triple())
        _tm = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
            opt=3, codemodel="jitdefault", jit=True,
        )
    return _tm


@functools.lru_cache(maxsize=None)
def vector_bits() -> int:
    """Width of the host's widest float vector registers."""
    features = set(llvm.get_host_cpu_features().flatten().split(","))
    if "+avx512f" in features:
        return 512
    return 256 if "+avx" in features else 128


def _parse(text: str):
    tm = target_machine()
    mod = llvm.parse_assembly(text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    return mod


def optimize(text: str) -> tuple[str, bytes]:
    """O3 with loop and SLP vectorization; returns the optimized IR text and the object code."""
    tm = target_machine()
    mod = _parse(text)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    # GEMM tiles are unrolled by hand and the other kernels are memory-bound:
    # unrolling and interleaving tripled compile time for no measured speed
    pto.loop_unrolling = False
    pto.loop_interleaving = False
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    try:
        mpm.run(mod, pb)
        optimized = str(mod)
        return optimized, tm.emit_object(mod)
    finally:
        for obj in (mpm, pb, pto, mod):
            obj.close()


def assembly(optimized_text: str) -> str:
    mod = _parse(optimized_text)
    try:
        return target_machine().emit_assembly(mod)
    finally:
        mod.close()


class NativeLibrary:
    """Object code linked into its own LLJIT; `address` is valid until `close()`."""

    def __init__(self, obj: bytes, symbol: str):
        self._jit = llvm.create_lljit_compiler()
        try:
            self._tracker = (
                llvm.JITLibraryBuilder().add_object_img(obj).add_current_process()
                .export_symbol(symbol).link(self._jit, f"gradc{next(_ids)}")
            )
        except Exception:
            self._jit.close()
            raise
        self.address = self._tracker[symbol]

    def close(self) -> None:
        if self._jit is not None:
            self._tracker.close()
            self._jit.close()
            self._jit = self._tracker = None
            self.address = 0
