"""llvmlite: the host target, the O3 pipeline, one LLJIT per compiled graph,
and the on-disk cache of object code.

A graph's module is optimized here (new pass manager, loop and SLP
vectorization), turned into object code by the host target machine, and
linked into a fresh LLJIT. Closing the `NativeLibrary` disposes that JIT,
which frees its code (MCJIT, or one JIT shared by all graphs, would keep
memory until the process exits). A large module is compiled as one module
per kernel, on one thread per core, each kernel's object code cached by its
own text (`compile_module`): LLVM's optimizer and code generator are 60-85%
of a training step's compile time.

Memory: llvmlite 0.50's `ModulePassManager.close()` frees nothing (its class
lists `ObjectRef` before `NewPassManager`, so the empty `ObjectRef._dispose`
wins), which leaked the whole O3 pipeline, about 30 KB, per compile; we
dispose it ourselves. What remains is llvmlite's `PassInstrumentationCallbacks`,
allocated per pass builder and never freed: about 1.5 KB per module compiled.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import struct
import tempfile
import threading
from typing import NamedTuple

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
            _tm = _new_target_machine()
    return _tm


def _new_target_machine():
    """Another target machine for the host (one per thread that compiles at the same time)."""
    name, features = _cpu()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=name, features=features, opt=3, codemodel="jitdefault", jit=True)


@functools.lru_cache(maxsize=None)
def _cpu() -> tuple[str, str]:
    """The host CPU's name and features (LLVM takes about half a millisecond to list them)."""
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@functools.lru_cache(maxsize=None)
def vector_bits() -> int:
    """Width of the host's widest float vector registers."""
    features = set(_cpu()[1].split(","))
    if "+avx512f" in features:
        return 512
    return 256 if "+avx" in features else 128


def _parse(text: str, tm=None, context=None):
    tm = tm or target_machine()
    mod = llvm.parse_assembly(text, context)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    return mod


def optimize(text: str) -> tuple[str, bytes]:
    """O3 with loop and SLP vectorization; returns the optimized IR text and the object code."""
    tm = target_machine()
    with _llvm_lock:
        return _optimize(tm, text)


def _optimize(tm, text, context=None):
    mod = _parse(text, tm, context)
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
    """The assembly of optimized IR: one module's, or of the modules `compile_module` made, in turn."""
    tm = target_machine()
    out = []
    with _llvm_lock:
        for text in re.split(r"(?m)^(?=; ModuleID = )", optimized_text):
            if not text.strip():
                continue
            mod = _parse(text)
            try:
                out.append(tm.emit_assembly(mod))
            finally:
                mod.close()
    return "".join(out)


class NativeLibrary:
    """Object code (one object file, or several packed by `pack_objects`) linked into its
    own LLJIT; `address` (of `symbol`) and `addresses` (of every symbol named) are valid
    until `close()`."""

    def __init__(self, obj: bytes, symbol: str, *more: str):
        target_machine()  # registers the host target, which object code loaded from the cache needs too
        self._jit = llvm.create_lljit_compiler()
        try:
            builder = llvm.JITLibraryBuilder()
            for o in unpack_objects(obj):
                builder.add_object_img(o)
            builder.add_current_process()
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
        *_cpu(), _PIPELINE,
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


def cached_optimize(text: str) -> tuple[str, bytes]:
    """`optimize(text)`, from the disk cache when it was compiled before (and stored there if not)."""
    key = cache_key(text)
    cached = cache_load(key)
    if cached is None:
        cached = optimize(text)
        cache_store(key, *cached)
    return cached


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


# ----------------------------------------------------------------------------- one module per kernel
# A graph's module is compiled as one module per kernel plus one for the entry
# functions, so that the kernels compile in parallel (one thread per core, each
# in an LLVM context of its own) and each kernel's object code is cached by its
# own text: another version of a step (another optimizer setting, say) or
# another model with a kernel of the same ops and shapes reuses it. A kernel's functions are
# named after its code (the kernel number and value names the lowering gives
# them would keep equal kernels apart); the optimized IR shown to users gets
# the lowering's names back. The objects of a graph are linked into one JIT.
# A small module compiles whole, and a small kernel with the entry functions:
# they gain little, and every module costs about 1.5 ms of LLVM's time, 70 us
# to link, and llvmlite's ~1.5 KB of PassInstrumentationCallbacks.
SPLIT_BYTES = 64 << 10
KERNEL_BYTES = 4 << 10
MAX_COMPILE_THREADS = 8
_NAME = re.compile(r'@(?:"[^"]*"|[-\w$.]+)')
_PLAIN = re.compile(r"[-a-zA-Z$._][-\w$.]*")
_GLOBAL = re.compile(r"@\S+ = (internal )?global (\w+) ")
_KERNEL = "gradc.kernel"  # a kernel's function, renamed `gradc.kernel.<hash of its module>`
_PACK = b"gradc-objects-1\n"


def _raw(token: str) -> str:
    """`@"a+b"` or `@ab` -> the name itself."""
    return token[2:-1] if token.startswith('@"') else token[1:]


def _token(name: str) -> str:
    """A name as LLVM prints it (quoted only where it must be)."""
    return "@" + name if _PLAIN.fullmatch(name) else f'@"{name}"'


def _refs(text: str) -> list:
    return [_raw(t) for t in _NAME.findall(text)]


def _rename(text: str, names: dict) -> str:
    """`text` with the global names in `names` (old -> new) replaced."""
    return _NAME.sub(lambda m: _token(names[n]) if (n := _raw(m.group(0))) in names else m.group(0), text)


class _Function(NamedTuple):
    text: str
    internal: bool
    inline: bool  # alwaysinline: copied into every module that calls it


class _Module(NamedTuple):
    text: str
    names: dict  # the module's renamed functions: new name -> the lowering's


def _items(text: str):
    """The top-level items of a module the lowering wrote: (functions, declarations, globals,
    other lines), each by name; None if it holds anything else (then it is compiled whole)."""
    functions, declares, globs, other = {}, {}, {}, []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("define "):
            if "}" not in lines[i:]:
                return None
            end = lines.index("}", i)
            head = line.split("(", 1)[0].split()
            functions[_refs(line)[0]] = _Function("\n".join(lines[i:end + 1]), "internal" in head,
                                                  "alwaysinline" in line.rsplit(")", 1)[-1])
            i = end
        elif line.startswith("declare "):
            declares[_refs(line)[0]] = line
        elif line.startswith("@"):
            if not _GLOBAL.match(line):
                return None
            globs[_refs(line)[0]] = line
        elif line.startswith(("!", "attributes ")):
            other.append(line)
        elif line.strip() and not line.startswith(";"):
            return None
        i += 1
    return functions, declares, globs, other


def _closure(roots, functions, follow) -> list:
    """`roots` and the functions they reach through functions `follow` accepts, in the module's order."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [r for r in _refs(functions[name].text) if r in functions and follow(r)]
    return [n for n in functions if n in seen]


def _signature(head: str) -> str:
    """`define internal void @f(ptr %a) noinline {` -> `declare void @f(ptr %a)`."""
    start = head.index("(", head.index("@"))
    depth = 0
    for j in range(start, len(head)):
        depth += {"(": 1, ")": -1}.get(head[j], 0)
        if depth == 0:
            break
    words = [w for w in head[:start].split() if w not in ("define", "internal")]
    return "declare " + " ".join(words) + head[start:j + 1]


def split_module(text: str) -> list | None:
    """The module text the lowering wrote as modules to compile apart: one per kernel (the
    internal functions the entry functions call, with the functions they call), then the
    entry functions' own, with the kernels smaller than KERNEL_BYTES; None where there is
    nothing to split."""
    items = _items(text)
    if items is None:
        return None
    functions, declares, globs, other = items
    public = [n for n, f in functions.items() if not f.internal]
    kernels = list(dict.fromkeys(r for n in public for r in _refs(functions[n].text)
                                 if r in functions and functions[r].internal and not functions[r].inline))
    if not kernels:
        return None
    modules, symbols, shared = [], {}, set()
    for k in kernels:
        made = _kernel_module(k, functions, declares, globs, other)
        if made is None:
            return None
        mod, symbol, used = made
        if len(mod.text) >= KERNEL_BYTES:
            modules.append(mod)
            symbols[k] = symbol
            shared |= used
    if not symbols:
        return None
    body = [_rename(functions[n].text, symbols)
            for n in _closure(public, functions, lambda r: functions[r].internal and r not in symbols)]
    heads = [_signature(_rename(functions[k].text.split("\n", 1)[0], symbols)) for k in symbols]
    entry_globs = [line.replace(" = internal global ", " = global ", 1) if n in shared else line
                   for n, line in globs.items()]
    entry = _assemble(body, dict.fromkeys(heads), declares, entry_globs, other)
    modules.append(_Module(entry, {s: k for k, s in reversed(symbols.items())}))
    return modules


def _kernel_module(root, functions, declares, globs, other):
    """(the module of kernel `root`, the name of its function there, the globals it uses), or
    None if the kernel calls an entry function."""
    names = _closure([root], functions, lambda r: functions[r].internal)
    placeholder = {n: f"gradc.fn.{i}" for i, n in enumerate(names)}
    placeholder[root] = _KERNEL
    body = [_rename(functions[n].text, placeholder).replace("define internal ", "define ", 1) if n == root
            else _rename(functions[n].text, placeholder) for n in names]
    refs = {r for b in body for r in _refs(b)}
    if refs & functions.keys():
        return None
    used = [n for n in globs if n in refs]
    text = _assemble(body, {}, declares, [f"{_token(n)} = external global {_GLOBAL.match(globs[n]).group(2)}"
                                          for n in used], other)
    symbol = f"{_KERNEL}.{hashlib.sha256(text.encode()).hexdigest()[:20]}"
    back = {v: k for k, v in placeholder.items() if k != root}
    return _Module(_rename(text, {_KERNEL: symbol}), {symbol: root, **back}), symbol, set(used)


def _assemble(body, heads, declares, globs, other) -> str:
    """A module's text: the declarations its functions need, its globals, the functions, the rest."""
    refs = {r for b in body for r in _refs(b)}
    decls = [line for n, line in declares.items() if n in refs]
    return "\n\n".join([*decls, *heads, *globs, *body, *other]) + "\n"


def pack_objects(objects: list) -> bytes:
    """Several object files as one blob (what `NativeLibrary` and the disk cache take)."""
    return _PACK + struct.pack(f"<Q{len(objects)}Q", len(objects), *map(len, objects)) + b"".join(objects)


def unpack_objects(blob: bytes) -> list:
    """The object files in `blob`: one (a plain object file) or those `pack_objects` packed."""
    if not blob.startswith(_PACK):
        return [blob]
    start = len(_PACK)
    (n,) = struct.unpack_from("<Q", blob, start)
    sizes = struct.unpack_from(f"<{n}Q", blob, start + 8)
    out, at = [], start + 8 + 8 * n
    for size in sizes:
        out.append(blob[at:at + size])
        at += size
    if at != len(blob):
        raise ValueError("a damaged pack of object files")
    return out


def compile_module(text: str) -> tuple[str, bytes]:
    """`optimize` for a module the lowering wrote, one module per kernel (see `split_module`):
    each module's object code from the disk cache (`.kobj` files) or compiled, in parallel;
    returns the optimized IR of every module, with the lowering's names, and their objects packed."""
    modules = split_module(text) if len(text) >= SPLIT_BYTES else None
    if modules is None:
        return optimize(text)
    texts = list(dict.fromkeys(m.text for m in modules))
    keys = [cache_key(t) for t in texts]
    done = {t: cache_load(k, ".kobj") for t, k in zip(texts, keys)}
    todo = [i for i, t in enumerate(texts) if done[t] is None]
    for i, result in zip(todo, optimize_all([texts[i] for i in todo], [keys[i] for i in todo])):
        done[texts[i]] = result
    shown = {}
    for m in modules:
        shown.setdefault(m.text, _rename(done[m.text][0], m.names))
    return "".join(shown.values()), pack_objects([done[t][1] for t in texts])


def compile_threads() -> int:
    """Threads that compile a graph's modules: `GRADC_COMPILE_THREADS`, or one per core this
    process may use, at most MAX_COMPILE_THREADS."""
    env = os.environ.get("GRADC_COMPILE_THREADS", "").strip()
    if env:
        return max(1, int(env))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_COMPILE_THREADS)


def optimize_all(texts: list, keys: list | None = None) -> list:
    """`optimize` of every module text, on up to `compile_threads()` threads, each with its own
    LLVM context and target machine (largest modules first, so that the threads finish together);
    each result is stored in the disk cache under its key in `keys`, if given, as a `.kobj`."""
    if not texts:
        return []
    bypass = _lock_bypass()
    n = min(len(texts), compile_threads()) if bypass else 1
    order = iter(sorted(range(len(texts)), key=lambda i: -len(texts[i])))
    results, errors, claim = [None] * len(texts), [], threading.Lock()

    def work(tm, context):
        while not errors:
            with claim:
                i = next(order, None)
            if i is None:
                return
            try:
                results[i] = _optimize(tm, texts[i], context)
            except BaseException as e:  # noqa: BLE001 - raised again by the caller
                errors.append(e)
            else:
                if keys is not None:
                    cache_store(keys[i], *results[i], ".kobj")

    target_machine()
    tools = []  # a target machine and a context per thread
    with _llvm_lock:
        try:
            for _ in range(n):
                tools.append((_new_target_machine(), llvm.create_context()))
            if n == 1:
                work(*tools[0])
            else:
                _run_threads([functools.partial(bypass.run, work, *t) for t in tools], errors)
        finally:
            for tm, context in tools:
                tm.close()
                context.close()
    if errors:
        raise errors[0]
    return results


def _run_threads(jobs: list, errors: list) -> None:
    """Run each job on a thread of its own until all are done (an interrupt of the caller is
    put into `errors`, which ends the jobs after their current module: their contexts must
    outlive them)."""
    threads = [threading.Thread(target=job) for job in jobs]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException as e:
        errors.append(e)
        for t in threads:
            t.join()
        raise


class _LockBypass:
    """Stands in for the lock inside llvmlite's global LLVM lock, which serializes every call
    into LLVM (for LLVM's global context, which is not thread-safe). A thread that `run`s
    here works only on its own context and target machine, so it skips that lock, and the
    threads compile in parallel (ctypes releases the GIL during each call)."""

    def __init__(self, lock):
        self._lock, self._threads = lock, set()

    def acquire(self, *args):
        return threading.get_ident() in self._threads or self._lock.acquire(*args)

    def release(self):
        if threading.get_ident() not in self._threads:
            self._lock.release()

    def run(self, fn, *args):
        self._threads.add(threading.get_ident())
        try:
            fn(*args)
        finally:
            self._threads.discard(threading.get_ident())


def _lock_bypass() -> _LockBypass | None:
    """The bypass, installed in llvmlite's lock once; None (compile on one thread) if this
    llvmlite's lock is not made the way 0.50's is."""
    outer = getattr(ffi.lib, "_lock", None)
    inner = getattr(outer, "_lock", None)
    with _tm_lock:
        if not isinstance(inner, _LockBypass):
            if not (hasattr(inner, "acquire") and hasattr(inner, "release")):
                return None
            outer._lock = inner = _LockBypass(inner)
    return inner
