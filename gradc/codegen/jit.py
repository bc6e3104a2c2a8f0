"""llvmlite: the host target, the O3 pipeline, one LLJIT per compiled graph,
and the on-disk cache of object code.

A graph's module is optimized here (new pass manager, loop and SLP
vectorization), turned into object code by the host target machine, and
linked into a fresh LLJIT. Closing the `NativeLibrary` disposes that JIT,
which frees its code (MCJIT, or one JIT shared by all graphs, would keep
memory until the process exits).

Memory: llvmlite 0.50's `ModulePassManager.close()` frees nothing (its class
lists `ObjectRef` before `NewPassManager`, so the empty `ObjectRef._dispose`
wins), which leaked the whole O3 pipeline, about 30 KB, per compile; we
dispose it ourselves. What remains is llvmlite's `PassInstrumentationCallbacks`,
allocated per pass builder and never freed: about 1.5 KB per compile.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import os
import struct
import tempfile
import threading

import llvmlite
import llvmlite.binding as llvm
from llvmlite.binding import ffi

_tm = None
_tm_lock = threading.Lock()
_llvm_lock = threading.Lock()  # modules are parsed into LLVM's global context, which is not thread-safe
_ids = itertools.count()

# what, besides the IR text, decides the object code (part of the cache key)
_PIPELINE = "O3 loop-vectorize slp-vectorize no-unroll no-interleave; codemodel=jitdefault"


def target_machine():
    """The host CPU's target machine (made once: its CPU name and features are the host's)."""
    global _tm
    with _tm_lock:
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
    with _llvm_lock:
        return _optimize(tm, text)


def _optimize(tm, text):
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
        ffi.lib.LLVMPY_DisposeNewModulePassManger(mpm)  # see the module docstring
        mpm.detach()
        for obj in (pb, pto, mod):
            obj.close()


def assembly(optimized_text: str) -> str:
    tm = target_machine()
    with _llvm_lock:
        mod = _parse(optimized_text)
        try:
            return tm.emit_assembly(mod)
        finally:
            mod.close()


class NativeLibrary:
    """Object code linked into its own LLJIT; `address` (of `symbol`) and `addresses`
    (of every symbol named) are valid until `close()`."""

    def __init__(self, obj: bytes, symbol: str, *more: str):
        target_machine()  # registers the host target, which object code loaded from the cache needs too
        self._jit = llvm.create_lljit_compiler()
        try:
            builder = llvm.JITLibraryBuilder().add_object_img(obj).add_current_process()
            for name in (symbol, *more):
                builder.export_symbol(name)
            self._tracker = builder.link(self._jit, f"gradc{next(_ids)}")
        except Exception:
            self._jit.close()
            raise
        self.addresses = {name: self._tracker[name] for name in (symbol, *more)}
        self.address = self.addresses[symbol]

    def close(self) -> None:
        if self._jit is not None:
            self._tracker.close()
            self._jit.close()
            self._jit = self._tracker = None
            self.address, self.addresses = 0, {}


# ----------------------------------------------------------------------------- on-disk cache
# One file per module: MAGIC, the lengths of the optimized IR and the object
# code, a SHA-256 of both, then both. Files are written to a temporary name and
# renamed, so a reader sees a whole file or none; a file that fails any check
# (truncated, corrupt, another format) is ignored and rewritten.
_MAGIC = b"gradc-object-1\n"
_HEADER = struct.Struct("<QQ32s")


def cache_dir() -> str | None:
    """`GRADC_CACHE_DIR` (default ~/.cache/gradc), or None when `GRADC_CACHE=0` turns the cache off."""
    if os.environ.get("GRADC_CACHE", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    return os.environ.get("GRADC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "gradc")


@functools.lru_cache(maxsize=None)
def _host() -> bytes:
    return "\n".join([
        f"llvmlite {llvmlite.__version__}", f"llvm {llvm.llvm_version_info}", llvm.get_process_triple(),
        llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), _PIPELINE,
    ]).encode()


def cache_key(text: str) -> str:
    """Names the object code of LLVM IR `text` on this host: the text, llvmlite and LLVM
    versions, the CPU's name and features, and the pipeline options."""
    return hashlib.sha256(_host() + b"\0" + text.encode()).hexdigest()


def _path(key: str, suffix: str) -> str | None:
    d = cache_dir()
    return None if d is None else os.path.join(d, key + suffix)


def cache_load(key: str, suffix: str = ".obj") -> tuple[str, bytes] | None:
    """(optimized IR, object code) stored under `key`, or None if absent or damaged
    (files of another `suffix` hold another pair of text and bytes: see codegen/__init__.py)."""
    path = _path(key, suffix)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    start = len(_MAGIC) + _HEADER.size
    if len(blob) < start or not blob.startswith(_MAGIC):
        return None
    n_ir, n_obj, digest = _HEADER.unpack_from(blob, len(_MAGIC))
    payload = blob[start:]
    if len(payload) != n_ir + n_obj or hashlib.sha256(payload).digest() != digest:
        return None
    try:
        return payload[:n_ir].decode(), payload[n_ir:]
    except UnicodeDecodeError:
        return None


def cache_store(key: str, optimized_ir: str, obj: bytes, suffix: str = ".obj") -> None:
    """Write atomically (a temporary file renamed into place); a cache that cannot be written is skipped."""
    path = _path(key, suffix)
    if path is None:
        return
    ir = optimized_ir.encode()
    payload = ir + obj
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + _HEADER.pack(len(ir), len(obj), hashlib.sha256(payload).digest()) + payload)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
