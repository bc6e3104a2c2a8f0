"""`gradc opt`: run passes on IR text, like LLVM's `opt`.

    gradc opt step.autodiff.ir --passes=simplify,fold,cse,dce --stats
    gradc opt --passes=default --diff < step.ir
    gradc opt step.traced.ir --passes=autodiff,default --print-after-all

The input is a graph as gradc prints it (a `GRADC_DUMP` file or hand-written
IR); the result goes to stdout (or `-o`). As with `opt`, the dumps asked for
by `--print-after-all`, `--print-after`, `--diff` and `--stats` go to stderr,
so stdout stays the result alone.
"""
from __future__ import annotations

import argparse
import sys

from ..ir import IRParseError, VerifyError, parse, verify
from .manager import DEFAULT_PIPELINE, PASSES, report, run_pipeline

EMITS = ("ir", "dot", "llvm", "asm")


def _parser():
    p = argparse.ArgumentParser(
        prog="gradc opt",
        description="Run graph passes on gradc IR text and print the result.",
        epilog=f"The default pipeline (--passes=default) is {DEFAULT_PIPELINE}. Without --passes no pass runs: "
        "the graph is parsed, verified and printed again.",
    )
    p.add_argument("file", nargs="?", default="-", help="IR text file ('-' or nothing: stdin)")
    p.add_argument("--passes", default="", metavar="LIST",
                   help="comma-separated passes, e.g. 'simplify,fold,cse,dce' or 'simplify<fast-math>'")
    p.add_argument("--print-after-all", action="store_true", help="print the IR after every pass (stderr)")
    p.add_argument("--print-after", action="append", default=[], metavar="PASS",
                   help="print the IR after PASS (repeatable; stderr)")
    p.add_argument("--diff", action="store_true", help="print a unified diff of the IR per pass (stderr)")
    p.add_argument("--stats", action="store_true", help="print per-pass statistics (stderr)")
    p.add_argument("--verify", action="store_true", help="run the verifier after every pass")
    p.add_argument("--emit", choices=EMITS, default="ir", help="what to print: IR text, Graphviz DOT, LLVM IR, assembly")
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="write the result here (default stdout)")
    p.add_argument("--list-passes", action="store_true", help="list the registered passes and exit")
    return p


def _fail(msg: str) -> int:
    print(f"gradc opt: error: {msg}", file=sys.stderr)
    return 1


def _emit(graph, what: str) -> str:
    if what == "ir":
        return str(graph)
    if what == "dot":
        return graph.to_dot()
    try:
        from .. import codegen
    except ImportError as e:
        codegen, why = None, f" ({e})"
    else:
        why = ""
    compile_graph = getattr(codegen, "compile_graph", None)
    if compile_graph is None:
        raise RuntimeError(f"--emit={what} needs the code generator (gradc.codegen.compile_graph), which is not "
                           f"available{why}; use --emit=ir or --emit=dot")
    compiled = compile_graph(graph)
    return compiled.llvm_ir() if what == "llvm" else compiled.asm()


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.list_passes:
        for name in sorted(PASSES):
            doc = (PASSES[name].__doc__ or "").strip().splitlines()
            print(f"{name:12} {doc[0] if doc else ''}")
        return 0
    where = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()
    except OSError as e:
        return _fail(f"cannot read {where}: {e.strerror}")
    try:
        graph = parse(text)
        verify(graph)
    except (IRParseError, VerifyError) as e:
        return _fail(f"{where}: {e}")
    try:
        result = run_pipeline(graph, args.passes, print_after_all=args.print_after_all,
                              print_after=args.print_after, diff=args.diff, verify_each=args.verify,
                              file=sys.stderr)
        out = _emit(result.graph, args.emit)
    except (ValueError, RuntimeError) as e:  # unknown pass or option, verifier error, no codegen
        return _fail(str(e))
    if args.stats:
        report(result.records, file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(out)
    else:
        with open(args.output, "w") as f:
            f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
