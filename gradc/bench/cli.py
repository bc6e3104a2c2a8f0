"""Command line of `gradc bench`."""
from __future__ import annotations

import argparse
import sys

from . import report, runner
from .modes import MODES
from .workloads import WORKLOADS


def _names(valid, what):
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; choose from {','.join(valid)}")
        return names

    return parse


def parser():
    epilog = "workloads:\n" + "".join(f"  {w.name:15} {w.about}\n" for w in WORKLOADS.values())
    epilog += "modes:\n" + "".join(f"  {m.name:15} {m.about}\n" for m in MODES.values())
    p = argparse.ArgumentParser(prog="gradc bench", description="Time training steps of gradc (eager and compiled) side by side\n"
                                "with PyTorch eager, JAX jit and a hand-written NumPy step.",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", type=_names(WORKLOADS, "workload"), default=list(WORKLOADS),
                   help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--modes", type=_names(MODES, "mode"), default=list(MODES),
                   help=f"comma-separated, from {','.join(MODES)} (default: all; missing libraries are reported n/a)")
    p.add_argument("--quick", action="store_true", help="short timing windows: a smoke test, not a measurement")
    p.add_argument("--json", metavar="PATH", help="write all measurements as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    p.add_argument("--plot", metavar="PATH", help="write a bar chart (needs matplotlib; skipped without it)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="threads of each mode: BLAS, OpenMP, PyTorch, XLA (default: 2). On a busy machine "
                   "--threads 1 gives steadier figures")
    p.add_argument("--in-process", action="store_true",
                   help="run every mode in this process (faster start; memory figures then overlap)")
    return p


def main(argv=None) -> int:
    """Run the benchmark; exit status 1 when any mode FAILED its correctness check or raised."""
    args = parser().parse_args(argv)
    payload = runner.run(args.workloads, args.modes, quick=args.quick, isolate=not args.in_process, threads=args.threads,
                         log=lambda msg: print(f"gradc bench: {msg}", file=sys.stderr, flush=True))
    table = report.markdown(payload)
    print(table, end="")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.json:
        report.write_json(payload, args.json)
    if args.plot and not report.plot(payload, args.plot):
        print("gradc bench: matplotlib is not installed; skipped the plot (pip install matplotlib)", file=sys.stderr)
    bad = [r for r in payload["results"] if r["status"] in ("FAILED", "ERROR")]
    return 1 if bad else 0
