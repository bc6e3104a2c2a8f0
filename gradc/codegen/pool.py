"""The process's worker threads for GEMMs split over cores.

One pool per process, started the first time a module that uses it is
lowered, never per compiled model: its helpers live as long as the process.
An idle helper polls for the next job with `pause` for HOT_CYCLES (so the
GEMMs of one step, a few microseconds apart, find it at once), then yields
its core on every poll for up to SPIN_CYCLES, then sleeps on a futex. The
long spin is what makes the pool pay on a VM: waking a sleeping helper costs
the caller a futex syscall of about 10 us (an IPI to an idle vCPU), and the
woken helper often lands on the caller's own CPU, where it cannot help; a
training loop's helper never sleeps. Native code runs a job with
`gradc_pool_run(fn, args)`: the caller and every helper that wakes in time
call `fn(args)`, and `fn` claims its parts of the work from a counter in
`args`, so a helper that is slow to wake (or a pool with none) only leaves
more parts to the caller. The caller never waits for a helper that has not
joined the job, so the pool cannot hang a step: not on a busy machine, not
in a forked child (whose pool is restarted), not when two compiled steps
run in two Python threads (the second caller finds the pool taken and does
its job alone).

On a machine busy with other processes a helper may be preempted while it
holds a part, and the caller waits for it. So a caller that waited longer
than half its own share, or whose last MISSES jobs no awake helper joined,
runs the next BACKOFF_JOBS jobs alone, twice as many after each backoff
that no joined job preceded (up to MAX_BACKOFF_JOBS: a helper that cannot
get a core then sleeps instead of taking turns with the caller), and
helpers spinning for a job yield their core to anything else runnable.

Generated modules reach the pool through the constants blob: its first
word holds `gradc_pool_run`'s address (written at lowering, so cached object
code stays valid in another process), which the entry copies into the
module's `@gradc.pool` global before the first kernel runs.
"""
from __future__ import annotations

import ctypes
import functools
import os
import struct
import sys
import threading

from . import jit

GLOBAL = "@gradc.pool"  # the module global a kernel loads the pool's entry from
DEFINE = f"{GLOBAL} = internal global ptr null"
SLOT = 0  # byte offset of the pool's address in the constants blob
HOT_CYCLES = 100_000  # about 40 us after a job a helper polls for the next with `pause` alone
SPIN_CYCLES = 12_000_000  # then about 5 ms with a yield per poll, then it sleeps (see the module docstring)
SLOW_CYCLES = 100_000  # a caller waiting this long for a helper (about 40 us) yields its core to it
MIN_SLOW_CYCLES = 25_000  # waits shorter than this (10 us) never count as slow
BACKOFF_JOBS = 64  # jobs run alone after a slow one, or after MISSES in a row that no helper joined
MAX_BACKOFF_JOBS = 4096  # doubled (up to this) while no helper joins a job in between
MISSES = 8

_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 128, 129  # x86-64 Linux, private futexes

_TEXT = f"""
@lock = internal global i32 0       ; 1 while a caller shares its job
@gen = internal global i32 0        ; bumped per shared job; the helpers' futex word
@sleepers = internal global i32 0   ; helpers in (or entering) futex_wait
@active = internal global i64 0     ; bit 0: the job is open; +2 per helper in it
@job.fn = internal global ptr null
@job.args = internal global ptr null
@alone = internal global i32 0      ; jobs the callers run alone before sharing again
@span = internal global i32 {BACKOFF_JOBS}   ; how many the next backoff runs alone
@joins = internal global i64 0      ; jobs helpers have run, in all
@misses = internal global i32 0     ; shared jobs in a row that no helper joined

declare i64 @syscall(i64, ...)
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_detach(i64)
declare void @llvm.x86.sse2.pause()
declare i64 @llvm.readcyclecounter()
declare i32 @sched_yield()

define void @gradc_pool_run(ptr %fn, ptr %args) nounwind {{
entry:
  %got = cmpxchg ptr @lock, i32 0, i32 1 acquire monotonic
  %ok = extractvalue {{ i32, i1 }} %got, 1
  br i1 %ok, label %locked, label %alone
alone:
  call void %fn(ptr %args)
  ret void
locked:
  %skip = load i32, ptr @alone
  %backoff = icmp ne i32 %skip, 0
  br i1 %backoff, label %unshared, label %share
unshared:
  %skip1 = sub i32 %skip, 1
  store i32 %skip1, ptr @alone
  store atomic i32 0, ptr @lock release, align 4
  call void %fn(ptr %args)
  ret void
share:
  store ptr %fn, ptr @job.fn
  store ptr %args, ptr @job.args
  %j0 = load atomic i64, ptr @joins monotonic, align 8
  %o = atomicrmw or ptr @active, i64 1 release
  %g = atomicrmw add ptr @gen, i32 1 seq_cst
  %s = load atomic i32, ptr @sleepers seq_cst, align 4
  %wake = icmp ne i32 %s, 0
  br i1 %wake, label %wakeup, label %work
wakeup:
  %w = call i64 (i64, ...) @syscall(i64 {_SYS_FUTEX}, ptr @gen, i64 {_FUTEX_WAKE}, i64 2147483647)
  br label %work
work:
  %tw = call i64 @llvm.readcyclecounter()
  call void %fn(ptr %args)
  %c = atomicrmw and ptr @active, i64 -2 acq_rel
  %t0 = call i64 @llvm.readcyclecounter()
  br label %drain
drain:
  %a = load atomic i64, ptr @active acquire, align 8
  %idle = icmp eq i64 %a, 0
  br i1 %idle, label %done, label %pause
pause:
  call void @llvm.x86.sse2.pause()
  %t = call i64 @llvm.readcyclecounter()
  %dt = sub i64 %t, %t0
  %long = icmp ugt i64 %dt, {SLOW_CYCLES}
  br i1 %long, label %yield, label %drain
yield:                              ; a helper holding a part was preempted: let it run
  %y = call i32 @sched_yield()
  br label %drain
done:                               ; the next jobs run alone if waiting for the helpers took longer
  %t1 = call i64 @llvm.readcyclecounter()   ; than half the caller's own share (they were preempted:
  %waited = sub i64 %t1, %t0                ; the machine is busy), or no helper joined MISSES jobs in a row
  %worked = sub i64 %t0, %tw
  %waited2 = shl i64 %waited, 1
  %slow = icmp ugt i64 %waited2, %worked
  %real = icmp ugt i64 %waited, {MIN_SLOW_CYCLES}
  %late = and i1 %slow, %real
  %j1 = load atomic i64, ptr @joins monotonic, align 8
  %joined = icmp ne i64 %j1, %j0
  %m = load i32, ptr @misses
  %m.inc = add i32 %m, 1
  %asleep = icmp ne i32 %s, 0               ; (a helper woken for this job is not expected to join it)
  %m1 = select i1 %asleep, i32 %m, i32 %m.inc
  %m2 = select i1 %joined, i32 0, i32 %m1
  %none = icmp uge i32 %m2, {MISSES}
  %off = or i1 %none, %late
  %m3 = select i1 %off, i32 0, i32 %m2
  store i32 %m3, ptr @misses
  br i1 %joined, label %reset, label %settle
reset:
  store i32 {BACKOFF_JOBS}, ptr @span
  br label %settle
settle:
  br i1 %off, label %rest, label %unlock
rest:                                       ; alone for `span` jobs, twice as many the next time
  %span = load i32, ptr @span               ; unless a helper joins in between
  store i32 %span, ptr @alone
  %span2 = shl i32 %span, 1
  %big = icmp ugt i32 %span2, {MAX_BACKOFF_JOBS}
  %span3 = select i1 %big, i32 {MAX_BACKOFF_JOBS}, i32 %span2
  store i32 %span3, ptr @span
  br label %unlock
unlock:
  store atomic i32 0, ptr @lock release, align 4
  ret void
}}

define internal ptr @helper(ptr %unused) nounwind {{
entry:
  %g0 = load atomic i32, ptr @gen acquire, align 4
  br label %idle
idle:
  %seen = phi i32 [ %g0, %entry ], [ %g, %leave ], [ %seen, %slept ]
  %t0 = call i64 @llvm.readcyclecounter()
  br label %spin
spin:
  %g = load atomic i32, ptr @gen acquire, align 4
  %new = icmp ne i32 %g, %seen
  br i1 %new, label %join, label %still
still:
  call void @llvm.x86.sse2.pause()
  %t = call i64 @llvm.readcyclecounter()
  %dt = sub i64 %t, %t0
  %hot = icmp ult i64 %dt, {HOT_CYCLES}
  br i1 %hot, label %spin, label %cool
cool:                               ; spin politely: a busy machine's other threads run first
  %y = call i32 @sched_yield()
  %long = icmp ugt i64 %dt, {SPIN_CYCLES}
  br i1 %long, label %sleep, label %spin
sleep:
  %s = atomicrmw add ptr @sleepers, i32 1 seq_cst
  %g2 = load atomic i32, ptr @gen seq_cst, align 4
  %same = icmp eq i32 %g2, %seen
  br i1 %same, label %wait, label %slept
wait:
  %seen64 = zext i32 %seen to i64
  %w = call i64 (i64, ...) @syscall(i64 {_SYS_FUTEX}, ptr @gen, i64 {_FUTEX_WAIT}, i64 %seen64, ptr null)
  br label %slept
slept:
  %s2 = atomicrmw sub ptr @sleepers, i32 1 seq_cst
  br label %idle
join:
  %old = atomicrmw add ptr @active, i64 2 acquire
  %bit = and i64 %old, 1
  %open = icmp ne i64 %bit, 0
  br i1 %open, label %run, label %leave
run:
  %fn = load ptr, ptr @job.fn
  %args = load ptr, ptr @job.args
  %n = atomicrmw add ptr @joins, i64 1 monotonic
  call void %fn(ptr %args)
  br label %leave
leave:
  %l = atomicrmw sub ptr @active, i64 2 release
  br label %idle
}}

define i32 @gradc_pool_start(i32 %n) nounwind {{
entry:
  store atomic i32 0, ptr @lock monotonic, align 4
  store atomic i32 0, ptr @sleepers monotonic, align 4
  store atomic i64 0, ptr @active monotonic, align 8
  %id = alloca i64
  br label %head
head:
  %i = phi i32 [ 0, %entry ], [ %next, %body ]
  %more = icmp slt i32 %i, %n
  br i1 %more, label %make, label %done
make:
  %rc = call i32 @pthread_create(ptr %id, ptr null, ptr @helper, ptr null)
  %failed = icmp ne i32 %rc, 0
  br i1 %failed, label %done, label %body
body:
  %tid = load i64, ptr %id
  %d = call i32 @pthread_detach(i64 %tid)
  %next = add i32 %i, 1
  br label %head
done:
  %made = phi i32 [ %i, %head ], [ %i, %make ]
  ret i32 %made
}}
"""


MAX_THREADS = 8  # buffers sized per thread (a GEMM's scratch) are sized for this many, so a plan
#                 made under one thread count (the passes' disk cache) is valid under any


@functools.lru_cache(maxsize=None)
def threads() -> int:
    """Threads a large GEMM is split over: GRADC_NUM_THREADS, else the CPUs this process may run
    on, at most MAX_THREADS. One (no pool) outside x86-64 Linux, where its futex calls are not.
    """
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return 1
    env = os.environ.get("GRADC_NUM_THREADS", "").strip()
    return max(1, min(int(env) if env else len(os.sched_getaffinity(0)), MAX_THREADS))


class _Pool:
    """The pool's native code in its own JIT, kept for the life of the process."""

    def __init__(self):
        _, obj = jit.cached_optimize(_TEXT)
        self._lib = jit.NativeLibrary(obj, "gradc_pool_run", "gradc_pool_start")
        self.run = self._lib.address
        self._start = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(self._lib.addresses["gradc_pool_start"])
        self.helpers = self._start(threads() - 1)

    def restart(self) -> None:
        """In a forked child: the parent's helpers are gone, and so may be a caller that held the pool."""
        self.helpers = self._start(threads() - 1)


_pool = None
_pool_lock = threading.Lock()


def pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool()
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_pool.restart)
    return _pool


def address() -> int:
    """The address of `gradc_pool_run` in this process (starting the pool)."""
    return pool().run


def uses_pool(decls) -> bool:
    """Whether a module runs work on the pool: `decls` is its set of declarations, or its text."""
    return DEFINE in decls


def entry_lines(fb, consts: str) -> list:
    """Lines for a module's entry (named by `fb`): copy the pool's address from the
    constants blob at `consts` into `@gradc.pool`."""
    p = fb.fresh("pool")
    return [f"  {p} = load ptr, ptr {consts}, align 8", f"  store ptr {p}, ptr {GLOBAL}, align 8"]


def write_address(blob) -> None:
    """Put the pool's address into a constants blob (a uint8 array of at least 8 bytes)."""
    blob[SLOT:SLOT + 8] = list(struct.pack("<Q", address()))


def call(fb, worker: str, args: str) -> None:
    """Emit: run `worker(args)` on the caller and the pool's helpers (see the module docstring)."""
    fb.decls.add(DEFINE)
    fn = fb.op(f"load ptr, ptr {GLOBAL}, align 8", "poolrun")
    fb.emit(f"call void {fn}(ptr {worker}, ptr {args})")
